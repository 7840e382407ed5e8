// Where a tool keeps the model's weights once they are loaded: --no-mmap and
// --mlock, applied by the tool to the model's mapping, so the library's
// loaders keep one code path (they always map the file).
#pragma once

#include "decoder/config.h"
#include "decoder/model.h"

namespace gloas::cli {

// copy (--no-mmap): each mapped range of the model file becomes anonymous
// memory holding the same bytes at the same address (the weights' pointers
// stay valid; the file is no longer read, and may change or go), in
// transparent huge pages where the kernel allows them (MADV_HUGEPAGE):
// decode streams every weight once per token, and on 2 MiB pages it crosses
// a page boundary, where a TLB walk starts and the prefetchers stop, 512
// times less often. lock (--mlock): those ranges are locked in RAM. A refusal
// is a warning on stderr naming `tool`. The copy is made beside the mapping
// and moved over it, so at most one extra copy of the weights exists at a
// time.
void place_weights(const model & m, bool copy, bool lock, const char * tool);

// Whether the weights are copied (place_weights' copy): --no-mmap, not with
// --mmap, and else when they take at most a quarter of the available RAM
// (weights_copied_by_default, autoconfig.h).
bool copy_weights(const run_config & flags, const model & m);

} // namespace gloas::cli
