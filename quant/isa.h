// The instruction-set variants of the SIMD kernels and the one this process
// runs.
//
// The default build (GLOAS_NATIVE=OFF) compiles each file with SIMD paths once
// per variant, its kernels in the namespace of the variant (GLOAS_ISA_BEGIN /
// GLOAS_ISA_END below), and calls them through the table of
// kvcache/simd-dispatch.h. The variant is chosen once, on the first kernel
// call or query: the best this CPU supports, or the one GLOAS_FORCE_SIMD
// (scalar, avx2, avx512, neon) names. x86-64 builds carry scalar, avx2 and
// avx512; aarch64 builds scalar (plain ARMv8-A) and neon (ARMv8.2-A with the
// dot-product and fp16 arithmetic extensions, as Apple M1, Graviton 2 and
// Ampere Altra have). A GLOAS_NATIVE=ON build carries one variant, compiled
// for the build machine (-march=native).
#pragma once

#include <atomic>
#include <cstddef>

namespace gloas::isa {

// Ordered by preference within an architecture (the highest supported wins).
enum class variant { scalar, avx2, avx512, neon };
constexpr int N_VARIANTS = 4;

// "scalar", "avx2", "avx512" or "neon".
const char * name(variant v);

// The variant the kernels run (chosen on the first call; a GLOAS_FORCE_SIMD
// that is unknown, or names a variant this build or CPU lacks, ends the
// process with a message and status 2).
extern std::atomic<int> g_active;  // the variant, -1 before the choice
variant choose_active();
inline variant active() {
    const int v = g_active.load(std::memory_order_relaxed);
    return v >= 0 ? variant(v) : choose_active();
}

// The name of the active variant as the load line and metrics print it:
// name(active()), with " native" after it in a GLOAS_NATIVE=ON build.
const char * active_name();

// Whether this build carries v and this CPU can run it.
bool supported(variant v);

// Whether this build carries v (whatever the CPU).
bool built(variant v);

// Switches every kernel to v from now on; false (nothing changed) where v is
// not supported. For tests: call it while no kernel runs.
bool select(variant v);

// Whether this is a GLOAS_NATIVE=ON build.
bool native_build();

// Scratch of at least `bytes` for the calling thread, 64-byte aligned, kept
// and reused across calls (contents undefined), one buffer per slot. The
// kernels use it instead of their own std::vector: a library template
// instantiated in a variant's object would be one function to the linker,
// whichever variant's copy it keeps, and baseline code could run the
// AVX-512 copy.
enum class scratch_slot { matmul, rope, page_scores, page_floats, page_ints, page_bounds, count };
void * thread_scratch(scratch_slot slot, size_t bytes);

} // namespace gloas::isa

// The namespace of the variant a translation unit is compiled for (set by the
// build: GLOAS_ISA is scalar, avx2, avx512, neon or native). A file with SIMD paths
// wraps its kernels, the functions the dispatch table names, in it; its
// generic code is compiled once, in the pass where GLOAS_ISA_BASE is 1.
#if !defined(GLOAS_ISA)
#define GLOAS_ISA scalar
#endif
#if !defined(GLOAS_ISA_BASE)
#define GLOAS_ISA_BASE 1
#endif
#define GLOAS_ISA_BEGIN namespace GLOAS_ISA {
#define GLOAS_ISA_END }
