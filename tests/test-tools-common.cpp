// tools/common (the gloas-tools library every tool links): the file helpers,
// --help from a tool's own rows and the shared ones, the command-line reader
// gloas and gloas-server share, warnings, and that every tool reports a bad
// command line, a failed run and its write progress the same way.
#include "decoder/options.h"
#include "test-util.h"
#include "tools/common/cli.h"
#include "tools/common/files.h"
#include "tools/common/run-setup.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

bool contains(const std::string & s, const std::string & sub) { return s.find(sub) != std::string::npos; }

// What `fn` writes on stderr.
template <class F>
std::string capture_stderr(F fn) {
    const std::string path = test::temp_dir("tools-common-stderr") + "/err.txt";
    std::fflush(stderr);
    const int saved = ::dup(2);
    FILE * f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    ::dup2(::fileno(f), 2);
    fn();
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::fclose(f);
    return test::read_file(path);
}

enum test_opt : int { T_NAME, T_COUNT, T_MODE, T_LOUD, N_TEST_OPTS };
constexpr option_def TEST_OPTIONS[N_TEST_OPTS] = {
    cli::opt_text(T_NAME, "--name", "NAME", "mine", "a name"),
    cli::opt_int(T_COUNT, "-k|--count", "N", 1, 9, "mine", "how many"),
    cli::opt_word(T_MODE, "--mode", "M", "fast|slow", "mine", "how"),
    cli::opt_switch(T_LOUD, "--loud", "mine", "say more"),
};

} // namespace

TEST_CASE("cli file helpers: base_name, file_exists, is_dir, is_file, is_gguf_file") {
    CHECK(cli::base_name("models/stories260K.bin") == "stories260K");
    CHECK(cli::base_name("models/stories260K.bin", false) == "stories260K.bin");
    CHECK(cli::base_name("/hf/TinyLlama-1.1B/", false) == "TinyLlama-1.1B");
    CHECK(cli::base_name(".hidden") == ".hidden");  // a leading dot is not an extension
    CHECK(cli::base_name("plain") == "plain");

    const std::string dir = test::temp_dir("tools-common-files");
    const std::string gguf = dir + "/m.gguf", other = dir + "/m.bin", shorter = dir + "/s.gguf";
    test::write_file(gguf, std::string("GGUF\x03\0\0\0", 8));
    test::write_file(other, std::string("ggjt\x03\0\0\0", 8));
    test::write_file(shorter, "GG");
    CHECK(cli::file_exists(dir));
    CHECK(cli::is_dir(dir));
    CHECK_FALSE(cli::is_file(dir));
    CHECK(cli::is_file(gguf));
    CHECK_FALSE(cli::is_dir(gguf));
    CHECK(cli::is_gguf_file(gguf));
    CHECK_FALSE(cli::is_gguf_file(other));
    CHECK_FALSE(cli::is_gguf_file(shorter));
    CHECK_FALSE(cli::is_gguf_file(dir + "/missing"));
    CHECK_FALSE(cli::file_exists(dir + "/missing"));
}

TEST_CASE("cli option rows and --help: each row's kind and range, sections of own and shared rows in order") {
    CHECK(TEST_OPTIONS[T_NAME].kind == opt_kind::TEXT);
    CHECK(TEST_OPTIONS[T_COUNT].kind == opt_kind::INT);
    CHECK(TEST_OPTIONS[T_COUNT].lo == 1);
    CHECK(TEST_OPTIONS[T_COUNT].hi == 9);
    CHECK(TEST_OPTIONS[T_MODE].kind == opt_kind::WORD);
    CHECK(std::string(TEST_OPTIONS[T_MODE].words) == "fast|slow");
    CHECK(TEST_OPTIONS[T_LOUD].kind == opt_kind::SWITCH);
    CHECK(TEST_OPTIONS[T_LOUD].arg == nullptr);

    constexpr cli::help_section sections[] = {{"mine", "mine", nullptr}, {"context", nullptr, OPT_GROUP_CONTEXT}};
    const std::string h = cli::options_help("usage: t\n", TEST_OPTIONS, N_TEST_OPTS, sections, 2);
    CHECK(h.rfind("usage: t\n\nmine:\n", 0) == 0);
    const size_t name = h.find("--name NAME"), loud = h.find("--loud"), ctx = h.find("\ncontext:\n"),
                 c = h.find("-c, --ctx-size N");
    CHECK(name != std::string::npos);
    CHECK(loud > name);
    CHECK(ctx > loud);
    CHECK(c > ctx);
    CHECK(h == std::string("usage: t\n") + "\nmine:\n" + options_usage(TEST_OPTIONS, N_TEST_OPTS, "mine") +
                   "\ncontext:\n" + options_usage(SHARED_OPTIONS, N_SHARED_OPTS, OPT_GROUP_CONTEXT));

    // gloas --help is written the same way: its sections in order, each row of both tables once.
    const auto r = test::run_tool("gloas", {"--help"});
    REQUIRE(r.status == 0);
    CHECK(r.out.rfind("usage: gloas [options]\n\n", 0) == 0);
    size_t at = 0;
    for (const char * title : {"\nmodel:\n", "\ngeneration:\n", "\ncontext:\n", "\nsampling:\n", "\nchat:\n",
                               "\nK/V cache:\n", "\nconfiguration:\n", "\nother:\n"}) {
        const size_t k = r.out.find(title, at);
        CHECK_MESSAGE(k != std::string::npos, title);
        at = k == std::string::npos ? at : k;
    }
    CHECK(contains(r.out, "  --chat-template NAME"));
    CHECK(contains(r.out, "--kv-type T"));
}

TEST_CASE("cli::parse_options: own rows reach the tool with their value, shared flags fill run_config") {
    std::vector<std::string> seen;
    run_config flags;
    std::string config_path;
    cli::parse_options({"--name", "x", "-c", "128", "--count", "3", "--loud", "--kv-type", "q8_0", "--mode", "slow"},
                       TEST_OPTIONS, N_TEST_OPTS, flags, config_path,
                       [&](const option_def & d, const std::string & flag, const option_value & v) {
                           seen.push_back(flag + "=" + (d.kind == opt_kind::INT ? std::to_string(v.i) : v.s));
                       });
    CHECK(seen == std::vector<std::string>{"--name=x", "--count=3", "--loud=", "--mode=slow"});
    CHECK(config_path.empty());
    CHECK(flags.flag_given(OPT_CTX_SIZE));
    CHECK(flags.ctx.n_ctx == 128);
    CHECK(flags.flag_given(OPT_KV_TYPE));
    CHECK_FALSE(flags.flag_given(OPT_THREADS));
}

TEST_CASE("cli::warn_lines and cli::warning: one 'PROG: warning:' line per line of notices") {
    const char * saved = cli::prog;
    cli::prog = "tool";
    const std::string err = capture_stderr([] {
        cli::warn_lines("first\nsecond\n");
        cli::warn_lines("");
        cli::warning("third");
    });
    cli::prog = saved;
    CHECK(err == "tool: warning: first\ntool: warning: second\ntool: warning: third\n");
}

TEST_CASE("every tool: a bad command line is 'PROG: MESSAGE' and a pointer to --help (exit 2), a failed run "
          "'PROG: error: MESSAGE' (exit 1)") {
    for (const char * tool : {"gloas", "gloas-convert", "gloas-quantize", "gloas-gen-model", "gloas-kv", "gloas-kv-trace"}) {
        const auto r = test::run_tool(tool, {"--bogus"});
        CHECK_MESSAGE(r.status == 2, tool, ": ", r.err);
        CHECK_MESSAGE(r.err == std::string(tool) + ": unknown option '--bogus'\nTry '" + tool + " --help'.\n", r.err);
        CHECK(r.out.empty());
    }
    const std::string dir = test::temp_dir("tools-common-fail");
    const std::string missing = dir + "/missing.gguf";
    struct failed_run {
        const char * tool;
        std::vector<std::string> args;
    };
    const failed_run runs[] = {
        {"gloas-convert", {missing, "-o", dir + "/out.gguf"}},
        {"gloas-quantize", {missing, dir + "/out.gguf", "q8_0"}},
        {"gloas-gen-model", {"--preset", "tiny", "-o", dir + "/no-such-folder/out.gguf"}},
        {"gloas", {"-m", missing}},
    };
    for (const failed_run & f : runs) {
        const auto r = test::run_tool(f.tool, f.args);
        CHECK_MESSAGE(r.status == 1, f.tool, ": ", r.err);
        CHECK_MESSAGE(r.err.rfind(std::string(f.tool) + ": error: ", 0) == 0, r.err);
    }
}

TEST_CASE("gloas-gen-model and gloas-quantize: the write progress is one line, ended before the summary") {
    const std::string dir = test::temp_dir("tools-common-progress");
    auto r = test::run_tool("gloas-gen-model", {"--preset", "tiny", "-o", dir + "/tiny.gguf"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(r.err.rfind("\rgloas-gen-model: " + dir + "/tiny.gguf: tensor ", 0) == 0);
    CHECK(contains(r.err, " s \ngloas-gen-model: wrote " + dir + "/tiny.gguf ("));
    r = test::run_tool("gloas-quantize", {dir + "/tiny.gguf", dir + "/tiny-q8_0.gguf", "q8_0"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(contains(r.err, "\rgloas-quantize: " + dir + "/tiny-q8_0.gguf: tensor "));
    CHECK(contains(r.err, " s \ngloas-quantize: " + dir + "/tiny.gguf -> "));
    r = test::run_tool("gloas-quantize", {"-q", dir + "/tiny.gguf", dir + "/tiny-q4_0.gguf", "q4_0"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK_FALSE(contains(r.err, "\r"));
    CHECK(r.err.rfind("gloas-quantize: " + dir + "/tiny.gguf -> ", 0) == 0);
}
