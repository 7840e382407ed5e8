// The YAML subset parser and the run configuration: the specification's file
// loads as it is, examples/gloas.yaml gives the same settings as its
// command-line flags, every kind of bad input fails on the right line, and
// the model's shape is checked.
#include "decoder/config.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "decoder/yaml.h"
#include "kvcache/page.h"
#include "tensor/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace gloas;

namespace {

// The message of the gloas::error f throws; "" (and a failed check) if none.
template <class F> std::string error_of(F && f) {
    try {
        f();
    } catch (const error & e) {
        return e.what();
    }
    FAIL_CHECK("no error thrown");
    return "";
}

std::string yaml_error(const std::string & text) {
    return error_of([&] { yaml_parse(text, "t.yaml"); });
}

std::string config_error(const std::string & text) {
    return error_of([&] { config_parse(text, "cfg.yaml"); });
}

bool starts_with(const std::string & s, const std::string & p) { return s.compare(0, p.size(), p) == 0; }

bool has_warning(const run_config & c, const std::string & part) {
    for (const auto & w : c.warnings)
        if (w.find(part) != std::string::npos) return true;
    return false;
}

// The specification's file as it is (../shared/spec/gloas-config.yaml),
// kept here so the test runs where the shared folder is not.
const char * SPEC = R"(# The configuration shape from the project's specification. gloas must accept
# this file as it is (see DESIGN.md, "tools/"), mapping every key to a real
# setting; training-only keys are accepted with a warning.
gloas:
  ultra_kv_cache:
    max_cache_size: 8192
    cache_chunk_size: 512
    max_sequence_length: 4096
    cache_dtype: float16
    use_compression: true
    compression_ratio: 0.3
    use_memory_mapping: true
    memory_layout: hierarchical
    cache_strategy: adaptive
    use_async_loading: true
    use_parallel_processing: true
    num_workers: 4
    use_cuda_streams: true
    use_quantization: true
    quantization_bits: 8
    use_sparse_attention: true
    sparse_attention_ratio: 0.1
    
  ultra_decoder:
    d_model: 512
    n_heads: 8
    n_layers: 6
    d_ff: 2048
    vocab_size: 50000
    max_sequence_length: 4096
    use_sparse_attention: true
    sparse_attention_ratio: 0.1
    memory_strategy: balanced
    use_gradient_checkpointing: true
    use_activation_checkpointing: true
    use_mixed_precision: true
    use_parallel_processing: true
    num_workers: 4
    use_cuda_streams: true
    use_async_processing: true
    use_quantization: true
    quantization_bits: 8
    use_compression: true
    compression_ratio: 0.3
    
  cache_strategies:
    lru: true
    lfu: true
    fifo: true
    adaptive: true
    compressed: true
    
  memory_strategies:
    aggressive: true
    balanced: true
    speed: true
)";

void check_spec_settings(const run_config & c) {
    CHECK(c.capacity.u == kv_capacity::unit::TOKENS);
    CHECK(c.capacity.n == 8192);
    CHECK(c.ctx.n_ubatch == 512);          // cache_chunk_size > 64: prefill chunk
    CHECK(c.ctx.kv.page_tokens == 32);     // unchanged
    CHECK(c.ctx.n_ctx == 4096);
    CHECK(c.ctx.kv.kv_type == type::Q8_0); // use_quantization wins over cache_dtype
    CHECK(c.ctx.kv.compressed_share == doctest::Approx(0.3));
    CHECK(c.kv_file);
    CHECK(c.ctx.kv.policy == evict_policy::ADAPTIVE);
    CHECK(c.prefetch);
    CHECK(c.ctx.n_threads == 4);
    CHECK(c.use_cuda_streams);
    CHECK(c.use_sparse_attention);
    CHECK(c.sparse_ratio == doctest::Approx(0.1));
    CHECK(c.shape.d_model == 512);
    CHECK(c.shape.n_heads == 8);
    CHECK(c.shape.n_layers == 6);
    CHECK(c.shape.d_ff == 2048);
    CHECK(c.shape.vocab_size == 50000);
    CHECK(c.strategy == "balanced");
    CHECK(c.async_writeback);
    CHECK(c.weight_type == type::Q8_0);
    for (bool b : c.policy_enabled) CHECK(b);
    for (bool b : c.strategy_enabled) CHECK(b);
}

// Every setting of a run_config (warnings and path aside).
void check_same_settings(const run_config & a, const run_config & b) {
    CHECK(a.ctx.n_ctx == b.ctx.n_ctx);
    CHECK(a.ctx.n_ubatch == b.ctx.n_ubatch);
    CHECK(a.ctx.n_threads == b.ctx.n_threads);
    CHECK(a.ctx.kv.dir == b.ctx.kv.dir);
    CHECK(a.ctx.kv.kv_type == b.ctx.kv.kv_type);
    CHECK(a.ctx.kv.page_tokens == b.ctx.kv.page_tokens);
    CHECK(a.ctx.kv.capacity_bytes == b.ctx.kv.capacity_bytes);
    CHECK(a.ctx.kv.policy == b.ctx.kv.policy);
    CHECK(a.ctx.kv.compressed_share == b.ctx.kv.compressed_share);
    CHECK(a.kv_file == b.kv_file);
    CHECK(a.prefetch == b.prefetch);
    CHECK(a.async_writeback == b.async_writeback);
    CHECK(a.use_cuda_streams == b.use_cuda_streams);
    CHECK(a.strategy == b.strategy);
    CHECK(a.use_sparse_attention == b.use_sparse_attention);
    CHECK(a.sparse_ratio == b.sparse_ratio);
    CHECK(a.shape.d_model == b.shape.d_model);
    CHECK(a.shape.n_heads == b.shape.n_heads);
    CHECK(a.shape.n_layers == b.shape.n_layers);
    CHECK(a.shape.d_ff == b.shape.d_ff);
    CHECK(a.shape.vocab_size == b.shape.vocab_size);
    CHECK(a.weight_type == b.weight_type);
    for (int i = 0; i < N_EVICT_POLICIES; ++i) CHECK(a.policy_enabled[i] == b.policy_enabled[i]);
    for (int i = 0; i < N_MEMORY_STRATEGIES; ++i) CHECK(a.strategy_enabled[i] == b.strategy_enabled[i]);
}

} // namespace

TEST_CASE("yaml: mappings, sequences, flow collections, scalars") {
    const yaml_node n = yaml_parse(
        "# comment\n"
        "---\n"
        "a:\n"
        "  b: 1        # trailing comment\n"
        "  c:\n"
        "    d: -2.5e3\n"
        "  e: \"x: #y\\t\\u00e9\\\"\"\n"
        "  'f g': 'it''s'\n"
        "\n"
        "list:\n"
        "- one\n"
        "- name: two\n"
        "  size: 2\n"
        "-\n"
        "  - nested\n"
        "indented:\n"
        "  - [1, [2, 3], {k: v, q: \"w\"}, ]\n"
        "empty:\n"
        "tilde: ~\n"
        "url: http://x.org/a#b\r\n"
        "flags: [true, False, NULL]\n",
        "t.yaml");
    REQUIRE(n.kind == yaml_kind::MAP);
    REQUIRE(n.entries.size() == 7);
    const yaml_node * a = n.find("a");
    REQUIRE(a);
    CHECK(a->line == 4);
    CHECK(a->find("b")->as_int() == 1);
    CHECK(a->find("c")->find("d")->as_float() == doctest::Approx(-2500.0));
    CHECK(a->find("c")->find("d")->as_int() == std::nullopt);
    CHECK(a->find("e")->text == "x: #y\t\xc3\xa9\"");
    CHECK(a->find("e")->quoted);
    CHECK(a->find("f g")->text == "it's");
    const yaml_node * l = n.find("list");
    REQUIRE(l);
    REQUIRE(l->kind == yaml_kind::SEQ);
    REQUIRE(l->items.size() == 3);
    CHECK(l->items[0].text == "one");
    CHECK(l->items[1].find("name")->text == "two");
    CHECK(l->items[1].find("size")->as_int() == 2);
    CHECK(l->items[1].line == 12);
    REQUIRE(l->items[2].kind == yaml_kind::SEQ);
    CHECK(l->items[2].items[0].text == "nested");
    const yaml_node & f = n.find("indented")->items.at(0);
    REQUIRE(f.kind == yaml_kind::SEQ);
    REQUIRE(f.items.size() == 3);
    CHECK(f.items[1].items[1].as_int() == 3);
    CHECK(f.items[2].find("k")->text == "v");
    CHECK(f.items[2].find("q")->quoted);
    CHECK(n.find("empty")->kind == yaml_kind::NUL);
    CHECK(n.find("empty")->line == 18);
    CHECK(n.find("tilde")->kind == yaml_kind::NUL);
    CHECK(n.find("url")->text == "http://x.org/a#b");
    const yaml_node * fl = n.find("flags");
    CHECK(fl->items[0].as_bool() == true);
    CHECK(fl->items[1].as_bool() == false);
    CHECK(fl->items[2].kind == yaml_kind::NUL);
    CHECK(n.find("missing") == nullptr);

    CHECK(yaml_parse("", "t.yaml").kind == yaml_kind::NUL);
    CHECK(yaml_parse("# only a comment\n\n", "t.yaml").kind == yaml_kind::NUL);
    CHECK(yaml_parse("\xef\xbb\xbfk: v\n", "t.yaml").find("k")->text == "v");
}

TEST_CASE("yaml: typed reads") {
    auto scalar = [](const std::string & v) { return yaml_parse("k: " + v, "t.yaml").entries.at(0).value; };
    CHECK(scalar("true").as_bool() == true);
    CHECK(scalar("TRUE").as_bool() == true);
    CHECK(scalar("yes").as_bool() == std::nullopt);
    CHECK(scalar("\"true\"").as_bool() == std::nullopt);
    CHECK(scalar("+42").as_int() == 42);
    CHECK(scalar("-7").as_int() == -7);
    CHECK(scalar("99999999999999999999").as_int() == std::nullopt);
    CHECK(scalar("0x10").as_int() == std::nullopt);
    CHECK(scalar("'8'").as_int() == std::nullopt);
    CHECK(scalar("4").as_float() == doctest::Approx(4.0));
    CHECK(scalar(".5").as_float() == doctest::Approx(0.5));
    CHECK(scalar("1e400").as_float() == std::nullopt);
    CHECK(scalar("inf").as_float() == std::nullopt);
    CHECK(scalar("nan").as_float() == std::nullopt);
    CHECK(scalar("1e").as_float() == std::nullopt);
    CHECK(scalar("four").describe() == "'four'");
    CHECK(scalar("\"4\"").describe() == "the string \"4\"");
}

TEST_CASE("yaml: refused input names the line and the feature") {
    CHECK(yaml_error("a:\n\tb: 1\n") == "t.yaml:2: tab character in indentation (indent with spaces)");
    CHECK(yaml_error("a: 1\na: 2\n") == "t.yaml:2: duplicate key 'a' (first at line 1)");
    CHECK(yaml_error("a:\n  b: 1\n   c: 2\n") == "t.yaml:3: bad indentation: 3 spaces, expected 2");
    CHECK(yaml_error("a:\n    b: 1\n  c: 2\n") == "t.yaml:3: bad indentation: 2 spaces, but the levels around are indented 0 and 4");
    CHECK(starts_with(yaml_error("a: 1\n  b: 2\n"), "t.yaml:2: bad indentation"));
    CHECK(yaml_error("a: &x 1\n") == "t.yaml:1: anchors ('&') are not supported");
    CHECK(yaml_error("a: 1\nb: *x\n") == "t.yaml:2: aliases ('*') are not supported");
    CHECK(yaml_error("a: !!str 1\n") == "t.yaml:1: tags ('!') are not supported");
    CHECK(yaml_error("a: |\n  text\n") == "t.yaml:1: block scalars ('|', '>') are not supported");
    CHECK(yaml_error("a: 1\n---\nb: 2\n") == "t.yaml:2: multiple documents ('---') are not supported");
    CHECK(yaml_error("a: 1\n...\n") == "t.yaml:2: document end markers ('...') are not supported");
    CHECK(yaml_error("%YAML 1.2\na: 1\n") == "t.yaml:1: directives (%YAML, %TAG) are not supported");
    CHECK(yaml_error("? a\n: b\n") == "t.yaml:1: complex keys ('? ') are not supported");
    CHECK(yaml_error("<<: {a: 1}\n") == "t.yaml:1: merge keys ('<<') are not supported");
    CHECK(starts_with(yaml_error("a: \"open\n"), "t.yaml:1: unterminated quoted string"));
    CHECK(starts_with(yaml_error("a: [1, 2\n"), "t.yaml:1: unterminated flow sequence"));
    CHECK(starts_with(yaml_error("a: {b: 1\n"), "t.yaml:1: unterminated flow mapping"));
    CHECK(starts_with(yaml_error("a: [1,, 2]\n"), "t.yaml:1: empty entry"));
    CHECK(starts_with(yaml_error("a: \"x\" y\n"), "t.yaml:1: unexpected text after the value"));
    CHECK(starts_with(yaml_error("a: b: c\n"), "t.yaml:1: a mapping ('key: value') cannot start inside a value"));
    CHECK(starts_with(yaml_error("a: 1\n- b\n"), "t.yaml:2: a sequence item"));
    CHECK(starts_with(yaml_error("a: 1\njust text\n"), "t.yaml:2: expected 'key: value'"));
    CHECK(starts_with(yaml_error("a: \"\\q\"\n"), "t.yaml:1: unknown escape"));
    CHECK(starts_with(yaml_error("a: \"\\ud800\"\n"), "t.yaml:1: escape U+D800"));
    CHECK(starts_with(yaml_error("a: 1\x01\n"), "t.yaml:1: control character 0x01"));
    CHECK(starts_with(yaml_error("a: {b: 1, b: 2}\n"), "t.yaml:1: duplicate key 'b'"));
    CHECK(starts_with(yaml_error(std::string(100, '[') + std::string(100, ']') + "\n"), "t.yaml:1: nesting deeper than 64"));
    std::string deep;
    for (int i = 0; i < 100; ++i) deep += std::string(size_t(i), ' ') + "k:\n";
    CHECK(starts_with(yaml_error(deep), "t.yaml:"));
    CHECK(yaml_error(deep).find("nesting deeper than 64") != std::string::npos);
}

TEST_CASE("config: the specification's file loads as it is") {
    const run_config c = config_parse(SPEC, "gloas-config.yaml");
    check_spec_settings(c);
    CHECK(has_warning(c, "gloas-config.yaml:34: ultra_decoder.use_gradient_checkpointing: training only"));
    CHECK(has_warning(c, "gloas-config.yaml:35: ultra_decoder.use_activation_checkpointing: training only"));
    // The shared copy, when this checkout has the shared folder beside it.
    const std::string shared = std::string(GLOAS_SOURCE_DIR) + "/../shared/spec/gloas-config.yaml";
    if (FILE * f = std::fopen(shared.c_str(), "rb")) {
        std::fclose(f);
        const run_config s = config_load(shared);
        check_spec_settings(s);
        CHECK(s.warnings.size() == c.warnings.size());
        CHECK(test::read_file(shared) == SPEC);
    } else {
        MESSAGE("not found (checked the built-in copy only): " << shared);
    }

    // Without a model the shape defines a random-weight one.
    const llama_gguf_hparams hp = config_random_model_shape(c);
    CHECK(hp.n_embd == 512);
    CHECK(hp.n_head == 8);
    CHECK(hp.n_head_kv == 8);
    CHECK(hp.head_dim == 64);
    CHECK(hp.n_layer == 6);
    CHECK(hp.n_ff == 2048);
    CHECK(hp.n_vocab == 50000);
    CHECK(hp.n_ctx == 4096);
    CHECK(hp.wtype == type::Q8_0);
}

TEST_CASE("config: examples/gloas.yaml gives the same settings as the equivalent flags") {
    const std::string path = std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml";
    const run_config y = config_load(path);
    CHECK(y.warnings.empty());

    // What tools/gloas receives instead of --config examples/gloas.yaml (the
    // list in the file's header).
    const std::vector<std::string> args = {
        "-c", "512", "--kv-page", "32", "--kv-type", "q8_0", "--kv-capacity", "128p", "--kv-policy", "compressed",
        "--kv-compressed-share", "0.25", "-t", "2", "--strategy", "balanced", "--sparse-ratio", "0.25"};
    run_config f;
    for (size_t i = 0; i < args.size();) {
        const size_t used = config_apply_flag(f, args, i);
        REQUIRE_MESSAGE(used > 0, args[i]);
        i += used;
    }

    const std::string mp = test::require_model("stories260K.bin");
    const auto m = model::load({mp, ""});
    config_check_model(y, m->hp, "stories260K.bin");  // the example's shape is stories260K's
    const context_params a = config_context_params(y, m->hp, "/tmp/kv");
    const context_params b = config_context_params(f, m->hp, "/tmp/kv");
    CHECK(a.n_ctx == b.n_ctx);
    CHECK(a.n_ubatch == b.n_ubatch);
    CHECK(a.n_threads == b.n_threads);
    CHECK(a.kv.kv_type == b.kv.kv_type);
    CHECK(a.kv.page_tokens == b.kv.page_tokens);
    CHECK(a.kv.capacity_bytes == b.kv.capacity_bytes);
    CHECK(a.kv.policy == b.kv.policy);
    CHECK(a.kv.compressed_share == doctest::Approx(b.kv.compressed_share));
    CHECK(a.kv.dir == b.kv.dir);
    CHECK(y.prefetch == f.prefetch);
    CHECK(y.async_writeback == f.async_writeback);
    CHECK(y.use_cuda_streams == f.use_cuda_streams);
    CHECK(y.strategy == f.strategy);
    CHECK(y.use_sparse_attention == f.use_sparse_attention);
    CHECK(y.sparse_ratio == doctest::Approx(f.sparse_ratio));
    // ... and the values themselves.
    CHECK(a.n_ctx == 512);
    CHECK(a.n_threads == 2);
    CHECK(a.kv.kv_type == type::Q8_0);
    CHECK(a.kv.policy == evict_policy::COMPRESSED);
    CHECK(a.kv.dir == "/tmp/kv");
    page_geometry g{32, m->hp.n_layer, m->hp.n_head_kv, m->hp.head_dim};
    CHECK(a.kv.capacity_bytes == 128 * g.page_bytes(type::Q8_0));
    CHECK(y.weight_type == type::F16);
    CHECK_FALSE(y.policy_enabled[int(evict_policy::FIFO)]);
    CHECK_FALSE(y.strategy_enabled[memory_strategy_index("aggressive")]);

    // Flags given after the file override it; disabled choices stay refused.
    run_config o = y;
    const std::vector<std::string> over = {"--kv-type", "q4_0", "-c", "256", "--kv-dir", "none", "--kv-capacity", "1000t"};
    for (size_t i = 0; i < over.size(); i += config_apply_flag(o, over, i)) {}
    const context_params c = config_context_params(o, m->hp, "/tmp/kv");
    CHECK(c.kv.kv_type == type::Q4_0);
    CHECK(c.n_ctx == 256);
    CHECK(c.kv.dir.empty());
    CHECK(c.kv.capacity_bytes == 32 * g.page_bytes(type::Q4_0));  // ceil(1000 / 32) pages
    CHECK(c.n_threads == 2);
    const std::vector<std::string> fifo = {"--kv-policy", "fifo"};
    CHECK(error_of([&] { config_apply_flag(o, fifo, 0); }).find("'fifo' is disabled by cache_strategies") !=
          std::string::npos);
    const std::vector<std::string> aggr = {"--strategy", "aggressive"};
    CHECK(error_of([&] { config_apply_flag(o, aggr, 0); }).find("disabled by memory_strategies") != std::string::npos);
    const std::vector<std::string> unknown = {"-p", "hello"};
    CHECK(config_apply_flag(o, unknown, 0) == 0);

    // A model-shape mismatch names the key, the configured and the model's value.
    run_config bad = config_parse("gloas:\n  ultra_decoder:\n    d_model: 64\n    n_layers: 6\n", "cfg.yaml");
    CHECK(error_of([&] { config_check_model(bad, m->hp, "stories260K.bin"); }) ==
          "cfg.yaml:4: ultra_decoder.n_layers: 6, but the model stories260K.bin has 5");
}

TEST_CASE("config: bad files fail on the right line") {
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    max_cache_size: 10\n    cache_sizee: 3\n") ==
          "cfg.yaml:4: ultra_kv_cache.cache_sizee: unknown key (known keys: max_cache_size, cache_chunk_size, "
          "max_sequence_length, cache_dtype, use_compression, compression_ratio, use_memory_mapping, memory_layout, "
          "cache_strategy, use_async_loading, use_sparse_attention, sparse_attention_ratio, use_parallel_processing, "
          "num_workers, use_cuda_streams, use_quantization, quantization_bits)");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n\n\n\n\n    cache_dtype: float8\n") ==
          "cfg.yaml:7: ultra_kv_cache.cache_dtype: expected one of float32, float16, bfloat16, int8, int4, got 'float8'");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: four\n") ==
          "cfg.yaml:3: ultra_kv_cache.num_workers: expected an integer, got 'four'");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: \"4\"\n") ==
          "cfg.yaml:3: ultra_kv_cache.num_workers: expected an integer, got the string \"4\"");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    use_compression: yes\n") ==
          "cfg.yaml:3: ultra_kv_cache.use_compression: expected true or false, got 'yes'");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    compression_ratio: [1]\n") ==
          "cfg.yaml:3: ultra_kv_cache.compression_ratio: expected a number, got a sequence");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: 5000\n") ==
          "cfg.yaml:3: ultra_kv_cache.num_workers: 5000 is out of range [0, 1024]");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    sparse_attention_ratio: 1.5\n") ==
          "cfg.yaml:3: ultra_kv_cache.sparse_attention_ratio: 1.5 is out of range (0, 1]");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    use_quantization: true\n    quantization_bits: 16\n") ==
          "cfg.yaml:4: ultra_kv_cache.quantization_bits: expected 4 or 8, got 16");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 48\n    cache_dtype: int8\n") ==
          "cfg.yaml:3: ultra_kv_cache.cache_chunk_size: q8_0 pages need a page size (cache_chunk_size) that is a "
          "multiple of 32, got 48");
    CHECK(config_error("gloas:\n  ultra_decoder:\n    d_modle: 64\n").find("cfg.yaml:3: ultra_decoder.d_modle: unknown key") == 0);
    CHECK(config_error("gloas:\n  ultra_decoder:\n    cache_dtype: int8\n").find("cfg.yaml:3: ultra_decoder.cache_dtype: unknown key") == 0);
    CHECK(config_error("gloas:\n  ultra_cache:\n    a: 1\n").find("cfg.yaml:2: gloas.ultra_cache: unknown section") == 0);
    CHECK(config_error("other: 1\n") == "cfg.yaml:1: other: unknown key (the configuration is under 'gloas:')");
    CHECK(config_error("gloas:\n  cache_strategies:\n    mru: true\n").find("cfg.yaml:3: cache_strategies.mru: unknown key") == 0);
    CHECK(config_error("gloas:\n  ultra_kv_cache: 3\n") == "cfg.yaml:2: ultra_kv_cache: expected a mapping, got '3' (an integer)");
    // The parser's errors (indentation, tabs, duplicates) carry the line too.
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: 4\n   max_cache_size: 8\n") ==
          "cfg.yaml:4: bad indentation: 3 spaces, but the levels around are indented 2 and 4");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n\tnum_workers: 4\n") ==
          "cfg.yaml:3: tab character in indentation (indent with spaces)");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: 4\n    num_workers: 8\n") ==
          "cfg.yaml:4: duplicate key 'num_workers' (first at line 3)");
    CHECK(config_error("") == "cfg.yaml: empty configuration (expected 'gloas:' at the top)");
    CHECK(error_of([] { config_load("/nonexistent/cfg.yaml"); }).find("/nonexistent/cfg.yaml: cannot open") == 0);
}

TEST_CASE("config: choices must be enabled; sections must agree") {
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    cache_strategy: lfu\n  cache_strategies:\n    lfu: false\n") ==
          "cfg.yaml:3: ultra_kv_cache.cache_strategy: 'lfu' is disabled in cache_strategies (line 4)");
    CHECK(config_error("gloas:\n  ultra_decoder:\n    memory_strategy: speed\n  memory_strategies:\n    speed: false\n") ==
          "cfg.yaml:3: ultra_decoder.memory_strategy: 'speed' is disabled in memory_strategies (line 4)");
    CHECK(config_error("gloas:\n  cache_strategies:\n    lru: false\n    lfu: false\n    fifo: false\n    adaptive: false\n"
                       "    compressed: false\n") ==
          "cfg.yaml:2: cache_strategies: every eviction policy is disabled; enable at least one");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: 4\n  ultra_decoder:\n    num_workers: 8\n") ==
          "cfg.yaml:5: ultra_decoder.num_workers: 8 disagrees with ultra_kv_cache.num_workers: 4 (line 3)");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    use_compression: false\n    cache_strategy: compressed\n") ==
          "cfg.yaml:4: ultra_kv_cache.cache_strategy: 'compressed' needs use_compression: true (line 3 says false)");

    // Defaults follow what is enabled; use_compression alone picks the compressed policy.
    run_config c = config_parse("gloas:\n  cache_strategies:\n    lru: false\n", "cfg.yaml");
    CHECK(c.ctx.kv.policy == evict_policy::LFU);
    c = config_parse("gloas:\n  ultra_kv_cache:\n    use_compression: true\n    compression_ratio: 0.5\n", "cfg.yaml");
    CHECK(c.ctx.kv.policy == evict_policy::COMPRESSED);
    CHECK(c.ctx.kv.compressed_share == doctest::Approx(0.5));
    c = config_parse("gloas:\n", "cfg.yaml");
    const run_config d;
    CHECK(c.ctx.kv.policy == d.ctx.kv.policy);
    CHECK(c.ctx.kv.kv_type == d.ctx.kv.kv_type);
    CHECK(c.ctx.n_ctx == d.ctx.n_ctx);
    CHECK(c.capacity.u == kv_capacity::unit::DEFAULT);
    CHECK(c.warnings.empty());

    // Keys that change less than they seem say so.
    c = config_parse("gloas:\n  ultra_kv_cache:\n    cache_dtype: bfloat16\n    use_memory_mapping: true\n"
                     "    memory_layout: flat\n    use_parallel_processing: false\n    num_workers: 8\n",
                     "cfg.yaml");
    CHECK(c.ctx.kv.kv_type == type::F16);
    CHECK_FALSE(c.kv_file);
    CHECK(c.ctx.n_threads == 1);
    CHECK(has_warning(c, "cfg.yaml:3: ultra_kv_cache.cache_dtype: K/V pages have no bfloat16 type"));
    CHECK(has_warning(c, "cfg.yaml:4: ultra_kv_cache.use_memory_mapping: no page file with memory_layout: flat"));
    CHECK(has_warning(c, "cfg.yaml:7: num_workers: ignored"));
    c = config_parse("gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 64\n    cache_dtype: int4\n", "cfg.yaml");
    CHECK(c.ctx.kv.page_tokens == 64);
    CHECK(c.ctx.kv.kv_type == type::Q4_0);
    CHECK(c.ctx.n_ubatch == d.ctx.n_ubatch);
}

TEST_CASE("config: random-weight model shapes") {
    auto shape = [](const std::string & dec) { return config_parse("gloas:\n  ultra_decoder:\n" + dec, "cfg.yaml"); };
    CHECK(error_of([&] { config_random_model_shape(shape("    d_model: 64\n    n_heads: 4\n")); }) ==
          "cfg.yaml: ultra_decoder.n_layers is needed to make a random-weight model (no model given)");
    CHECK(error_of([&] { config_random_model_shape(shape("    d_model: 64\n    n_heads: 5\n    n_layers: 2\n")); }) ==
          "cfg.yaml:4: ultra_decoder.n_heads: d_model 64 is not a multiple of n_heads 5");
    CHECK(error_of([&] {
              config_random_model_shape(shape("    d_model: 80\n    n_heads: 4\n    n_layers: 2\n    use_quantization: true\n"));
          }) == "cfg.yaml:3: ultra_decoder.d_model: 80 is not a multiple of 32, the block of q8_0 weights");
    const llama_gguf_hparams hp = config_random_model_shape(shape("    d_model: 64\n    n_heads: 4\n    n_layers: 2\n"));
    CHECK(hp.n_ff == 256);
    CHECK(hp.n_vocab == 32000);
    CHECK(hp.n_ctx == 2048);
    CHECK(hp.wtype == type::F16);
}

TEST_CASE("config: config_to_yaml writes settings that read back the same") {
    const std::string example = std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml";
    run_config from_flags;
    const std::vector<std::string> args = {"-c", "1024", "-ub", "128", "--kv-type", "f32", "--kv-capacity", "10p",
                                           "--kv-policy", "lfu", "-t", "1", "--kv-compressed-share", "0.7",
                                           "--strategy", "speed"};
    for (size_t i = 0; i < args.size(); i += config_apply_flag(from_flags, args, i)) {}
    // Keys without a flag (they have no effect in this build) still read back.
    from_flags.prefetch = false;
    from_flags.async_writeback = false;
    from_flags.use_cuda_streams = true;
    const run_config cases[] = {config_parse(SPEC, "spec.yaml"), config_load(example), run_config(), from_flags};
    for (const run_config & c : cases) {
        const std::string y = config_to_yaml(c);
        INFO(y);
        const run_config back = config_parse(y, "back.yaml");
        CHECK(back.warnings.empty());
        const hparams hp{512, 512, 64, 172, 8, 4, 5, 8, 8, 1e-5f, 10000.0f};
        CHECK(config_context_params(back, hp).kv.capacity_bytes == config_context_params(c, hp).kv.capacity_bytes);
        check_same_settings(back, c);
        CHECK(config_to_yaml(back) == y);
    }
    // What the specification's keys cannot hold is said in a comment.
    run_config both = from_flags;
    const std::vector<std::string> page = {"--kv-page", "64", "--kv-capacity", "1G"};
    for (size_t i = 0; i < page.size(); i += config_apply_flag(both, page, i)) {}
    const std::string y = config_to_yaml(both);
    CHECK(y.find("    cache_chunk_size: 64\n    # prefill chunk 128 tokens (-ub 128)\n") != std::string::npos);
    CHECK(y.find("# max_cache_size not set: 1073741824 bytes of pages (--kv-capacity 1073741824)") != std::string::npos);
}

// ---- The shared option table (decoder/options.h) ----

namespace {

std::string cli_error_of(run_config & cfg, const std::vector<std::string> & args) {
    try {
        for (size_t i = 0; i < args.size();) {
            const size_t used = config_apply_flag(cfg, args, i);
            if (used == 0) return "not a shared flag: " + args[i];
            i += used;
        }
        config_flags_check(cfg);
    } catch (const cli_error & e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("options: every row is reachable by each spelling, ids match their index, help lists every spelling") {
    std::string help;
    for (const char * g : {OPT_GROUP_CONTEXT, OPT_GROUP_KV, OPT_GROUP_SAMPLING, OPT_GROUP_MODEL})
        help += options_usage(SHARED_OPTIONS, N_SHARED_OPTS, g);
    for (int k = 0; k < N_SHARED_OPTS; ++k) {
        const option_def & d = SHARED_OPTIONS[k];
        INFO(d.names);
        CHECK(d.id == k);
        CHECK(std::string(d.help).size() > 10);
        std::string names = d.names;
        for (size_t at = 0; at <= names.size();) {
            size_t e = names.find('|', at);
            if (e == std::string::npos) e = names.size();
            const std::string s = names.substr(at, e - at);
            CHECK(option_find(SHARED_OPTIONS, N_SHARED_OPTS, s) == &d);
            CHECK(help.find(s) != std::string::npos);
            at = e + 1;
        }
    }
    CHECK(option_find(SHARED_OPTIONS, N_SHARED_OPTS, "--no-such") == nullptr);
    // Every help line fits in 80 columns.
    for (size_t at = 0, e; (e = help.find('\n', at)) != std::string::npos; at = e + 1) CHECK(e - at < 80);
}

TEST_CASE("options: values are checked by kind and range; errors name the spelling typed") {
    run_config c;
    CHECK(cli_error_of(c, {"--ctx-size", "4096", "-ub", "64", "-b", "32", "-t", "-1", "--temp", "0", "--seed", "-1",
                           "--repeat-last-n", "-1", "--presence-penalty", "-0.5", "--frequency-penalty", "1",
                           "-ctk", "q8_0", "-ctv", "q8_0", "--kv-ram", "0", "--kv-read", "copy", "-ngl", "33",
                           "--mlock", "--no-mmap", "--ctx-slide"}) == "");
    CHECK(c.ctx.n_ctx == 4096);
    CHECK(c.ctx.n_ubatch == 64);
    CHECK(c.n_batch == 32);
    CHECK(c.ctx.n_threads == 0);
    CHECK(c.sampling.temp == 0.0f);
    CHECK(c.sampling.seed == SEED_RANDOM);
    CHECK(c.sampling.presence_penalty == -0.5f);
    CHECK(c.sampling.frequency_penalty == 1.0f);
    CHECK(c.ctx.kv.kv_type == type::Q8_0);
    CHECK(c.kv_type_v == type::Q8_0);
    CHECK(c.kv_ram.u == kv_capacity::unit::BYTES);
    CHECK(c.kv_ram.n == 0);
    CHECK(c.ctx.kv.read_copy);
    CHECK(c.n_gpu_layers == 33);
    CHECK(c.mlock);
    CHECK(c.no_mmap);
    CHECK(c.ctx.slide.on);
    CHECK(c.flag_given(OPT_KV_TYPE_K));
    CHECK_FALSE(c.flag_given(OPT_KV_TYPE));
    CHECK(config_sampling(c, 300).repeat_last_n == 300);
    CHECK(c.sampling.repeat_last_n == -1);

    run_config d;
    CHECK(cli_error_of(d, {"-c", "x"}) == "-c: expected an integer in [0, 16777216], got 'x'");
    CHECK(cli_error_of(d, {"--ctx-size", "-5"}) == "--ctx-size: expected an integer in [0, 16777216], got '-5'");
    CHECK(cli_error_of(d, {"--repeat-penalty", "0"}) == "--repeat-penalty: expected a number in (0, 100], got '0'");
    CHECK(cli_error_of(d, {"--top-p", "inf"}) == "--top-p: expected a number in [0, 1], got 'inf'");
    CHECK(cli_error_of(d, {"--cache-type-v", "q5_0"}) == "--cache-type-v takes f32, f16, q8_0, q4_0 or q4_kivi, got 'q5_0'");
    CHECK(cli_error_of(d, {"--kv-capacity", "0"}).find("--kv-capacity: '0': the bound must be more than 0") == 0);
    CHECK(cli_error_of(d, {"--kv-capacity", "-3p"}).find("must be more than 0") != std::string::npos);
    CHECK(cli_error_of(d, {"-s", "18446744073709551615"}).find("-s: expected -1 (random) or an integer") == 0);
    CHECK(cli_error_of(d, {"--kv-page"}) == "--kv-page needs a value (N)");
    run_config e;
    CHECK(cli_error_of(e, {"--kv-type", "f16", "-ctv", "q4_0"}) ==
          "--kv-type f16 and -ctv q4_0: K and V pages have one type in this build; give the same type to both "
          "(or --kv-type T)");
    run_config v;  // -ctv alone sets both
    CHECK(cli_error_of(v, {"-ctv", "q4_0"}) == "");
}

TEST_CASE("options: the K/V type, page size and policy check refuses exactly what cannot work") {
    for (type t : {type::F32, type::F16, type::Q8_0, type::Q4_0, type::BF16}) {
        for (int32_t page = 1; page <= 130; ++page)
            for (evict_policy p : {evict_policy::LRU, evict_policy::COMPRESSED}) {
                const bool block = t == type::Q8_0 || t == type::Q4_0;
                const bool ok = kv_type_supported(t) && (page % 32 == 0 || (!block && p != evict_policy::COMPRESSED));
                const std::string why = kv_options_problem(t, page, p);
                INFO(type_name(t) << " " << page << " " << evict_policy_name(p) << ": " << why);
                CHECK(why.empty() == ok);
                if (!ok && kv_type_supported(t)) CHECK(why.find("--kv-page " + std::to_string(page)) != std::string::npos);
            }
    }
    CHECK(kv_options_problem(type::F16, 0, evict_policy::LRU).find("--kv-page 0") == 0);
    CHECK(kv_options_problem(type::F16, 5000, evict_policy::LRU).find("--kv-page 5000") == 0);
    CHECK_FALSE(kv_type_supported(type::BF16));

    // What the check allows, the library runs; what it refuses, the library
    // refuses with an error (never an assertion), also without the tools.
    const auto m = model::load({test::require_model("stories260K.bin"), ""});
    for (type t : {type::F16, type::Q4_0})
        for (int32_t page : {16, 32})
            for (evict_policy p : {evict_policy::LRU, evict_policy::COMPRESSED}) {
                context_params cp;
                cp.kv.dir.clear();
                cp.kv.kv_type = t;
                cp.kv.page_tokens = page;
                cp.kv.policy = p;
                INFO(type_name(t) << " " << page << " " << evict_policy_name(p));
                if (kv_options_problem(t, page, p).empty()) CHECK_NOTHROW(context(*m, cp));
                else CHECK_THROWS_AS(context(*m, cp), error);
            }

    // A configuration file that asks for it fails on load, naming the file.
    const run_config y = config_parse("gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 16\n    cache_strategy: compressed\n", "c.yaml");
    CHECK(error_of([&] { config_context_params(y, m->hp); }).find("c.yaml: --kv-policy compressed") == 0);
}

TEST_CASE("options: config_override lays only the flags given over the context parameters, then checks them") {
    const hparams hp{512, 512, 64, 172, 8, 4, 5, 8, 8, 1e-5f, 10000.0f};
    context_params base;
    base.n_ctx = 256;
    base.n_ubatch = 128;
    base.kv.kv_type = type::Q8_0;
    base.kv.page_tokens = 32;
    base.kv.dir = "/somewhere";
    base.sparse.ratio = 0.5f;

    run_config none;
    context_params a = base;
    config_override(none, hp, a);
    CHECK(a.n_ctx == 256);
    CHECK(a.n_ubatch == 128);
    CHECK(a.kv.kv_type == type::Q8_0);
    CHECK(a.kv.dir == "/somewhere");
    CHECK(a.sparse.ratio == 0.5f);

    run_config f;
    const std::vector<std::string> args = {"-b", "64", "--kv-dir", "none", "--no-sparse", "-ctv", "f16", "--kv-capacity", "10p"};
    for (size_t i = 0; i < args.size(); i += config_apply_flag(f, args, i)) {}
    context_params b = base;
    config_override(f, hp, b);
    CHECK(b.n_ctx == 256);
    CHECK(b.n_ubatch == 64);  // -b caps the chunk
    CHECK(b.kv.kv_type == type::F16);
    CHECK(b.kv.dir.empty());
    CHECK(b.sparse.ratio == 1.0f);
    const page_geometry g{32, hp.n_layer, hp.n_head_kv, hp.head_dim};
    CHECK(b.kv.capacity_bytes == 10 * g.page_bytes(type::F16));

    run_config s;
    const std::vector<std::string> slide = {"--ctx-slide", "-c", "64"};
    for (size_t i = 0; i < slide.size(); i += config_apply_flag(s, slide, i)) {}
    context_params c = base;
    try {
        config_override(s, hp, c);
        FAIL("no error");
    } catch (const cli_error & e) {
        CHECK(std::string(e.what()).find("--ctx-slide needs a context of at least 96 positions") == 0);
    }
    run_config p;
    const std::vector<std::string> page = {"--kv-page", "16"};  // q8_0 from the base, a strategy's say
    for (size_t i = 0; i < page.size(); i += config_apply_flag(p, page, i)) {}
    context_params d = base;
    CHECK_THROWS_AS(config_override(p, hp, d), cli_error);
}

TEST_CASE("options: model_find looks in the model folders, adds .gguf/.bin and follows the manifest") {
    test::require_model("stories260K.bin");
    test::require_model("stories260K_f32.gguf");
    const model_search a = model_find("stories260K");
    CHECK(a.path.find("stories260K.bin") != std::string::npos);
    CHECK(a.manifest_file == "stories260K.bin");
    CHECK(model_find("stories260K_f32").path.find("stories260K_f32.gguf") != std::string::npos);
    CHECK(model_find("/no/such/dir/x.bin").path == "/no/such/dir/x.bin");  // a path is used as given
    const model_search miss = model_find("no-such-model");
    CHECK(miss.path.empty());
    REQUIRE(miss.tried.size() >= 2);
    CHECK(miss.tried[0] == "./models");
    CHECK(miss.tried.back().find("shared/models") != std::string::npos);
    const std::string msg = model_not_found("no-such-model", miss);
    CHECK(msg.find("no-such-model: no model of that name; looked in ./models, ") == 0);
    CHECK(msg.find("models/fetch.sh") != std::string::npos);
}

TEST_CASE("config: a --kv-dir with control characters stays inside its comment") {
    run_config c;
    const std::vector<std::string> args = {"--kv-dir", "kv\nmax_cache_size: 1\x03"};
    CHECK(config_apply_flag(c, args, 0) == 2);
    const std::string y = config_to_yaml(c);
    CHECK(y.find("# page folder kv\\x0amax_cache_size: 1\\x03 (--kv-dir)\n") != std::string::npos);
    const run_config back = config_parse(y, "back.yaml");
    CHECK(back.capacity.u == kv_capacity::unit::DEFAULT);
    CHECK(back.warnings.empty());
}
