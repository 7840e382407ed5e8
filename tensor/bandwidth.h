// A probe of this machine's memory read bandwidth: the ceiling of decode,
// which streams every weight once per token.
#pragma once

#include <cstddef>

namespace gloas {

// Reads a buffer of `bytes` (allocated and touched first, so it is resident)
// with `n_threads` OpenMP threads, `passes` times, and returns the best rate in
// bytes per second. Use a buffer well above the last-level cache (1 GiB).
double measure_read_bandwidth(size_t bytes, int n_threads, int passes = 5);

} // namespace gloas
