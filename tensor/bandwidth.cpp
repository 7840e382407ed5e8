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

// Wide loads with independent accumulators so the core is never the
// bottleneck.
uint64_t read_words(const uint64_t * p, size_t n, bool prefetch) {
#if defined(__AVX512F__)
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        if (prefetch)
            for (int o = 0; o < 256; o += 64) _mm_prefetch(reinterpret_cast<const char *>(p + i) + 4096 + o, _MM_HINT_T0);
        a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
        a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 8));
        a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 16));
        a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 24));
    }
    alignas(64) uint64_t lanes[8];
    _mm512_store_si512(lanes, _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
    uint64_t r = 0;
    for (uint64_t l : lanes) r ^= l;
#elif defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (prefetch)
            for (int o = 0; o < 128; o += 64) _mm_prefetch(reinterpret_cast<const char *>(p + i) + 4096 + o, _MM_HINT_T0);
        a0 = _mm256_xor_si256(a0, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 4)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 8)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 12)));
    }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t r = uint64_t(_mm256_extract_epi64(x, 0) ^ _mm256_extract_epi64(x, 1) ^
                          _mm256_extract_epi64(x, 2) ^ _mm256_extract_epi64(x, 3));
#else
    (void) prefetch;
    uint64_t r = 0;
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
