// The command lines of gloas-bench, gloas-perplexity, gloas-kv-trace and
// gloas-convert: llama.cpp's spellings and lists, the shared warnings of
// tools/common/cli.h, perplexity's progress and uncertainty, and exit status 2 with a
// message naming the flag for every bad command line.
#include "tools/common/cli.h"
#include "decoder/model.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace gloas;

namespace {

using test::contains;

size_t count(const std::string & s, const std::string & sub) {
    size_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return n;
}

// The number after `key` in `s` (the first occurrence); NaN if absent.
double number_after(const std::string & s, const std::string & key) {
    const size_t at = s.find(key);
    return at == std::string::npos ? std::nan("") : std::stod(s.substr(at + key.size()));
}

// Runs `tool` with `args` and checks it is refused as a bad command line: exit
// status 2, one message naming `names` (the flag as typed and what was wrong).
void check_refused(const std::string & tool, const std::vector<std::string> & args, const std::vector<std::string> & names) {
    std::string line = tool;
    for (const auto & a : args) line += " " + a;
    const auto r = test::run_tool(tool, args);
    CHECK_MESSAGE(r.status == 2, line, "\n", r.err);
    for (const auto & n : names) CHECK_MESSAGE(contains(r.err, n), line, ": ", r.err, " lacks ", n);
    CHECK_MESSAGE(r.out.empty(), line);
}

} // namespace

TEST_CASE("gloas-bench: comma lists for -p, -n and -t and -pg give one row per combination, in md and json") {
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "-p", "8,16", "-n", "4",
                                           "-pg", "8,4", "-t", "1,2", "-r", "1"};
    auto r = test::run_tool("gloas-bench", test::with_args(base, {"-o", "json"}));
    REQUIRE_MESSAGE(r.status == 0, r.err);
    // 2 thread counts x (pp8, pp16, tg4, pp8+tg4)
    CHECK(count(r.out, "\"test\": ") == 8);
    for (const char * test : {"\"pp8\"", "\"pp16\"", "\"tg4\"", "\"pp8+tg4\""}) CHECK_MESSAGE(count(r.out, test) == 2, test);
    CHECK(count(r.out, "\"threads\": 1,") == 4);
    CHECK(count(r.out, "\"threads\": 2,") == 4);

    r = test::run_tool("gloas-bench", base);
    REQUIRE_MESSAGE(r.status == 0, r.err);
    // the first table: a row per combination, the pg test named as llama-bench names it
    const std::string first = r.out.substr(0, r.out.find("\n\n"));
    CHECK(count(first, "\n| stories260K") == 8);
    CHECK(count(first, "| pp8+tg4 |") == 2);
    CHECK(count(first, "| 1 | f16 |") == 4);
    CHECK(count(first, "| 2 | f16 |") == 4);

    // a second -pg adds a test; depths multiply the rows
    r = test::run_tool("gloas-bench", {"-m", test::require_model("stories260K.bin"), "-p", "0", "-n", "0", "-pg", "8,2",
                                       "-pg", "4,4", "-d", "0,8", "-r", "1", "-o", "jsonl"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(count(r.out, "\n") == 4);
    for (const char * test : {"\"pp8+tg2\"", "\"pp4+tg4\"", "\"pp8+tg2 @ d8\"", "\"pp4+tg4 @ d8\""}) CHECK_MESSAGE(contains(r.out, test), test);
}

TEST_CASE("gloas-bench: llama-bench's spellings -ctk/-ctv, -b, -ub, --n-depth and -ngl") {
    auto r = test::run_tool("gloas-bench", {"-m", test::require_model("stories260K.bin"), "-p", "16", "-n", "2", "-r", "1",
                                            "-ctk", "q8_0", "-ctv", "q8_0", "-ub", "8", "-b", "16", "--n-depth", "32",
                                            "-ngl", "0", "-o", "json"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(count(r.out, "\"kv_type\": \"q8_0\"") == 2);
    CHECK(count(r.out, "\"n_batch\": 16, \"n_ubatch\": 8") == 2);
    CHECK(contains(r.out, "\"pp16 @ d32\""));
    // --no-mmap (llama-bench -mmp 0, or -lm none): the weights copied into memory, found where the file was mapped
    r = test::run_tool("gloas-bench", {"-m", test::require_model("stories260K.bin"), "-p", "8", "-n", "2", "-r", "1",
                                       "--no-mmap"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK_MESSAGE(!contains(r.err, "warning"), r.err);
    // --help lists them
    r = test::run_tool("gloas-bench", {"--help"});
    for (const char * flag : {"-pg PP,TG", "-ctk, --cache-type-k", "-ctv, --cache-type-v", "-b, --batch-size", "-ub, --ubatch-size",
                              "-d, --n-depth", "-ngl", "jsonl"})
        CHECK_MESSAGE(contains(r.out, flag), flag);
}

TEST_CASE("gloas-bench: -r 0 and every other bad command line exit 2, naming the flag and what was wrong") {
    const std::vector<std::string> m = {"-m", test::require_model("stories260K.bin")};
    check_refused("gloas-bench", test::with_args(m, {"-r", "0"}), {"-r 0", "at least 1 timed repetition"});
    check_refused("gloas-bench", test::with_args(m, {"--rounds", "0"}), {"--rounds 0"});
    check_refused("gloas-bench", test::with_args(m, {"-p", "8,x"}), {"-p", "'x' is not an integer"});
    check_refused("gloas-bench", test::with_args(m, {"-t", "2,-2"}), {"-t: expected an integer in [-1, 1024], got '-2'"});
    check_refused("gloas-bench", test::with_args(m, {"-t", "2,,4"}), {"-t: expected an integer", "got ''"});
    check_refused("gloas-bench", test::with_args(m, {"-pg", "512"}), {"-pg '512'", "PP,TG"});
    check_refused("gloas-bench", test::with_args(m, {"-pg", "512,0"}), {"-pg 512,0", "at least 1 generated token"});
    check_refused("gloas-bench", test::with_args(m, {"-ctk", "q8_0", "-ctv", "f16"}), {"-ctk q8_0 and -ctv f16: K and V pages have one type"});
    check_refused("gloas-bench", test::with_args(m, {"-ctk", "f16,q8_0", "-ctv", "f16"}), {"-ctk f16,q8_0 and -ctv f16", "the same list"});
    check_refused("gloas-bench", test::with_args(m, {"-ctk", "f16,q4_K"}), {"-ctk takes f32, f16, q8_0, q4_0 or q4_kivi, got 'q4_K'"});
    check_refused("gloas-bench", test::with_args(m, {"-ctk", "q8_0", "--kv-page", "16"}), {"--kv-type q8_0 needs --kv-page to be a multiple of 32", "got --kv-page 16"});
    check_refused("gloas-bench", test::with_args(m, {"-ub", "0"}), {"-ub: expected an integer in [1, 65536], got '0'"});
    check_refused("gloas-bench", test::with_args(m, {"-o", "xml"}), {"-o", "'xml'"});
    check_refused("gloas-bench", test::with_args(m, {"-p", "0", "-n", "0"}), {"nothing to measure"});
    check_refused("gloas-bench", test::with_args(m, {"--fill", "zero"}), {"--fill", "'zero'"});
    check_refused("gloas-bench", test::with_args(m, {"--strategy", "fast"}), {"--strategy", "'fast'"});
    check_refused("gloas-bench", test::with_args(m, {"--bogus"}), {"unknown option '--bogus'"});
    check_refused("gloas-bench", test::with_args(m, {"-n"}), {"-n needs a value"});
    check_refused("gloas-bench", {"-p", "8"}, {"no model given"});
}

TEST_CASE("cli::warn_threads and cli::warn_context: one line when a setting exceeds the machine or the model") {
    const int cores = cli::available_cores();
    CHECK(cores >= 1);
    CHECK_FALSE(cli::warn_threads(cores));
    CHECK(cli::warn_threads(cores + 1));
    CHECK_FALSE(cli::warn_context(512, 512));
    CHECK(cli::warn_context(513, 512));
    CHECK_FALSE(cli::warn_context(4096, 0));  // training context unknown

    const std::string more = std::to_string(cores + 1);
    auto r = test::run_tool("gloas-bench", {"-m", test::require_model("stories260K.bin"), "-p", "8", "-n", "0", "-r", "1",
                                            "-t", "1," + more});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(count(r.err, "warning: -t " + more + " is more threads than the " + std::to_string(cores) + " core") == 1);
    r = test::run_tool("gloas-bench", {"-m", test::require_model("stories260K.bin"), "-p", "8", "-n", "0", "-r", "1",
                                       "-t", std::to_string(cores)});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK_FALSE(contains(r.err, "warning"));

    // stories260K was trained on 512 positions
    r = test::run_tool("gloas-perplexity", {"-m", test::require_model("stories260K.bin"), "-f",
                                            test::require_data("tinystories-valid-excerpt.txt"), "-c", "1024", "--chunks", "1",
                                            "-t", more});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(count(r.err, "gloas-perplexity: warning: -t " + more + " is more threads") == 1);
    CHECK(count(r.err, "gloas-perplexity: warning: -c 1024 is above the model's training context (512)") == 1);
    r = test::run_tool("gloas-perplexity", {"-m", test::require_model("stories260K.bin"), "-f",
                                            test::require_data("tinystories-valid-excerpt.txt"), "-c", "512", "--chunks", "1"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK_FALSE(contains(r.err, "warning"));
}

TEST_CASE("gloas-perplexity: progress with the time left, and PPL +/- its standard error from the per-token log-likelihoods") {
    const std::string model = test::require_model("stories260K.bin");
    const std::string text = test::require_data("tinystories-valid-excerpt.txt");
    const std::string dir = test::temp_dir("perplexity-error");
    const std::string logits = dir + "/f32.lgt";
    auto r = test::run_tool("gloas-perplexity", {"-m", model, "-f", text, "-c", "128", "--chunks", "4", "--save-logits", logits});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(contains(r.err, "gloas-perplexity: 4 chunks, "));
    CHECK(contains(r.err, "estimated time "));
    for (int i = 1; i <= 4; ++i) CHECK(contains(r.err, "[" + std::to_string(i) + "] "));
    CHECK(count(r.err, " left)\n") == 4);
    CHECK(contains(r.err, "(0 s left)"));
    // `PPL = X` still starts the line, the uncertainty after it
    REQUIRE(r.out.compare(0, 6, "PPL = ") == 0);
    const double ppl = number_after(r.out, "PPL = ");
    const double err = number_after(r.out, " +/- ");
    CHECK(ppl > 1.0);
    CHECK(err > 0.0);
    CHECK(err < ppl);

    // The same figures from the saved logits: NLL of each scored token (the
    // second half of each chunk of 128, token j+1 against the logits at j).
    auto m = model::load({model, ""});
    const std::vector<int32_t> toks = m->tok.encode(test::read_file(text), true);
    const std::string saved = test::read_file(logits);
    const int32_t V = m->hp.n_vocab;
    const size_t header = 8 + 8 + 8;
    const int per_chunk = 128 - 1 - 64;
    REQUIRE(saved.size() == header + size_t(4 * per_chunk) * size_t(V) * sizeof(float));
    std::vector<double> nll;
    for (int c = 0; c < 4; ++c)
        for (int pos = 64; pos < 127; ++pos) {
            std::vector<float> l(static_cast<size_t>(V));
            std::memcpy(l.data(), saved.data() + header + (nll.size() * size_t(V)) * sizeof(float), size_t(V) * sizeof(float));
            double mx = l[0], sum = 0;
            for (float x : l) mx = std::max(mx, double(x));
            for (float x : l) sum += std::exp(double(x) - mx);
            nll.push_back(std::log(sum) + mx - double(l[size_t(toks[size_t(c * 128 + pos + 1)])]));
        }
    double mean = 0;
    for (double x : nll) mean += x;
    mean /= double(nll.size());
    double var = 0;
    for (double x : nll) var += (x - mean) * (x - mean);
    var /= double(nll.size() - 1);
    const double want_ppl = std::exp(mean), want_err = want_ppl * std::sqrt(var / double(nll.size()));
    CHECK(ppl == doctest::Approx(want_ppl).epsilon(1e-4));
    CHECK(err == doctest::Approx(want_err).epsilon(1e-3));

    // a quarter of the tokens: about twice the error
    r = test::run_tool("gloas-perplexity", {"-m", model, "-f", text, "-c", "128", "--chunks", "1"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    const double err1 = number_after(r.out, " +/- ");
    CHECK(err1 > 1.2 * err);
    CHECK(err1 < 4.0 * err);
}

TEST_CASE("gloas-perplexity: llama.cpp's spellings, and every bad command line exits 2 naming the flag") {
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "-f",
                                           test::require_data("tinystories-valid-excerpt.txt"), "--chunks", "1", "-c", "128"};
    auto r = test::run_tool("gloas-perplexity", test::with_args(base, {"-ctk", "q8_0", "-ctv", "q8_0", "-ub", "16", "-b", "32"}));
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(contains(r.err, "kv q8_0 pages"));
    const double split = number_after(r.out, "PPL = ");
    r = test::run_tool("gloas-perplexity", test::with_args(base, {"--kv-type", "q8_0"}));
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(number_after(r.out, "PPL = ") == doctest::Approx(split).epsilon(1e-3));  // -b and -ub split the work, not the score
    // -c 0: the model's training context (512 for stories260K)
    r = test::run_tool("gloas-perplexity", {"-m", test::require_model("stories260K.bin"), "-f",
                                            test::require_data("tinystories-valid-excerpt.txt"), "--chunks", "1", "-c", "0"});
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(contains(r.err, "1 chunks of 512"));

    check_refused("gloas-perplexity", test::with_args(base, {"-c", "4"}), {"-c 4", "at least 8"});
    check_refused("gloas-perplexity", test::with_args(base, {"--sparse-ratio", "0.5x"}), {"--sparse-ratio", "'0.5x'"});
    check_refused("gloas-perplexity", test::with_args(base, {"-ctk", "q4_K"}), {"-ctk takes f32, f16, q8_0, q4_0 or q4_kivi, got 'q4_K'"});
    check_refused("gloas-perplexity", test::with_args(base, {"-ctk", "q8_0", "-ctv", "f16"}), {"-ctk q8_0 and -ctv f16: K and V pages have one type"});
    check_refused("gloas-perplexity", test::with_args(base, {"--kv-type", "q4_0", "--kv-page", "16"}), {"--kv-page 16", "--kv-type q4_0"});
    check_refused("gloas-perplexity", test::with_args(base, {"--strategy", "fast"}), {"--strategy", "'fast'"});
    check_refused("gloas-perplexity", test::with_args(base, {"-t", "-2"}), {"-t: expected an integer in [-1, 1024], got '-2'"});
    check_refused("gloas-perplexity", test::with_args(base, {"--bogus"}), {"unknown option '--bogus'"});
    check_refused("gloas-perplexity", test::with_args(base, {"story.txt"}), {"unexpected argument 'story.txt'"});
    check_refused("gloas-perplexity", test::with_args(base, {"--chunks"}), {"--chunks needs a value"});
    check_refused("gloas-perplexity", {"-m", test::require_model("stories260K.bin")}, {"-f TEXT"});
}

TEST_CASE("gloas-kv-trace: every bad command line exits 2 naming the flag") {
    check_refused("gloas-kv-trace", {"--bogus"}, {"unknown option '--bogus'"});
    check_refused("gloas-kv-trace", {"--seed"}, {"--seed needs a value"});
    check_refused("gloas-kv-trace", {"--seed", "x"}, {"--seed", "'x'"});
    check_refused("gloas-kv-trace", {"--requests", "0"}, {"--requests", "'0'"});
    check_refused("gloas-kv-trace", {"--capacity", "64,0"}, {"--capacity", "'64,0'"});
    check_refused("gloas-kv-trace", {"--compressed-share", "2"}, {"--compressed-share", "'2'"});
    check_refused("gloas-kv-trace", {"trace.txt"}, {"unexpected argument 'trace.txt'"});
    const auto r = test::run_tool("gloas-kv-trace", {"--requests", "100", "--capacity", "8,16"});
    CHECK(r.status == 0);
    CHECK(contains(r.out, "| lru"));
}

TEST_CASE("gloas-kv-trace --trace: Mooncake-format JSON lines become chained pages; a bad line is one error naming it") {
    const std::string dir = test::temp_dir("kv-trace");
    // Blocks of 64 tokens, pages of 32: the first two requests share their
    // first two blocks (4 pages), the third is the first one cut to 150
    // tokens (4 full pages, all the first's).
    const std::string trace = dir + "/trace.jsonl";
    test::write_file(trace, "{\"timestamp\": 0, \"input_length\": 192, \"output_length\": 8, \"hash_ids\": [1, 2, 3]}\n"
                            "{\"timestamp\": 5, \"input_length\": 192, \"output_length\": 8, \"hash_ids\": [1, 2, 4]}\n"
                            "\n"
                            "{\"timestamp\": 9, \"input_length\": 150, \"output_length\": 8, \"hash_ids\": [1, 2, 3]}\n");
    auto r = test::run_tool("gloas-kv-trace", {"--trace", trace, "--block-tokens", "64", "--capacity", "4,16"});
    REQUIRE(r.status == 0);
    CHECK(contains(r.out, "3 requests, 16 page lookups, 8 distinct pages, 4 reused by more than one request"));
    CHECK(contains(r.out, "| lru"));
    // Pages spanning blocks (48-token blocks, 32-token pages): [1, 2] and
    // [1, 5] share only the page inside block 1.
    test::write_file(trace, "{\"input_length\": 96, \"hash_ids\": [1, 2]}\n{\"input_length\": 96, \"hash_ids\": [1, 5]}\n");
    r = test::run_tool("gloas-kv-trace", {"--trace", trace, "--block-tokens", "48"});
    REQUIRE(r.status == 0);
    CHECK(contains(r.out, "2 requests, 6 page lookups, 5 distinct pages, 1 reused"));

    test::write_file(trace, "{\"input_length\": 64, \"hash_ids\": [1]}\n{\"input_length\": 64, \"hash_ids\": [\"a\"]}\n");
    r = test::run_tool("gloas-kv-trace", {"--trace", trace, "--block-tokens", "64"});
    CHECK(r.status == 1);
    CHECK(r.err == "gloas-kv-trace: error: " + trace + ":2: 'hash_ids' must be an array of integers\n");
    r = test::run_tool("gloas-kv-trace", {"--trace", dir + "/missing.jsonl", "--block-tokens", "64"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "missing.jsonl: cannot open"));
    check_refused("gloas-kv-trace", {"--trace", trace}, {"--trace needs --block-tokens"});
    check_refused("gloas-kv-trace", {"--block-tokens", "64"}, {"--block-tokens needs --trace"});
}

TEST_CASE("gloas-convert: every bad command line exits 2 naming the flag") {
    const std::string model = test::require_model("stories260K.bin");
    const std::string out = test::temp_dir("convert-flags") + "/x.gguf";
    check_refused("gloas-convert", {model, "-o", out, "--bogus"}, {"unknown option '--bogus'"});
    check_refused("gloas-convert", {model, "-o", out, "--outtype", "q4_0"}, {"--outtype", "'q4_0'"});
    check_refused("gloas-convert", {model, "-o", out, "-t", "0"}, {"-t", "'0'"});
    check_refused("gloas-convert", {model, "-o", out, "--ctx", "x"}, {"--ctx", "'x'"});
    check_refused("gloas-convert", {model, "-o"}, {"-o needs a value"});
    check_refused("gloas-convert", {model, model, "-o", out}, {"more than one input"});
    check_refused("gloas-convert", {"-o", out}, {"no input"});
}
