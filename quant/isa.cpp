#include "quant/isa.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

// The build says which variants it carries: GLOAS_ISA_HAVE_AVX2 /
// GLOAS_ISA_HAVE_AVX512 (dispatched x86-64 build), GLOAS_ISA_HAVE_NEON
// (dispatched aarch64 build) or GLOAS_ISA_NATIVE (one
// variant, this file compiled with the same -march=native flags as the
// kernels, so the macros below name it).

namespace gloas::isa {

namespace {

#if defined(GLOAS_ISA_NATIVE)
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
constexpr variant NATIVE = variant::avx512;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
constexpr variant NATIVE = variant::avx2;
#elif defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
constexpr variant NATIVE = variant::neon;
#else
constexpr variant NATIVE = variant::scalar;
#endif
#endif

#if defined(__x86_64__) || defined(__i386__)
// F16C (CPUID leaf 1, ECX bit 29), read directly: older clang (14, Debian
// 12's) has no "f16c" for __builtin_cpu_supports.
bool x86_f16c() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1u) != 0;
}
#endif

// What the CPU (and the OS, which must save the wider registers) supports.
bool cpu_has(variant v) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();  // the choice may come before libgcc's constructor has run
#endif
    switch (v) {
    case variant::scalar: return true;
#if defined(__x86_64__) || defined(__i386__)
    case variant::avx2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && x86_f16c();
    case variant::avx512:
        return cpu_has(variant::avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#endif
#if defined(__aarch64__) && defined(__linux__)
    case variant::neon: {
        // ASIMD (always there on aarch64), its dot products (SDOT/UDOT) and
        // half-precision arithmetic (with its ASIMD form)
        const unsigned long hw = getauxval(AT_HWCAP);
        return (hw & HWCAP_ASIMD) && (hw & HWCAP_ASIMDDP) && (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP);
    }
#endif
    default: return false;
    }
}

const char * const NAMES[N_VARIANTS] = {"scalar", "avx2", "avx512", "neon"};

// The name of the one variant a native build carries ("avx512 native").
const char * carried_name() {
#if defined(GLOAS_ISA_NATIVE)
    static const char * const NATIVE_NAMES[N_VARIANTS] = {"scalar native", "avx2 native", "avx512 native",
                                                          "neon native"};
    return NATIVE_NAMES[int(NATIVE)];
#else
#if defined(GLOAS_ISA_HAVE_NEON)
    return "scalar and neon";
#elif defined(GLOAS_ISA_HAVE_AVX2)
    return "scalar, avx2 and avx512";
#else
    return "scalar";  // a dispatched build off x86-64 and aarch64
#endif
#endif
}

// A GLOAS_FORCE_SIMD that cannot be honoured ends the process, as a bad
// command line does (status 2, after the message). The choice is made at the
// first kernel call, maybe inside a static initializer or a library call,
// where no error can travel back; _Exit runs no exit handlers, since the
// process may be in any state there.
[[noreturn]] void refuse_force() { std::_Exit(2); }

variant choose() {
    const char * force = std::getenv("GLOAS_FORCE_SIMD");
    if (force && *force) {
        int v = -1;
        for (int i = 0; i < N_VARIANTS; ++i)
            if (std::strcmp(force, NAMES[i]) == 0) v = i;
        if (v < 0) {
            std::fprintf(stderr, "gloas: GLOAS_FORCE_SIMD=%s: not a SIMD variant (scalar, avx2, avx512 or neon)\n", force);
            refuse_force();
        }
        if (!built(variant(v))) {
            std::fprintf(stderr, "gloas: GLOAS_FORCE_SIMD=%s: this build has no %s kernels (it carries %s)\n",
                         force, force, carried_name());
            refuse_force();
        }
        if (!cpu_has(variant(v))) {
            std::fprintf(stderr, "gloas: GLOAS_FORCE_SIMD=%s: this CPU lacks %s\n", force,
                         v == int(variant::avx2)   ? "AVX2, FMA or F16C"
                         : v == int(variant::neon) ? "the ARMv8.2 dot-product or fp16 arithmetic extension"
                                                   : "one of AVX-512 F, BW, VL, DQ, VNNI and VBMI");
            refuse_force();
        }
        return variant(v);
    }
    for (int i = N_VARIANTS - 1; i > 0; --i)
        if (supported(variant(i))) return variant(i);
    return variant::scalar;
}

} // namespace

std::atomic<int> g_active{-1};

const char * name(variant v) { return NAMES[int(v)]; }

bool native_build() {
#if defined(GLOAS_ISA_NATIVE)
    return true;
#else
    return false;
#endif
}

bool built(variant v) {
#if defined(GLOAS_ISA_NATIVE)
    return v == NATIVE;
#else
    switch (v) {
    case variant::scalar: return true;
#if defined(GLOAS_ISA_HAVE_AVX2)
    case variant::avx2: return true;
#endif
#if defined(GLOAS_ISA_HAVE_AVX512)
    case variant::avx512: return true;
#endif
#if defined(GLOAS_ISA_HAVE_NEON)
    case variant::neon: return true;
#endif
    default: return false;
    }
#endif
}

bool supported(variant v) {
    // A native build runs where it was built; its variant is what it carries.
    if (native_build()) return built(v);
    return built(v) && cpu_has(v);
}

variant choose_active() {
    int expected = -1;
    g_active.compare_exchange_strong(expected, int(choose()));
    return variant(g_active.load(std::memory_order_relaxed));
}

const char * active_name() {
#if defined(GLOAS_ISA_NATIVE)
    active();  // a GLOAS_FORCE_SIMD naming another variant is refused here
    return carried_name();
#else
    return name(active());
#endif
}

bool select(variant v) {
    if (!supported(v)) return false;
    g_active.store(int(v), std::memory_order_relaxed);
    return true;
}

void * thread_scratch(scratch_slot slot, size_t bytes) {
    constexpr size_t ALIGN = 64;
    thread_local std::vector<char> bufs[int(scratch_slot::count)];
    std::vector<char> & b = bufs[int(slot)];
    if (b.size() < bytes + ALIGN) b.resize(bytes + ALIGN);
    const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
    return reinterpret_cast<void *>((p + ALIGN - 1) & ~uintptr_t(ALIGN - 1));
}

} // namespace gloas::isa
