// The YAML run configuration: the specification's shape, mapped to settings.
//
//   gloas:
//     ultra_kv_cache:    { the K/V store and the context }
//     ultra_decoder:     { the model's shape and the decoder }
//     cache_strategies:  { which eviction policies may be chosen }
//     memory_strategies: { which memory strategies may be chosen }
//
// Every section and key is optional; absent keys keep the defaults of
// context_params / kv_store_params (or of run_config below). Unknown keys,
// wrong types and out-of-range values are errors "FILE:LINE: section.key:
// message". Keys that mean nothing for inference are accepted and add a
// warning to run_config::warnings (the caller prints them).
//
// A key whose flag is marked [=] below is read by that flag's row of
// SHARED_OPTIONS (decoder/options.h): it takes exactly the values the flag
// takes, refused with the flag's message after the key's name. The K/V type,
// page size and policy are checked together by kv_options_problem, as the
// flags are.
//
// Key                          Setting (equivalent gloas flag)
// ---------------------------  ---------------------------------------------------
// ultra_kv_cache:
//   max_cache_size  N          bound on the K/V store in tokens, 1..2^40: stored
//                              pages <= ceil(N / page_tokens) (--kv-capacity Nt;
//                              --kv-capacity <N/page_tokens>p is the same bound)
//   cache_chunk_size  N        1..65536 [= -ub]. N <= 64: tokens per K/V page,
//                              kv.page_tokens (--kv-page N; a multiple of 32 for
//                              q8_0/q4_0 pages and the compressed policy); N > 64:
//                              the prefill chunk, n_ubatch (-ub N). Pages are the
//                              store's unit of reuse and small; a chunk bigger
//                              than 64 tokens can only mean how many prompt
//                              tokens are evaluated at once.
//   max_sequence_length  N     n_ctx, positions per sequence; 0: the model's
//                              training context [= -c N]
//   cache_dtype  T             K/V page type (--kv-type): float32 -> f32,
//                              float16 -> f16, bfloat16 -> f16 (pages have no bf16
//                              type; a warning says so), int8 -> q8_0, int4 -> q4_0;
//                              or a --kv-type value: f32, f16, q8_0, q4_0
//   use_quantization  B        with quantization_bits 8 -> q8_0, 4 -> q4_0 pages;
//   quantization_bits  8|4     when true it takes precedence over cache_dtype
//   use_compression  B         true: evicted pages are first re-quantized to q4_0,
//                              i.e. the compressed policy when cache_strategy is not
//                              given (another cache_strategy wins, with a warning);
//                              cache_strategy: compressed needs it not false
//   compression_ratio  R       share of the capacity for compressed pages,
//                              kv.compressed_share, 0 < R <= 1
//                              [= --kv-compressed-share R]
//   use_memory_mapping  B      the page file (mmap'd, reused across runs) on/off;
//   memory_layout  L           hierarchical: RAM pages backed by the page file;
//                              flat: memory only. Pages go to a file only when both
//                              say so (off: --kv-dir none)
//   cache_strategy  P          eviction policy lru, lfu, fifo, adaptive, compressed
//                              [= --kv-policy P]; must be enabled in cache_strategies
//   use_async_loading  B       accepted and written back by config_to_yaml; no
//                              effect: page-file pages are mapped and read when
//                              attention needs them (there is no read-ahead thread)
//   use_parallel_processing B  false: one thread (-t 1; a num_workers other than 1
//                              is ignored with a warning); true: num_workers threads
//   num_workers  N             n_threads, -1..1024; 0 or -1: all hardware threads
//                              [= -t N]
//   use_cuda_streams  B        accepted and written back; no effect (this build
//                              has no GPU backend)
//   use_sparse_attention  B    decode attends only to the top pages (Quest) ...
//   sparse_attention_ratio R   ... a fraction R of them, 0 < R <= 1
//                              [= --sparse-ratio R]; false: --no-sparse
// ultra_decoder:
//   d_model, n_heads, n_layers, d_ff, vocab_size
//                              the model's shape: n_embd, n_head, n_layer, n_ff,
//                              n_vocab. Checked against a loaded model
//                              (config_check_model); without a model they define a
//                              random-weight one (config_random_model_shape)
//   memory_strategy  S         speed, balanced, aggressive or auto [= --strategy S];
//                              must be enabled in memory_strategies; keys given
//                              explicitly (cache_dtype, ...) win over the strategy
//   use_quantization  B        weight type of a random-weight model: q8_0 / q4_0;
//   quantization_bits  8|4     a loaded model keeps its own weights (gloas-quantize)
//   use_mixed_precision  B     weight type of a random-weight model when not
//                              quantized: f16 (true) or f32 (false). Activations are
//                              f32, K/V pages cache_dtype, either way
//   use_async_processing  B    accepted and written back; no effect: full K/V
//                              pages are always published by the store's
//                              background writer thread
//   use_gradient_checkpointing, use_activation_checkpointing
//                              training only: accepted, ignored, with a warning
//   max_sequence_length, use_sparse_attention, sparse_attention_ratio,
//   use_parallel_processing, num_workers, use_cuda_streams, use_compression,
//   compression_ratio          the same settings as in ultra_kv_cache; when both
//                              sections give one, the values must agree
// cache_strategies:
//   lru, lfu, fifo, adaptive, compressed  B
//                              policies that may be chosen (by cache_strategy or
//                              the automatic configuration); absent = enabled. At
//                              least one must stay enabled; with no cache_strategy
//                              (and no use_compression: true) the default, lru,
//                              or if it is disabled the first enabled one in this
//                              order is used
// memory_strategies:
//   aggressive, balanced, speed  B
//                              the same for memory_strategy
#pragma once

#include "decoder/llama-gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"

#include <cstdint>
#include <string>
#include <vector>

namespace gloas {

// A bound on the K/V store in some unit; resolved to bytes once the page size
// is known (config_context_params).
struct kv_capacity {
    enum class unit { DEFAULT, BYTES, PAGES, TOKENS };
    unit u = unit::DEFAULT;  // DEFAULT: ctx.kv.capacity_bytes as it is
    uint64_t n = 0;
};

// The largest max_cache_size, in tokens (2^40); --kv-capacity takes at most
// as many pages or tokens.
constexpr int64_t MAX_CACHE_TOKENS = int64_t(1) << 40;

// Reads a --kv-capacity value: bytes ("4G", "512M", "100k", "123456"), pages
// ("200p") or tokens ("8192t"). Throws gloas::error "FLAG: message".
kv_capacity parse_kv_capacity(const std::string & flag, const std::string & value);
// The bound in bytes for pages of `page_bytes` holding `page_tokens` tokens;
// `def` when the capacity is DEFAULT. Tokens round up to whole pages; a bound
// past size_t gives SIZE_MAX.
size_t kv_capacity_bytes(const kv_capacity & c, size_t page_bytes, int32_t page_tokens, size_t def);

// The model shape of ultra_decoder; 0 = not given.
struct model_shape {
    int32_t d_model = 0;      // n_embd
    int32_t n_heads = 0;      // n_head
    int32_t n_layers = 0;     // n_layer
    int32_t d_ff = 0;         // n_ff
    int32_t vocab_size = 0;   // n_vocab
};

constexpr int N_EVICT_POLICIES = 5;    // evict_policy LRU .. COMPRESSED
constexpr int N_MEMORY_STRATEGIES = 3; // speed, balanced, aggressive

struct run_config {
    std::string path;           // the file it was read from; empty: defaults / flags only

    context_params ctx;         // n_ctx, n_ubatch, n_threads, kv (type, page_tokens,
                                // policy, compressed_share, dir; capacity: see below)
    kv_capacity capacity;       // max_cache_size / --kv-capacity
    bool kv_file = true;        // pages in the page file under ctx.kv.dir (the caller's
                                // default folder when empty); false: memory only
    bool prefetch = true;         // use_async_loading (no effect, see above)
    bool async_writeback = true;  // use_async_processing (no effect)
    bool use_cuda_streams = false;  // use_cuda_streams (no effect)

    std::string strategy = "auto";  // memory_strategy: speed, balanced, aggressive, auto
    bool use_sparse_attention = false;
    double sparse_ratio = 0.1;      // sparse_attention_ratio, used when use_sparse_attention

    model_shape shape;              // ultra_decoder shape keys
    int32_t shape_line[5] = {};     // their lines in the file (0: not given), shape order
    type weight_type = type::F16;   // random-weight models: see use_quantization / use_mixed_precision

    bool policy_enabled[N_EVICT_POLICIES] = {true, true, true, true, true};  // by evict_policy
    bool strategy_enabled[N_MEMORY_STRATEGIES] = {true, true, true};        // speed, balanced, aggressive

    std::vector<std::string> warnings;  // "FILE:LINE: ..." for the caller to print

    // Settings only flags give (decoder/options.h).
    sampler_params sampling;
    int32_t n_batch = 2048;         // -b: the prefill chunk is at most this
    kv_capacity kv_ram;             // --kv-ram; DEFAULT: the strategy's
    type kv_type_v = type::F16;     // -ctv (must equal the K type, ctx.kv.kv_type)
    int32_t n_gpu_layers = 0;       // -ngl (-1: auto or all): context_params::n_gpu_layers
    int32_t gpu_device = 0;         // --device: context_params::gpu_device
    bool mlock = false;             // --mlock
    bool no_mmap = false;           // --no-mmap (the last of it and --mmap given counts)
    bool mmap = false;              // --mmap
    uint64_t given = 0;             // bit i: shared option i (shared_opt) was given
    bool flag_given(int id) const { return (given >> id) & 1; }
};

// "speed", "balanced", "aggressive" (the memory_strategies order); index -1 for
// anything else ("auto" included).
int memory_strategy_index(const std::string & name);

// Parses a configuration text; `name` (the file name) prefixes errors and
// warnings. Starts from `base` (defaults unless given), so a file only changes
// the keys it has. Throws gloas::error.
run_config config_parse(const std::string & text, const std::string & name, const run_config & base = run_config());
// Reads a configuration file (config_parse of its text).
run_config config_load(const std::string & path, const run_config & base = run_config());

// The command-line flags for these settings, and the ones a file has no
// keys for (sampling, -b, --kv-ram, ...), are read by config_apply_flag
// (decoder/options.h) into a run_config.

// The settings of cfg in the specification's shape, every key written (the
// file parses back into the same settings). What the keys cannot say is a
// comment: a capacity in bytes, and the prefill chunk when the page size is
// not the default too (cache_chunk_size holds one of them).
std::string config_to_yaml(const run_config & cfg);

// Throws gloas::error naming the key, the configured value and the model's
// ("cfg.yaml:27: ultra_decoder.d_model: 512, but the model stories260K.bin has
// 64") unless every shape key given equals the model's.
void config_check_model(const run_config & cfg, const hparams & hp, const std::string & model_name);

// The shape of a random-weight model from ultra_decoder (as gloas-gen-model
// makes them): d_model, n_heads and n_layers are needed; d_ff defaults to
// 4 * d_model, vocab_size to 32000, the context to max_sequence_length (2048);
// n_head_kv = n_heads, head_dim = d_model / n_heads, weights cfg.weight_type.
// Throws gloas::error naming the key that is missing or impossible.
llama_gguf_hparams config_random_model_shape(const run_config & cfg);

// The context parameters for a model: cfg.ctx with the capacity resolved to
// bytes (page geometry of hp), and kv.dir: empty when !kv_file, else cfg's
// folder or, when that is empty, `default_kv_dir`.
context_params config_context_params(const run_config & cfg, const hparams & hp,
                                     const std::string & default_kv_dir = std::string());

} // namespace gloas
