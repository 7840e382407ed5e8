// Automatic configuration: from the model, the context wanted and the memory
// and cores available, the settings a user would otherwise pick by hand — the
// memory strategy, K/V type, page size, the RAM budget of the K/V cache,
// threads and the prefill chunk — with the numbers behind each choice.
//
// Rules (each printed by explain()):
//   strategy    choose_strategy: SPEED when the weights plus F16 K/V for the
//               whole context fit in half of the available RAM, BALANCED when
//               they do with Q8_0 K/V, AGGRESSIVE otherwise.
//   K/V type,   the strategy's (F16 / Q8_0 / Q4_KIVI; sparse decode at 0.1 for
//   sparsity    AGGRESSIVE).
//   page size   32 tokens: the smallest size every K/V type allows (quantized
//               rows are 32-token blocks), which keeps the open F32 page, the
//               prefix-reuse granularity and the sparse selection fine.
//   RAM budget  the whole K/V of the context when it fits beside the weights in
//               half of the available RAM; otherwise what is left of that half
//               (at least 16 pages): the page file holds the rest.
//   threads     the physical cores this process may run on (decode is bound by
//               memory bandwidth, which hyper-threads do not add to), less the
//               CPUs busy with other work (ops::default_threads), unless
//               n_cores is given.
//   ubatch      512 tokens, fewer when activations would take more than a
//               sixteenth of the available RAM or the context is shorter.
//   weights     copied into memory in huge pages when they take at most a
//               quarter of the available RAM (weights_copied_by_default, the
//               tools' default too): decode reads them faster than through
//               the file's 4 KiB pages; otherwise mapped, so the page cache
//               holds the only copy.
// GPU memory is reported and not used: the CUDA backend is not built yet.
#pragma once

#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/strategy.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace gloas {

struct auto_config_input {
    int32_t n_ctx = 0;          // positions wanted; 0: the model's training context
    size_t ram_available = 0;   // bytes; 0: unknown (assume plenty)
    size_t gpu_available = 0;   // bytes of free GPU memory; 0: none
    int32_t n_cores = 0;        // physical cores usable; 0: detect (leaving out busy CPUs)
};

struct auto_config {
    memory_strategy strategy = memory_strategy::SPEED;
    type kv_type = type::F16;
    float sparse_ratio = 1.0f;
    int32_t n_ctx = 0;
    int32_t page_tokens = 32;
    size_t kv_bytes = 0;        // K/V of the whole context in kv_type
    size_t kv_ram_bytes = 0;    // RAM budget of the K/V cache; 0: unbounded
    int32_t n_threads = 1;
    int32_t n_ubatch = 512;
    bool copy_weights = false;  // --no-mmap
    std::string explanation;    // one line per choice, with its numbers
};

auto_config choose_config(const model & m, const auto_config_input & in);

// Whether weights of weight_bytes are copied into memory rather than read
// through the file's mapping when no flag says (ram_available 0: unknown, so
// mapped): when they take at most a quarter of the available RAM. llama.cpp
// copies (repacks) the weights its CPU kernels can interleave the same way.
bool weights_copied_by_default(size_t weight_bytes, size_t ram_available);

// Physical cores this process may run on (cores of its CPU affinity set,
// hyper-thread siblings counted once); at least 1.
int32_t physical_cores();

} // namespace gloas
