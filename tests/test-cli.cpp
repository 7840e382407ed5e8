// The gloas command line: what goes to stdout and stderr, exit codes, and one
// clear error for each kind of bad input.
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

using gloas::test::read_file;
using gloas::test::require_model;
using gloas::test::run_tool;
using gloas::test::temp_dir;
using gloas::test::write_file;

namespace {

std::string golden(const std::string & name) { return read_file(require_model("golden/" + name)); }

// One line on stderr that starts "gloas: error:" and mentions every word in `what`.
void check_one_error(const gloas::test::run_result & r, const std::vector<std::string> & what) {
    CHECK(r.status == 1);
    CHECK(r.out.empty());
    INFO("stderr: " << r.err);
    CHECK(r.err.rfind("gloas: error: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    for (const auto & w : what) CHECK(r.err.find(w) != std::string::npos);
}

} // namespace

TEST_CASE("stdout carries the prompt and the generated text and nothing else") {
    // llama2.c -n 128 counts positions: 5 prompt positions + 124 sampled tokens - 1.
    auto r = run_tool("gloas", {"-m", require_model("stories260K.bin"), "--temp", "0", "-p", "Once upon a time", "-n", "124"});
    REQUIRE(r.status == 0);
    CHECK(r.out == golden("stories260K_greedy_n128_once_upon_a_time.txt") + "\n");
    CHECK(r.err.find("prefill") != std::string::npos);
    CHECK(r.err.find("time to first token") != std::string::npos);
    CHECK(r.err.find("decode") != std::string::npos);
    CHECK(r.err.find("p95") != std::string::npos);

    auto g = run_tool("gloas", {"-m", require_model("stories260K_f32.gguf"), "--temp", "0", "-p", "Once upon a time", "-n", "124", "-t", "1"});
    REQUIRE(g.status == 0);
    CHECK(g.out == r.out);
}

TEST_CASE("the default model is stories260K") {
    auto r = run_tool("gloas", {"--temp", "0", "-n", "200"});
    REQUIRE(r.status == 0);
    CHECK(r.out == golden("stories260K_greedy_n200_noprompt.txt") + "\n");
}

TEST_CASE("sampling with a seed is reproducible") {
    const std::vector<std::string> args = {"-m", require_model("stories260K.bin"), "-p", "Once upon a time", "-n", "60",
                                           "--temp", "0.9", "--top-k", "40", "--top-p", "0.9", "--seed", "42"};
    auto a = run_tool("gloas", args);
    auto b = run_tool("gloas", args);
    REQUIRE(a.status == 0);
    CHECK(a.out == b.out);
    CHECK(a.out.rfind("Once upon a time", 0) == 0);
    CHECK(a.err.find("seed 42") != std::string::npos);
}

TEST_CASE("--tokenize prints the prompt's ids, also from a vocabulary-only GGUF") {
    auto r = run_tool("gloas", {"--tokenize", "-m", require_model("vocab/ggml-vocab-llama-spm.gguf"), "-p", "Hello world"});
    REQUIRE(r.status == 0);
    CHECK(r.out == "1 15043 3186\n");
    auto s = run_tool("gloas", {"--tokenize", "-m", require_model("stories260K.bin"), "-p", "Once upon a time"});
    REQUIRE(s.status == 0);
    auto g = run_tool("gloas", {"--tokenize", "-m", require_model("stories260K_f32.gguf"), "-p", "Once upon a time"});
    CHECK(s.out == g.out);
}

TEST_CASE("usage errors exit 2, --help exits 0") {
    auto h = run_tool("gloas", {"--help"});
    CHECK(h.status == 0);
    CHECK(h.out.find("--tokenize") != std::string::npos);
    auto u = run_tool("gloas", {"--no-such-flag"});
    CHECK(u.status == 2);
    CHECK(u.err.find("--no-such-flag") != std::string::npos);
    auto v = run_tool("gloas", {"-n", "many"});
    CHECK(v.status == 2);
    auto w = run_tool("gloas", {"-m"});
    CHECK(w.status == 2);
}

TEST_CASE("bad model files get one clear error naming the file") {
    const std::string dir = temp_dir("cli");
    check_one_error(run_tool("gloas", {"-m", dir + "/missing.gguf"}), {"missing.gguf", "cannot open"});

    const std::string gguf = read_file(require_model("stories260K_f32.gguf"));
    for (size_t cut : {size_t(2), size_t(12), size_t(100), size_t(5000), size_t(14000), gguf.size() / 2, gguf.size() - 1}) {
        const std::string p = dir + "/cut" + std::to_string(cut) + ".gguf";
        write_file(p, gguf.substr(0, cut));
        INFO("cut at " << cut);
        check_one_error(run_tool("gloas", {"-m", p, "-n", "1"}), {p});
    }

    std::string wrong_version = gguf;
    wrong_version[4] = 9;
    write_file(dir + "/v9.gguf", wrong_version);
    check_one_error(run_tool("gloas", {"-m", dir + "/v9.gguf"}), {"v9.gguf", "version"});

    const std::string ck = read_file(require_model("stories260K.bin"));
    write_file(dir + "/short.bin", ck.substr(0, ck.size() - 4));
    check_one_error(run_tool("gloas", {"-m", dir + "/short.bin", "-z", require_model("tok512.bin")}), {"short.bin", "bytes"});

    write_file(dir + "/text.bin", std::string("this is not a model at all, just some text\n"));
    check_one_error(run_tool("gloas", {"-m", dir + "/text.bin"}), {"text.bin"});

    // A checkpoint without a tokenizer beside it.
    write_file(dir + "/alone.bin", ck);
    check_one_error(run_tool("gloas", {"-m", dir + "/alone.bin"}), {"alone.bin", "tokenizer"});

    // A vocabulary-only GGUF has no weights.
    check_one_error(run_tool("gloas", {"-m", require_model("vocab/ggml-vocab-llama-spm.gguf")}), {"ggml-vocab-llama-spm.gguf", "token_embd.weight"});
}

TEST_CASE("--config loads the specification's shape; flags override it; a shape mismatch names the key") {
    const std::string spec = std::string(GLOAS_SOURCE_DIR) + "/../shared/spec/gloas-config.yaml";
    auto bad = run_tool("gloas", {"--config", spec, "-p", "Once", "-n", "4", "--kv-dir", "none"});
    CHECK(bad.status == 1);
    CHECK(bad.err.find("gloas-config.yaml:25: ultra_decoder.d_model: 512") != std::string::npos);
    CHECK(bad.err.find("training only") != std::string::npos);

    const std::string example = std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml";
    auto ok = run_tool("gloas", {"--config", example, "-p", "Once upon a time", "-n", "20", "--kv-dir", "none", "--temp", "0"});
    REQUIRE(ok.status == 0);
    CHECK(ok.err.find("kv q8_0 pages") != std::string::npos);
    auto over = run_tool("gloas", {"--config", example, "--kv-type", "f32", "-p", "Once upon a time", "-n", "20", "--kv-dir", "none", "--temp", "0"});
    REQUIRE(over.status == 0);
    CHECK(over.err.find("kv f32 pages") != std::string::npos);
}
