// The gloas command line: what goes to stdout and stderr, exit codes, one
// clear error for each kind of bad input, where models are found, and
// llama.cpp's spellings.
#include "tensor/cuda/cuda-backend.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
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
    // No template in the model: chatml, with a one-line warning, as llama.cpp does.
    auto none = run_tool("gloas", {"--chat", "-m", model, "--kv-dir", "none", "--temp", "0", "-n", "4", "--verbose-prompt"},
                         "hello\n");
    INFO("stderr: " << none.err);
    CHECK(none.status == 0);
    CHECK(none.err.find("gloas: warning: " + model + ": the model has no chat template (tokenizer.chat_template); "
                        "using chatml (--chat-template NAME chooses another: chatml, llama2") != std::string::npos);
    CHECK(none.err.find("chat format chatml (the default)") != std::string::npos);
    CHECK(none.err.find("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n") != std::string::npos);
    CHECK(!none.out.empty());
    // -n -1 bounds a reply only by its end and the context.
    auto unbounded = run_tool("gloas", {"--chat", "-m", model, "--kv-dir", "none", "--temp", "0", "-n", "-1", "-c", "96"}, "hello\n");
    CHECK(unbounded.status == 0);
    CHECK(unbounded.err.find("reply 0 tokens") == std::string::npos);

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

namespace {

// A bad command line: exit 2, nothing on stdout, one message on stderr that
// names the flag as typed and points to --help.
void check_usage_error(const std::vector<std::string> & args, const std::vector<std::string> & what) {
    auto r = run_tool("gloas", args);
    std::string line;
    for (const auto & a : args) line += a + " ";
    INFO("gloas " << line << "\nstderr: " << r.err);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("gloas: ", 0) == 0);
    CHECK(r.err.find("Try 'gloas --help'.") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 2);
    for (const auto & w : what) CHECK(r.err.find(w) != std::string::npos);
    // Never the library's internal names.
    for (const char * internal : {"sampler:", "repeat_penalty", "page_tokens", "kv_type", "n_ctx", "assertion"})
        CHECK(r.err.find(internal) == std::string::npos);
}

// Sets an environment variable (which the tools run inherit) for a scope,
// then puts back what was there.
struct env_var {
    std::string name, old;
    bool had;
    env_var(const std::string & n, const std::string & v) : name(n), had(std::getenv(n.c_str()) != nullptr) {
        if (had) old = std::getenv(n.c_str());
        ::setenv(n.c_str(), v.c_str(), 1);
    }
    ~env_var() {
        if (had) ::setenv(name.c_str(), old.c_str(), 1);
        else ::unsetenv(name.c_str());
    }
};

} // namespace

TEST_CASE("-m NAME and -z NAME are looked up in the model folders; a missing name says where and how to fetch it") {
    const std::string path = require_model("stories260K.bin");
    const std::vector<std::string> gen = {"--temp", "0", "-p", "Once upon a time", "-n", "20", "--kv-dir", "none", "-t", "1"};
    auto ref = run_tool("gloas", gloas::test::with_args({"-m", path}, gen));
    REQUIRE(ref.status == 0);
    // A bare file name, a manifest name, a name with .gguf added, a bare tokenizer name.
    for (const std::vector<std::string> & m : {std::vector<std::string>{"-m", "stories260K.bin"},
                                               std::vector<std::string>{"-m", "stories260K"},
                                               std::vector<std::string>{"-m", "stories260K_f32"},
                                               std::vector<std::string>{"-m", "stories260K", "-z", "tok512"}}) {
        auto r = run_tool("gloas", gloas::test::with_args(m, gen));
        INFO(m[1] << " stderr: " << r.err);
        CHECK(r.status == 0);
        CHECK(r.out == ref.out);
    }
    // $GLOAS_MODELS: a model of another name there.
    const std::string dir = temp_dir("cli-models");
    write_file(dir + "/mine.bin", read_file(path));
    write_file(dir + "/tok512.bin", read_file(require_model("tok512.bin")));
    {
        env_var e("GLOAS_MODELS", dir);
        auto r = run_tool("gloas", gloas::test::with_args({"-m", "mine", "-v"}, gen));
        INFO("stderr: " << r.err);
        CHECK(r.status == 0);
        CHECK(r.out == ref.out);
        CHECK(r.err.find(dir + "/mine.bin") != std::string::npos);
    }
    // Missing: one error naming the folders and the fetch script.
    auto miss = run_tool("gloas", {"-m", "no-such-model", "-p", "x"});
    check_one_error(miss, {"no-such-model: no model of that name", "looked in ./models", "shared/models", "models/fetch.sh"});
    {
        env_var e("GLOAS_MODELS", "");
        check_one_error(run_tool("gloas", {"-m", "no-such-model"}), {"$GLOAS_MODELS is not set"});
    }
    if (gloas::test::model_path("stories42M.bin").empty()) {
        auto known = run_tool("gloas", {"-m", "stories42M", "-p", "x"});
        check_one_error(known, {"stories42M: no model of that name", "models/fetch.sh stories42M downloads it"});
    }
    auto tok = run_tool("gloas", {"-m", "stories260K", "-z", "no-such-tokenizer"});
    check_one_error(tok, {"no-such-tokenizer: no tokenizer of that name"});
}

TEST_CASE("a tokenizer of another vocabulary is refused at load, by gloas and gloas-convert") {
    const std::string model = require_model("stories260K.bin");
    const std::string big = require_model("tokenizer.bin");
    auto r = run_tool("gloas", {"-m", model, "-z", big, "-p", "Once"});
    check_one_error(r, {big + ": tokenizer has 32000 pieces, the model's vocabulary is 512"});
    // Fewer pieces than the model's vocabulary: refused too.
    const std::string dir = temp_dir("cli-tok");
    const std::string tok = read_file(require_model("tok512.bin"));
    write_file(dir + "/cut.bin", tok.substr(0, tok.size() / 2));
    auto c = run_tool("gloas", {"-m", model, "-z", dir + "/cut.bin", "-p", "Once"});
    check_one_error(c, {dir + "/cut.bin"});

    auto conv = run_tool("gloas-convert", {model, "--tokenizer", big, "-o", dir + "/out.gguf"});
    CHECK(conv.status == 1);
    CHECK(conv.err.find(big + ": tokenizer has 32000 pieces, the model's vocabulary is 512") != std::string::npos);
    FILE * f = std::fopen((dir + "/out.gguf").c_str(), "rb");
    CHECK(f == nullptr);
    if (f) std::fclose(f);
}

TEST_CASE("every --kv-type x --kv-page x --kv-policy combination runs or is refused naming the flags") {
    const std::string model = require_model("stories260K.bin");
    const std::string dir = temp_dir("cli-kv-combos");
    int ran = 0, refused = 0;
    for (const char * t : {"f32", "f16", "q8_0", "q4_0"})
        for (const char * page : {"8", "16", "32", "48", "64"})
            for (const char * policy : {"lru", "compressed"}) {
                const bool block = std::string(t) == "q8_0" || std::string(t) == "q4_0";
                const bool multiple = std::atoi(page) % 32 == 0;
                const bool ok = multiple || (!block && std::string(policy) != "compressed");
                // A folder per page size with room for three pages: a second
                // prompt evicts (and, with compressed, re-quantizes) the first's.
                const std::vector<std::string> args = {"-m", model, "--temp", "0", "-n", "40", "--kv-type", t, "--kv-page", page,
                                                       "--kv-policy", policy, "--kv-capacity", "3p", "--kv-dir",
                                                       dir + "/" + t + "-" + page + "-" + policy};
                INFO(t << " " << page << " " << policy);
                for (const char * prompt : {"Once upon a time, there was a little girl named Lily.", "Tom had a big red ball."}) {
                    auto r = run_tool("gloas", gloas::test::with_args(args, {"-p", prompt}));
                    INFO("stderr: " << r.err);
                    if (ok) {
                        CHECK(r.status == 0);
                        CHECK(r.err.find("error") == std::string::npos);
                    } else {
                        CHECK(r.status == 2);
                        CHECK(r.out.empty());
                        CHECK(r.err.find("--kv-page " + std::string(page)) != std::string::npos);
                        CHECK(r.err.find(block ? "--kv-type " + std::string(t) : std::string("--kv-policy compressed")) !=
                              std::string::npos);
                        CHECK(r.err.find("assertion") == std::string::npos);
                    }
                }
                (ok ? ran : refused)++;
            }
    CHECK(ran == 22);
    CHECK(refused == 18);
    // The llama.cpp spellings go through the same check.
    check_usage_error({"-m", model, "-ctk", "q4_0", "-ctv", "q4_0", "--kv-page", "16", "--kv-dir", "none"},
                      {"--kv-type q4_0", "--kv-page 16"});
}

TEST_CASE("bad command lines exit 2 and name the flag as typed and what is wrong") {
    const std::string m = require_model("stories260K.bin");
    check_usage_error({"-m", m, "--ctx-slide", "-c", "64", "--kv-dir", "none"}, {"--ctx-slide", "-c 64", "at least 96"});
    check_usage_error({"-m", m, "--repeat-penalty", "0"}, {"--repeat-penalty: expected a number in (0, 100], got '0'"});
    check_usage_error({"-m", m, "--kv-capacity", "0"}, {"--kv-capacity: '0': the bound must be more than 0"});
    check_usage_error({"-m", m, "--kv-capacity", "lots"}, {"--kv-capacity: cannot read 'lots'"});
    check_usage_error({"-m", m, "-ctk", "f16", "-ctv", "q8_0"}, {"-ctk f16 and -ctv q8_0", "one type"});
    check_usage_error({"-m", m, "--cache-type-k", "bf16"}, {"--cache-type-k takes f32, f16, q8_0, q4_0 or q4_kivi, got 'bf16'"});
    check_usage_error({"-m", m, "--threads", "5000"}, {"--threads: expected an integer in [-1, 1024], got '5000'"});
    check_usage_error({"-m", m, "--top-p", "2"}, {"--top-p: expected a number in [0, 1], got '2'"});
    check_usage_error({"-m", m, "--seed", "abc"}, {"--seed: expected -1 (random) or an integer"});
    check_usage_error({"-m", m, "-n", "-2"}, {"-n: expected an integer in [-1, 1073741824], got '-2'"});
    check_usage_error({"-m", m, "--ctx-size", "-1"}, {"--ctx-size: expected an integer"});
    check_usage_error({"-m", m, "--presence-penalty", "nan"}, {"--presence-penalty: expected a number"});
    check_usage_error({"-m", m, "-ub", "0"}, {"-ub: expected an integer in [1, 65536], got '0'"});
    check_usage_error({"-m", m, "--kv-ram"}, {"--kv-ram needs a value (SIZE)"});
    check_usage_error({"-m", m, "-r", ""}, {"-r: the text must not be empty"});
    check_usage_error({"-m", m, "--chat", "-r", "User:"}, {"-r goes without --chat"});
}

TEST_CASE("llama.cpp's spellings mean what they mean there") {
    const std::string m = require_model("stories260K.bin");
    const std::vector<std::string> gen = {"-m", m, "-p", "Once upon a time", "--kv-dir", "none"};
    auto run = [&](const std::vector<std::string> & extra, const std::string & in = {}) {
        return run_tool("gloas", gloas::test::with_args(gen, extra), in);
    };
    auto ref = run({"--temp", "0", "-n", "30", "-c", "128", "-t", "1", "--kv-type", "f16", "--ubatch", "16"});
    REQUIRE(ref.status == 0);
    auto llama = run({"--temp", "0", "--n-predict", "30", "--ctx-size", "128", "--threads", "1", "-ctk", "f16", "-ctv",
                      "f16", "-ub", "16", "-b", "64", "-ngl", "0", "--mlock", "--no-mmap"});
    INFO("stderr: " << llama.err);
    REQUIRE(llama.status == 0);
    CHECK(llama.out == ref.out);
    // A model this small is copied into memory by default; --mmap keeps the mapping, with the same text.
    CHECK(ref.err.find(" MiB in memory)") != std::string::npos);
    auto mapped = run({"--temp", "0", "-n", "30", "-c", "128", "-t", "1", "--kv-type", "f16", "--ubatch", "16", "--mmap"});
    CHECK(mapped.err.find(" MiB mapped)") != std::string::npos);
    CHECK(mapped.out == ref.out);
    // -ngl N > 0 runs on the GPU or fails (exit 1, the reason on stderr);
    // all (or auto) runs on the CPU when the GPU cannot, saying why.
    auto ngl = run({"--temp", "0", "-n", "4", "-ngl", "99"});
    if (gloas::cuda_usable(nullptr)) CHECK(ngl.status == 0);
    else {
        CHECK(ngl.status == 1);
        CHECK(ngl.err.find("-ngl 99") != std::string::npos);
        auto all = run({"-n", "1", "-ngl", "all"});
        CHECK(all.status == 0);
        CHECK(all.err.find("running on the CPU") != std::string::npos);
    }
    check_usage_error({"-m", m, "-ngl", "many"}, {"-ngl: expected a number of layers in [-1, 1048576], auto or all, got 'many'"});

    // -n -1: until the context is full; -c 0: the model's context (512).
    auto full = run({"--temp", "0", "-n", "-1", "-c", "64"});
    REQUIRE(full.status == 0);
    // 64 positions: BOS and 4 prompt tokens, 59 generated tokens evaluated, and the last one sampled.
    CHECK(full.err.find("generated 60 tokens (context full") != std::string::npos);
    auto model_ctx = run({"--temp", "0", "-n", "4", "-c", "0"});
    CHECK(model_ctx.err.find("context 512,") != std::string::npos);
    // -c above the training context: a warning, and the run goes on.
    auto big = run({"--temp", "0", "-n", "4", "-c", "1024"});
    CHECK(big.status == 0);
    CHECK(big.err.find("gloas: warning: -c 1024 is above the model's training context (512)") != std::string::npos);
    // -t above the cores this process may use: a warning too.
    auto many = run({"--temp", "0", "-n", "2", "-t", "1024"});
    CHECK(many.status == 0);
    CHECK(many.err.find("gloas: warning: -t 1024 is more threads than the ") != std::string::npos);

    // --seed -1: random, and the seed used is printed; giving it back repeats the run.
    auto rnd = run({"--seed", "-1", "-n", "30", "--temp", "1"});
    REQUIRE(rnd.status == 0);
    const size_t at = rnd.err.find("gloas: seed ");
    REQUIRE(at != std::string::npos);
    const std::string seed = rnd.err.substr(at + 12, rnd.err.find('\n', at) - at - 12);
    CHECK(run({"--seed", seed, "-n", "30", "--temp", "1"}).out == rnd.out);

    // -f - reads the prompt from stdin; --no-display-prompt prints only the generated text.
    auto in = run_tool("gloas", {"-m", m, "-f", "-", "--temp", "0", "-n", "30", "--kv-dir", "none"}, "Once upon a time");
    CHECK(in.out == run({"--temp", "0", "-n", "30"}).out);
    auto quiet_prompt = run({"--temp", "0", "-n", "30", "--no-display-prompt"});
    REQUIRE(in.out.rfind("Once upon a time", 0) == 0);
    CHECK(quiet_prompt.out == in.out.substr(std::string("Once upon a time").size()));

    // -q / --log-disable: nothing on stderr for a good run.
    for (const char * q : {"-q", "--log-disable"}) {
        auto r = run({"--temp", "0", "-n", "10", q, "--seed", "-1"});
        CHECK(r.status == 0);
        CHECK(r.err.empty());
    }

    // --version.
    auto v = run_tool("gloas", {"--version"});
    CHECK(v.status == 0);
    CHECK(v.out.rfind("gloas 0.", 0) == 0);

    // -r: stops when the generated text ends with it (the golden greedy text
    // goes on "..., there was a little girl named Lily. She loved ...").
    auto r = run({"--temp", "0", "-n", "100", "-r", "named Lily"});
    REQUIRE(r.status == 0);
    CHECK(r.out == "Once upon a time, there was a little girl named Lily\n");
    CHECK(r.err.find("(reverse prompt)") != std::string::npos);
    auto two = run({"--temp", "0", "-n", "100", "-r", "no such text", "--reverse-prompt", "little"});
    CHECK(two.out == "Once upon a time, there was a little\n");

    // -e: escapes in the prompt.
    auto esc = run_tool("gloas", {"--tokenize", "-m", m, "-e", "-p", "a\\nb\\tc\\\\d\\x41"});
    auto raw = run_tool("gloas", {"--tokenize", "-m", m, "-p", "a\nb\tc\\dA"});
    REQUIRE(esc.status == 0);
    CHECK(esc.out == raw.out);
    auto noesc = run_tool("gloas", {"--tokenize", "-m", m, "-p", "a\\nb"});
    CHECK(noesc.out != run_tool("gloas", {"--tokenize", "-m", m, "-p", "a\nb"}).out);

    // Presence and frequency penalties change a greedy run; -b caps the prefill chunk.
    auto pen = run({"--temp", "0", "-n", "60", "--frequency-penalty", "1.5", "--presence-penalty", "0.5"});
    REQUIRE(pen.status == 0);
    CHECK(pen.out != run({"--temp", "0", "-n", "60"}).out);
    auto ex = run_tool("gloas", {"-m", m, "--auto", "--explain", "-b", "8"});
    CHECK(ex.out.find(" -ub 8 ") != std::string::npos);

    // --help lists every spelling.
    auto h = run_tool("gloas", {"--help"});
    for (const char * s : {"--ctx-size", "--n-predict", "--threads", "-ctk", "--cache-type-k", "-ctv", "--cache-type-v",
                           "-ub", "--ubatch-size", "-b, --batch-size", "-ngl", "--n-gpu-layers", "--no-display-prompt",
                           "--log-disable", "-q", "--version", "-r, --reverse-prompt", "-e, --escape", "--mlock",
                           "--no-mmap", "--mmap", "--presence-penalty", "--frequency-penalty", "-f, --file", "--seed"})
        CHECK_MESSAGE(h.out.find(s) != std::string::npos, s);
}

TEST_CASE("every flag the configuration's comments name exists") {
    auto h = run_tool("gloas", {"--help"});
    REQUIRE(h.status == 0);
    for (const char * file : {"examples/gloas.yaml", "decoder/config.h"}) {
        const std::string text = read_file(std::string(GLOAS_SOURCE_DIR) + "/" + file);
        for (size_t at = text.find("--"); at != std::string::npos; at = text.find("--", at + 2)) {
            if (at > 0 && text[at - 1] != ' ' && text[at - 1] != '(' && text[at - 1] != '#') continue;
            if (at + 2 >= text.size() || !std::isalpha((unsigned char) text[at + 2])) continue;
            size_t e = at + 2;
            while (e < text.size() && (std::isalnum((unsigned char) text[e]) || text[e] == '-')) ++e;
            const std::string flag = text.substr(at, e - at);
            if (flag.size() < 4) continue;
            INFO(file << ": " << flag);
            // a spelling in --help: followed by a space, a comma or the end of the spelling list
            const bool listed = h.out.find(flag + " ") != std::string::npos || h.out.find(flag + ",") != std::string::npos ||
                                h.out.find(flag + "\n") != std::string::npos;
            CHECK(listed);
        }
    }
}
