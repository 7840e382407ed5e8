// Automatic configuration (decoder/autoconfig.h) and random-weight models of a
// given shape (decoder/random-model.h).
#include "decoder/autoconfig.h"
#include "decoder/config.h"
#include "decoder/random-model.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>

using namespace gloas;

namespace {

std::unique_ptr<model> stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

int64_t mtime_ns(const std::string & path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

} // namespace

TEST_CASE("autoconfig: plenty of RAM gives SPEED, an unbounded K/V and one thread per core") {
    auto m = stories();
    auto_config_input in;
    in.ram_available = size_t(16) << 30;
    in.n_cores = 3;
    const auto_config c = choose_config(*m, in);
    CHECK(c.strategy == memory_strategy::SPEED);
    CHECK(c.kv_type == type::F16);
    CHECK(c.sparse_ratio == 1.0f);
    CHECK(c.n_ctx == m->hp.n_ctx_train);
    CHECK(c.page_tokens == 32);
    CHECK(c.kv_ram_bytes == 0);
    CHECK(c.n_threads == 3);
    CHECK(c.n_ubatch == 512);
    CHECK(c.copy_weights);  // a small model beside 16 GiB: in huge pages
    // stories260K: 5 layers x 2 (K, V) x 32 channels x 512 positions x 2 bytes
    CHECK(c.kv_bytes == size_t(5) * 2 * 32 * 512 * 2);
    for (const char * key : {"model:", "strategy: speed", "K/V: f16 pages of 32 tokens", "RAM budget: unbounded",
                             "threads: 3", "ubatch: 512", "weights: copied into memory", "GPU:"})
        CHECK_MESSAGE(c.explanation.find(key) != std::string::npos, key);
}

TEST_CASE("weights are copied by default when they take at most a quarter of the available RAM") {
    CHECK(weights_copied_by_default(100, 400));
    CHECK_FALSE(weights_copied_by_default(101, 400));
    CHECK_FALSE(weights_copied_by_default(1, 0));  // unknown RAM: mapped
}

TEST_CASE("autoconfig: little RAM gives AGGRESSIVE with a bounded K/V budget") {
    auto m = stories();
    auto_config_input in;
    in.n_ctx = 4096;  // 128 pages
    // Half of it holds the weights and a little more: neither f16 nor q8_0 K/V fits.
    in.ram_available = 2 * (m->weight_bytes + 40000);
    const auto_config c = choose_config(*m, in);
    CHECK(c.strategy == memory_strategy::AGGRESSIVE);
    CHECK(c.kv_type == type::Q4_KIVI);
    CHECK(c.sparse_ratio < 1.0f);
    CHECK(!c.copy_weights);  // the weights take half the RAM: mapped, one copy in the page cache
    CHECK(c.explanation.find("weights: mapped from the file") != std::string::npos);
    page_geometry g(32, m->hp);
    CHECK(c.kv_ram_bytes >= 16 * g.page_bytes(type::Q4_0));
    CHECK(c.kv_ram_bytes < c.kv_bytes);
    CHECK(c.explanation.find("the page file holds the other") != std::string::npos);
    CHECK(c.n_threads >= 1);
    CHECK(physical_cores() >= 1);
}

TEST_CASE("random model: written once per shape, loads with that shape, same bytes for the same seed") {
    const std::string dir = test::temp_dir("random-model");
    llama_gguf_hparams hp = test::small_model_hparams("llama", "random", 2);
    const std::string path = cached_random_model(dir, hp);
    const int64_t t0 = mtime_ns(path);
    CHECK(cached_random_model(dir, hp) == path);
    CHECK(mtime_ns(path) == t0);  // not written again

    auto m = model::load({path, ""});
    CHECK(m->hp.n_embd == 64);
    CHECK(m->hp.n_head == 4);
    CHECK(m->hp.n_head_kv == 2);
    CHECK(m->hp.n_layer == 2);
    CHECK(m->hp.n_ff == 96);
    CHECK(m->hp.n_vocab == 400);
    CHECK(m->weight_type == type::Q8_0);

    hp.n_layer = 3;  // another shape: another file
    const std::string other = cached_random_model(dir, hp);
    CHECK(other != path);
    hp.n_layer = 2;
    random_model_params p;
    p.hp = hp;
    write_random_model(dir + "/again.gguf", p);
    CHECK(test::read_file(dir + "/again.gguf") == test::read_file(path));

    hp.n_embd = 60;  // not a multiple of the Q8_0 block
    CHECK_THROWS_WITH(random_model_check(hp, true),
                      doctest::Contains("must be multiples of 32 for weight type q8_0"));
}

TEST_CASE("random model: the shape of a configuration file's ultra_decoder") {
    const run_config cfg = config_parse("gloas:\n  ultra_decoder:\n    d_model: 64\n    n_heads: 4\n    n_layers: 1\n"
                                        "    d_ff: 128\n    vocab_size: 512\n    max_sequence_length: 64\n",
                                        "shape.yaml");
    const std::string path = cached_random_model(test::temp_dir("random-config"), config_random_model_shape(cfg));
    auto m = model::load({path, ""});
    CHECK(m->hp.n_embd == 64);
    CHECK(m->hp.n_layer == 1);
    CHECK(m->hp.n_ff == 128);
    CHECK(m->hp.n_vocab == 512);
    CHECK_NOTHROW(config_check_model(cfg, m->hp, path));
}

TEST_CASE("gloas --auto --explain prints the choices and exits; flags override them") {
    const std::string model = test::require_model("stories260K.bin");
    auto r = test::run_tool("gloas", {"-m", model, "--auto", "--explain"});
    REQUIRE(r.status == 0);
    for (const char * key : {"strategy: ", "K/V: ", "RAM budget: ", "threads: ", "ubatch: ", "settings: --strategy "})
        CHECK_MESSAGE(r.out.find(key) != std::string::npos, key);
    CHECK(r.out.find("Once upon") == std::string::npos);  // nothing generated

    r = test::run_tool("gloas", {"-m", model, "--auto", "--explain", "--strategy", "aggressive", "-t", "1", "-c", "256"});
    REQUIRE(r.status == 0);
    CHECK(r.out.find("--strategy aggressive --kv-type q4_kivi") != std::string::npos);
    CHECK(r.out.find("-c 256 ") != std::string::npos);
    CHECK(r.out.find(" -t 1 --no-mmap\n") != std::string::npos);  // a small model: its weights in memory

    // --auto without --explain generates, saying what it chose
    r = test::run_tool("gloas", {"-m", model, "--auto", "-n", "8", "--temp", "0", "--kv-dir", "none"});
    REQUIRE(r.status == 0);
    CHECK(r.err.find("gloas: auto: ") != std::string::npos);
    CHECK(r.err.find("weights in memory") != std::string::npos);
    CHECK(!r.out.empty());
}

TEST_CASE("gloas-bench --config benchmarks a random-weight decoder of the file's shape") {
    const std::string dir = test::temp_dir("bench-config");
    test::write_file(dir + "/shape.yaml", "gloas:\n  ultra_kv_cache:\n    cache_dtype: int8\n  ultra_decoder:\n"
                                          "    d_model: 64\n    n_heads: 4\n    n_layers: 2\n    d_ff: 128\n"
                                          "    vocab_size: 512\n    max_sequence_length: 128\n");
    ::setenv("XDG_CACHE_HOME", dir.c_str(), 1);
    auto r = test::run_tool("gloas-bench", {"--config", dir + "/shape.yaml", "-p", "8", "-n", "4", "-r", "1", "-o", "csv"});
    ::unsetenv("XDG_CACHE_HOME");
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(r.err.find("random-weight model of") != std::string::npos);
    CHECK(r.out.find("config (q8_0)") != std::string::npos);
    CHECK(r.out.find("\"pp8\"") != std::string::npos);
    CHECK(r.out.find("\"tg4\"") != std::string::npos);
    struct stat st;
    CHECK(::stat((dir + "/gloas/models").c_str(), &st) == 0);

    // A loaded model must match the file's shape.
    r = test::run_tool("gloas-bench", {"--config", dir + "/shape.yaml", "-m", test::require_model("stories260K.bin"),
                                       "-p", "8", "-n", "0", "-r", "1"});
    CHECK(r.status != 0);
    CHECK(r.err.find("shape.yaml:6: ultra_decoder.n_heads: 4, but the model") != std::string::npos);
}
