// A probe of this machine's memory read bandwidth: the ceiling of decode,
// which streams every weight once per token.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gloas {

// Reads a buffer of `bytes` (allocated and touched first, so it is resident)
// with `n_threads` OpenMP threads, `passes` times, and returns the best rate in
// bytes per second. Use a buffer well above the last-level cache (1 GiB).
// With `prefetch` each thread also prefetches 4 KiB ahead, as the decode
// kernels do; the higher of the two is the ceiling decode is measured against.
double measure_read_bandwidth(size_t bytes, int n_threads, int passes = 5, bool prefetch = false);

// The probe's read loop: the XOR of the n words at p (64-byte aligned), so the
// loads cannot be optimized away; with `prefetch`, 4 KiB ahead.
uint64_t read_words(const uint64_t * p, size_t n, bool prefetch);

} // namespace gloas
