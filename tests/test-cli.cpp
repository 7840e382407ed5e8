// The gloas command line: what goes to stdout and stderr, exit codes, and one
// clear error for each kind of bad input.
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <string>

using gloas::test::read_file;
using gloas::test::require_model;
using gloas::test::run_tool;
using gloas::test::temp_dir;
using gloas::test::write_file;

namespace {

std::string golden(const std::string & name) { return read_file(gloas::test::data_file("golden/" + name)); }

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
    gloas::test::require_default_model();
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
    gloas::test::require_default_model();
    // The specification's own file, from the shared folder beside the checkout.
    const std::string spec = std::string(GLOAS_SOURCE_DIR) + "/../shared/spec/gloas-config.yaml";
    if (FILE * f = std::fopen(spec.c_str(), "rb")) std::fclose(f);
    else gloas::test::skip_missing("../shared/spec/gloas-config.yaml", "the shared folder beside the checkout");
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

TEST_CASE("--chat: two turns through stdin give the template's exact text; the second turn keeps the first's K/V") {
    const std::string model = require_model("stories260K.bin");
    // --verbose-prompt prints "gloas: turn N prompt, B bytes:\n" then the B bytes.
    auto prompt_text = [](const std::string & err, int turn) {
        const std::string head = "gloas: turn " + std::to_string(turn) + " prompt, ";
        const size_t at = err.find(head);
        if (at == std::string::npos) return std::string("(no prompt text for this turn)");
        const size_t n = std::stoul(err.substr(at + head.size()));
        const size_t text = err.find(":\n", at) + 2;
        return err.substr(text, n);
    };
    struct turn_stats {
        int tokens = -1, prefilled = -1, kept = -1, earlier = -1, reused = -1, reply = -1;
        std::string stop;
    };
    auto stats = [](const std::string & err, int turn) {
        turn_stats s;
        const std::string head = "gloas: turn " + std::to_string(turn) + ": ";
        for (size_t at = err.find(head); at != std::string::npos; at = err.find(head, at + 1)) {
            const std::string line = err.substr(at, err.find('\n', at) - at);
            int t = 0;
            char stop[64] = {};
            if (line.find("reply") != std::string::npos) {
                if (std::sscanf(line.c_str(), "gloas: turn %d: reply %d tokens (%63[^)])", &t, &s.reply, stop) == 3) s.stop = stop;
            } else {
                std::sscanf(line.c_str(), "gloas: turn %d: %d tokens, %d prefilled (%*f tokens/s), %d positions kept (%d from earlier turns, %d reused",
                            &t, &s.tokens, &s.prefilled, &s.kept, &s.earlier, &s.reused);
            }
        }
        return s;
    };
    // Token count of `text` by the tool's own tokenizer, BOS excluded.
    auto n_tokens = [&](const std::string & text) {
        auto r = run_tool("gloas", {"-m", model, "--tokenize", "-p", text});
        REQUIRE(r.status == 0);
        const int n = int(std::count(r.out.begin(), r.out.end(), ' ')) + 1;
        return r.out.rfind("1 ", 0) == 0 ? n - 1 : n;  // stories260K: BOS is 1
    };

    struct expected {
        const char * name;
        std::string turn1, turn2;
    };
    const expected formats[] = {
        {"chatml",
         "<|im_start|>system\nYou tell stories.<|im_end|>\n<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n",
         "<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"},
        {"llama3",
         "<|start_header_id|>system<|end_header_id|>\n\nYou tell stories.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
         "Tell me a story.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
         "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd then?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    };
    for (const expected & f : formats) {
        INFO("template " << f.name);
        auto r = run_tool("gloas", {"--chat", "-m", model, "--chat-template", f.name, "--system", "You tell stories.",
                                    "--verbose-prompt", "--temp", "0", "-n", "12", "--kv-dir", "none", "--kv-page", "16"},
                          "Tell me a story.\nAnd then?\n");
        INFO("stderr: " << r.err);
        REQUIRE(r.status == 0);
        CHECK(prompt_text(r.err, 1) == f.turn1);
        CHECK(prompt_text(r.err, 2) == f.turn2);
        CHECK(r.err.find("gloas: turn 3") == std::string::npos);
        CHECK(r.err.find("chat ended after 2 turns") != std::string::npos);
        CHECK(!r.out.empty());
        CHECK(r.out.back() == '\n');

        const turn_stats t1 = stats(r.err, 1), t2 = stats(r.err, 2);
        REQUIRE(t1.reply >= 0);
        REQUIRE(t2.reply >= 0);
        // Turn 1: BOS + its text, all prefilled on the empty context.
        CHECK(t1.tokens == 1 + n_tokens(f.turn1));
        CHECK(t1.prefilled == t1.tokens);
        CHECK(t1.kept == 0);
        // A reply cut by -n leaves its last token to the next turn.
        REQUIRE((t1.stop == "limit" || t1.stop == "end of turn"));
        const int carried = t1.stop == "limit" ? 1 : 0;
        // Turn 2 prefills only its own text: every position of turn 1 and of
        // its reply is kept (more than one sealed page of 16).
        CHECK(t2.tokens == carried + n_tokens(f.turn2));
        CHECK(t2.prefilled == t2.tokens);
        CHECK(t2.earlier == t1.tokens + t1.reply - carried);
        CHECK(t2.kept == t2.earlier);
        CHECK(t2.kept > 16);
        CHECK(t2.reused == 0);
    }
}

TEST_CASE("--chat: a missing or unknown format, and flags that need --chat") {
    const std::string model = require_model("stories260K.bin");
    auto none = run_tool("gloas", {"--chat", "-m", model, "--kv-dir", "none"}, "hello\n");
    CHECK(none.status == 1);
    CHECK(none.err.find("stories260K.bin: the model has no chat template") != std::string::npos);
    CHECK(none.err.find("--chat-template NAME (one of chatml, llama2") != std::string::npos);

    auto unknown = run_tool("gloas", {"--chat", "-m", model, "--chat-template", "chatgpt"});
    CHECK(unknown.status == 2);
    CHECK(unknown.err.find("'chatgpt'") != std::string::npos);
    CHECK(unknown.err.find("known: chatml, llama2, ") != std::string::npos);

    CHECK(run_tool("gloas", {"--system", "be nice", "-p", "hi"}).status == 2);
    CHECK(run_tool("gloas", {"--chat", "-p", "hi"}).status == 2);

    // End of input at once: no turn, a clean exit.
    auto empty = run_tool("gloas", {"--chat", "-m", model, "--chat-template", "chatml", "--kv-dir", "none"});
    CHECK(empty.status == 0);
    CHECK(empty.out.empty());
    CHECK(empty.err.find("chat ended after 0 turns") != std::string::npos);
}
