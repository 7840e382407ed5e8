#include "tensor/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <omp.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "quant/isa.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace gloas {

GLOAS_ISA_BEGIN

#if defined(__AVX512F__) || defined(__AVX2__)
namespace {
// Xors the leading whole groups of four vectors V of p[0, n) into four
// independent accumulators (the core is never the bottleneck), prefetching
// 4 KiB ahead when asked; returns how many words it read and leaves the xor of
// the four accumulators in acc (zero on entry).
template <class V, class Load, class Xor>
size_t xor_vectors(const uint64_t * p, size_t n, bool prefetch, V & acc, Load load, Xor x) {
    constexpr size_t W = sizeof(V) / sizeof(uint64_t);  // words per vector
    V a0 = acc, a1 = acc, a2 = acc, a3 = acc;
    size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        if (prefetch)
            for (size_t o = 0; o < 4 * sizeof(V); o += 64)
                _mm_prefetch(reinterpret_cast<const char *>(p + i) + 4096 + o, _MM_HINT_T0);
        a0 = x(a0, load(p + i));
        a1 = x(a1, load(p + i + W));
        a2 = x(a2, load(p + i + 2 * W));
        a3 = x(a3, load(p + i + 3 * W));
    }
    acc = x(x(a0, a1), x(a2, a3));
    return i;
}
} // namespace
#endif

// Wide loads with independent accumulators; the words past the last group
// of vectors one by one.
uint64_t read_words(const uint64_t * p, size_t n, bool prefetch) {
    uint64_t r = 0;
#if defined(__AVX512F__)
    __m512i acc = _mm512_setzero_si512();
    size_t i = xor_vectors(p, n, prefetch, acc, [](const uint64_t * q) { return _mm512_load_si512(q); },
                           [](__m512i a, __m512i b) { return _mm512_xor_si512(a, b); });
    alignas(64) uint64_t lanes[8];
    _mm512_store_si512(lanes, acc);
    for (uint64_t l : lanes) r ^= l;
#elif defined(__AVX2__)
    __m256i acc = _mm256_setzero_si256();
    size_t i = xor_vectors(p, n, prefetch, acc,
                           [](const uint64_t * q) { return _mm256_load_si256(reinterpret_cast<const __m256i *>(q)); },
                           [](__m256i a, __m256i b) { return _mm256_xor_si256(a, b); });
    r = uint64_t(_mm256_extract_epi64(acc, 0) ^ _mm256_extract_epi64(acc, 1) ^ _mm256_extract_epi64(acc, 2) ^
                 _mm256_extract_epi64(acc, 3));
#else
    (void) prefetch;
    size_t i = 0;
#endif
    for (; i < n; ++i) r ^= p[i];
    return r;
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
double measure_read_bandwidth(size_t bytes, int n_threads, int passes, bool prefetch) {
    const size_t n = bytes / sizeof(uint64_t) / 64 * 64;
    std::unique_ptr<uint64_t, decltype(&std::free)> buf(
        static_cast<uint64_t *>(std::aligned_alloc(64, n * sizeof(uint64_t))), &std::free);
    if (!buf) return 0.0;
    uint64_t * p = buf.get();
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (size_t i = 0; i < n; ++i) p[i] = i * 0x9E3779B97F4A7C15ull;

    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < passes; ++pass) {
        uint64_t acc = 0;
        const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(n_threads) reduction(^ : acc)
        {
            const size_t nt = size_t(omp_get_num_threads()), it = size_t(omp_get_thread_num());
            const size_t chunk = (n / nt + 63) / 64 * 64;
            const size_t b = std::min(n, it * chunk), e = std::min(n, b + chunk);
            acc ^= read_words(p + b, e - b, prefetch);
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        sink = sink ^ acc;
        if (s > 0) best = std::max(best, double(n * sizeof(uint64_t)) / s);
    }
    (void) sink;
    return best;
}
#endif

} // namespace gloas
