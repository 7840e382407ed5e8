// Memory strategies: the K/V configurations users choose between.
//
//   SPEED       F16 pages, dense attention, no RAM budget
//   BALANCED    Q8_0 pages, dense attention, no RAM budget
//   AGGRESSIVE  Q4_KIVI pages, sparse decode attention (ratio 0.1) over pieces
//               copied out of the page file (kv_store_params::read_copy), K/V
//               RAM budget AGGRESSIVE_KV_RAM_BYTES (kv_store_params::ram_bytes):
//               the page file holds what does not fit
//   AUTO        one of the above from the model, the context wanted and the
//               memory available (choose_strategy)
//
// A strategy only sets defaults: flags given explicitly override them.
#pragma once

#include "decoder/llama.h"
#include "decoder/model.h"

#include <cstddef>
#include <string>

namespace gloas {

enum class memory_strategy { SPEED, BALANCED, AGGRESSIVE, AUTO };

const char * memory_strategy_name(memory_strategy s);
bool memory_strategy_from_name(const char * name, memory_strategy * out);

// Resident K/V bound of AGGRESSIVE: page-file pages mapped (kv-store.h).
// Decode copies what it reads (and keeps the dense layers in a fixed buffer,
// kv-sequence.h), so only the pages being written and what a prefill chunk
// leaves mapped count against it; 8 MiB holds a 1.1B-shape model's page
// being written 40 times over (and a Llama-3-8B's 7 times). Reads through
// the mapping (--kv-read map) would map nearly the whole file on every
// sparse pass and thrash under this bound.
constexpr size_t AGGRESSIVE_KV_RAM_BYTES = size_t(8) << 20;

// Sets the K/V type, sparse ratio and K/V RAM budget of `p` for a concrete strategy.
void apply_strategy(memory_strategy s, context_params & p);

// Picks SPEED, BALANCED or AGGRESSIVE for `m` with `n_ctx` positions when
// `ram_available` bytes are free: the fullest-precision strategy whose weights
// plus dense K/V fit in half of it (SPEED, then BALANCED); AGGRESSIVE otherwise.
// `why` gets the numbers behind the choice.
memory_strategy choose_strategy(const model & m, int32_t n_ctx, size_t ram_available, std::string * why);

// MemAvailable from /proc/meminfo (0 if unknown).
size_t available_ram_bytes();

} // namespace gloas
