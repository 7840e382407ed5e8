// gloas-kernel-bench: throughput of the matmul kernels on Llama-shaped weights,
// or of attention over K/V pages.
//
//   gloas-kernel-bench [-t THREADS] [-n PREFILL_TOKENS] [--types q4_0,q8_0,q4_K,q5_K,q6_K,f16] [--quick] [--cpu]
//   gloas-kernel-bench --pages [-t THREADS] [-d DEPTH] [--kv-page N] [--huge] [--types f16,q8_0,q4_0,q4_kivi] [--quick]
//
// Matmul: prints a read-bandwidth probe (sum of a 1 GiB buffer with 1 and
// THREADS threads), then per weight type and shape: decode (n_tok = 1) as GB/s
// of weights streamed, cycling over enough copies of the matrix to exceed the
// caches, and prefill (n_tok = PREFILL_TOKENS) as GFLOP/s in total and per
// thread (2 * rows * cols * tokens / seconds). With --cpu, times are the
// process's CPU time divided by THREADS instead of wall time, so that other
// processes on a shared machine count less (OpenMP threads waiting at a
// barrier spin, so CPU time / THREADS equals wall time on an idle machine).
//
// --pages: one decode token's attention over DEPTH tokens (default 4096) of
// TinyLlama-shaped pages (N tokens, default 32; 22 layers, 4 KV heads,
// head_dim 64, 8 query heads per KV head), as kv_sequence runs it: KV heads
// over THREADS threads, each reading its pages in order with the next one
// prefetched. The pages lie in 4 KiB OS pages, as in a page file, or with
// --huge in transparent huge pages where the system gives them (to measure
// what TLB misses cost).
// Per page type, in thread CPU time (so that other processes on a shared
// machine count less): ms per token (summed over threads) and ns per page
// per KV head with the next page's piece streamed in by page_attend (as
// kv_sequence reads pages), the ns with a burst of page_prefetch before
// each page instead and with no prefetch, the ns with one layer's pages hot
// in cache, and the scalar reference's ns per page per KV head.
#include "kvcache/page.h"
#include "quant/simd.h"
#include "quant/types.h"
#include "tensor/bandwidth.h"
#include "base/error.h"
#include "tensor/ops.h"
#include "tools/common/cli.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

using cli::now_s;

struct shape {
    const char * name;
    int64_t n_out, n_in;
};

// Random N(0, 0.02) rows quantized to `t` (rows in parallel: the K-quant
// reference quantizers are slow), the same matrix for any thread count.
std::vector<char> make_matrix(type t, int64_t n_out, int64_t n_in, uint32_t seed) {
    const size_t rb = row_size(t, n_in);
    std::vector<char> w(rb * size_t(n_out));
    #pragma omp parallel
    {
        std::vector<float> row(static_cast<size_t>(n_in));
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < n_out; ++r) {
            std::mt19937 rng(seed + uint32_t(r));
            std::normal_distribution<float> nd(0.0f, 0.02f);
            for (auto & v : row) v = nd(rng);
            traits(t).from_float(row.data(), w.data() + size_t(r) * rb, n_in);
        }
    }
    return w;
}

void usage() {
    std::printf("usage: gloas-kernel-bench [-t THREADS] [-n PREFILL_TOKENS] [--types q4_0,q8_0,q4_K,q5_K,q6_K,f16] [--quick] [--cpu]\n"
                "       gloas-kernel-bench --pages [-t THREADS] [-d DEPTH] [--kv-page N] [--huge] [--types f16,q8_0,q4_0,q4_kivi] [--quick]\n");
}

// CPU seconds of the whole process, all threads.
double process_cpu_now() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// CPU seconds of the calling thread (a loaded machine's preemption does not count).
double thread_cpu_now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Thread CPU seconds, summed over the threads, of one decode token's attention
// of layers [0, n_layers) and every KV head over pages (pages[i] is a whole
// page), KV heads over nth threads; `fast` picks page_attend or page_attend_ref.
// How the next page is prefetched (page_attend_ref: never).
enum class prefetch_mode { NONE, BURST, SPREAD };  // none; page_prefetch before the page; page_attend's `next`

double attend_token(const page_geometry & g, type t, const std::vector<const char *> & pages, int n_layers,
                    const std::vector<float> & q, int group, int nth, bool fast, prefetch_mode pm) {
    const int D = g.head_dim, P = g.page_tokens, n_pages = int(pages.size());
    double cpu = 0.0;
    for (int il = 0; il < n_layers; ++il) {
        #pragma omp parallel for num_threads(nth) schedule(dynamic, 1) reduction(+ : cpu)
        for (int h = 0; h < g.n_head_kv; ++h) {
            const double c0 = thread_cpu_now();
            std::vector<float> st(size_t(group) * (D + 2));
            attn_state s{st.data(), st.data() + group, st.data() + 2 * group};
            attn_state_init(s, group, D);
            const float * qh = q.data() + size_t(h) * size_t(group) * size_t(D);
            for (int i = 0; i < n_pages; ++i) {
                const char * next = i + 1 < n_pages ? pages[size_t(i) + 1] : nullptr;
                if (!fast) page_attend_ref(g, t, pages[size_t(i)], il, h, P, qh, group, s);
                else if (pm == prefetch_mode::SPREAD) page_attend(g, t, pages[size_t(i)], il, h, P, qh, group, s, next, t);
                else {
                    if (next && pm == prefetch_mode::BURST) page_prefetch(g, t, next, il, h);
                    page_attend(g, t, pages[size_t(i)], il, h, P, qh, group, s);
                }
            }
            if (!std::isfinite(s.l[0])) std::printf("(non-finite)\n");  // keeps the result alive
            cpu += thread_cpu_now() - c0;
        }
    }
    return cpu;
}

// An anonymous mapping of at least `bytes`, 2 MiB aligned, in 4 KiB OS pages
// or (huge) transparent huge pages where the system allows them.
class page_arena {
public:
    page_arena(size_t bytes, bool huge) {
        const size_t A = size_t(2) << 20;
        map_bytes_ = (bytes + A - 1) / A * A + A;
        base_ = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base_ == MAP_FAILED) throw error(format("gloas-kernel-bench: cannot map %zu bytes", map_bytes_));
        data_ = reinterpret_cast<char *>((reinterpret_cast<uintptr_t>(base_) + A - 1) / A * A);
        ::madvise(data_, map_bytes_ - A, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    }
    ~page_arena() { ::munmap(base_, map_bytes_); }
    page_arena(const page_arena &) = delete;
    page_arena & operator=(const page_arena &) = delete;
    char * data() const { return data_; }

private:
    void * base_ = nullptr;
    size_t map_bytes_ = 0;
    char * data_ = nullptr;
};

int bench_pages(const std::vector<type> & types, int nth, int depth, int page_tokens, bool huge, bool quick) {
    page_geometry g;
    g.page_tokens = page_tokens;
    g.n_layer = 22;
    g.n_head_kv = 4;
    g.head_dim = 64;
    const int group = 8, n_pages = std::max(1, depth / g.page_tokens);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    // a few distinct random open pages, quantized in turn into every page
    const int n_src = 4;
    std::vector<std::vector<float>> src(n_src, std::vector<float>(size_t(g.n_rows()) * size_t(g.page_tokens)));
    for (auto & o : src) for (auto & v : o) v = nd(rng);
    std::vector<float> q(size_t(g.n_head_kv) * group * g.head_dim);
    for (auto & v : q) v = nd(rng) / 8.0f;  // scaled by 1/sqrt(head_dim): scores ~ N(0, 1)
    const int rounds = quick ? 2 : 5;
    const double items = double(n_pages) * g.n_layer * g.n_head_kv;  // page x layer x KV head
    std::printf("page attention, depth %d (%d pages of %d tokens, %s), %d threads; times are thread CPU time, summed over threads\n\n",
                n_pages * g.page_tokens, n_pages, g.page_tokens, huge ? "huge OS pages where given" : "4 KiB OS pages", nth);
    std::printf("| page type | CPU ms / token | ns / page / KV head | burst prefetch: ns | no prefetch: ns | hot: ns | ref: ns |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
    for (type t : types) {
        if (!g.valid_for(t)) {
            std::fprintf(stderr, "gloas-kernel-bench: type %s is not a page type\n", type_name(t));
            return 1;
        }
        const size_t pb = g.page_bytes(t);
        page_arena store(pb * size_t(n_pages), huge);
        for (int i = 0; i < n_pages; ++i) {
            char * dst = store.data() + pb * size_t(i);
            if (t == type::F32) std::memcpy(dst, src[size_t(i % n_src)].data(), pb);
            else page_quantize(g, src[size_t(i % n_src)].data(), t, dst);
        }
        std::vector<const char *> pages(static_cast<size_t>(n_pages));
        for (int i = 0; i < n_pages; ++i) pages[size_t(i)] = store.data() + pb * size_t(i);
        // every layer (cold: the pages exceed the caches), then one layer
        // repeated (hot), then the reference on one layer
        // (the prefetch modes in turn within each round: a shared machine's
        // load changes between rounds)
        const prefetch_mode modes[3] = {prefetch_mode::SPREAD, prefetch_mode::BURST, prefetch_mode::NONE};
        double cold[3] = {1e30, 1e30, 1e30}, hot = 1e30;
        attend_token(g, t, pages, g.n_layer, q, group, nth, true, prefetch_mode::SPREAD);
        for (int r = 0; r < rounds; ++r)
            for (int m = 0; m < 3; ++m) cold[m] = std::min(cold[m], attend_token(g, t, pages, g.n_layer, q, group, nth, true, modes[m]));
        for (int r = 0; r < 10 * rounds; ++r) hot = std::min(hot, attend_token(g, t, pages, 1, q, group, nth, true, prefetch_mode::SPREAD));
        const double ref = attend_token(g, t, pages, 1, q, group, nth, false, prefetch_mode::NONE);
        const double per = 1e9 / items, per1 = per * g.n_layer;
        std::printf("| %s | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", type_name(t), cold[0] * 1e3, cold[0] * per,
                    cold[1] * per, cold[2] * per, hot * per1, ref * per1);
        std::fflush(stdout);
    }
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    int nth = 2;
    int64_t n_prefill = 512;
    bool quick = false, pages = false, cpu = false;
    int depth = 4096, page_tokens = 32;
    bool huge = false;
    std::string types_arg;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-t" && i + 1 < argc) nth = std::atoi(argv[++i]);
        else if (a == "-n" && i + 1 < argc) n_prefill = std::atoll(argv[++i]);
        else if (a == "--types" && i + 1 < argc) types_arg = argv[++i];
        else if (a == "--quick") quick = true;
        else if (a == "--pages") pages = true;
        else if (a == "--cpu") cpu = true;
        else if (a == "-d" && i + 1 < argc) depth = std::atoi(argv[++i]);
        else if (a == "--kv-page" && i + 1 < argc) page_tokens = std::atoi(argv[++i]);
        else if (a == "--huge") huge = true;
        else if (a == "-h" || a == "--help") { usage(); return 0; }
        else { usage(); return 1; }
    }
    if (nth < 1 || n_prefill < 1 || depth < 1 || page_tokens < 1) { usage(); return 1; }
    if (types_arg.empty()) types_arg = pages ? "f16,q8_0,q4_0" : "q4_0,q8_0,q4_K,q5_K,q6_K,f16";
    std::vector<type> types;
    for (size_t p = 0; p <= types_arg.size();) {
        const size_t e = std::min(types_arg.find(',', p), types_arg.size());
        type t{};
        if (!type_from_name(types_arg.substr(p, e - p).c_str(), &t)) {
            std::fprintf(stderr, "gloas-kernel-bench: unknown type '%s'\n", types_arg.substr(p, e - p).c_str());
            return 1;
        }
        types.push_back(t);
        p = e + 1;
    }
    if (pages) return bench_pages(types, nth, depth, page_tokens, huge, quick);

    // read bandwidth
    {
        const size_t bytes = size_t(quick ? 256 : 1024) << 20;
        const double bw1 = measure_read_bandwidth(bytes, 1, 3) / 1e9;
        const double bwn = measure_read_bandwidth(bytes, nth, 3) / 1e9;
        const double pf1 = measure_read_bandwidth(bytes, 1, 3, true) / 1e9;
        const double pfn = measure_read_bandwidth(bytes, nth, 3, true) / 1e9;
        std::printf("read bandwidth (%zu MiB buffer): 1 thread %.1f GB/s, %d threads %.1f GB/s\n",
                    bytes >> 20, bw1, nth, bwn);
        std::printf("  with software prefetch:        1 thread %.1f GB/s, %d threads %.1f GB/s\n\n", pf1, nth, pfn);
    }

    const shape shapes[] = {
        {"attn q/o 2048x2048", 2048, 2048},
        {"attn k/v 256x2048", 256, 2048},
        {"ffn up 5632x2048", 5632, 2048},
        {"ffn down 2048x5632", 2048, 5632},
        {"output 32000x2048", 32000, 2048},
    };
    ops::set_n_threads(nth);
    // the clock of the matmul timings: wall, or process CPU time per thread
    const auto timer = [cpu, nth]() { return cpu ? process_cpu_now() / nth : now_s(); };
    if (cpu) std::printf("times: process CPU time / %d threads\n\n", nth);
    std::mt19937 rng(42);
    std::printf("| type | shape | decode ms | decode GB/s | prefill n=%lld ms | GFLOP/s | GFLOP/s/thread |\n", (long long) n_prefill);
    std::printf("|---|---|---|---|---|---|---|\n");
    for (type t : types) {
        for (const shape & s : shapes) {
            std::vector<char> w0 = make_matrix(t, s.n_out, s.n_in, uint32_t(rng()));
            const size_t bytes = w0.size();
            // copies so that the decode working set exceeds the caches
            const size_t target = size_t(quick ? 64 : 256) << 20;
            const size_t n_copies = std::max<size_t>(1, (target + bytes - 1) / bytes);
            std::vector<std::vector<char>> copies(n_copies, w0);
            std::vector<tensor> ws;
            for (auto & c : copies) ws.push_back(make_tensor_2d(t, s.n_in, s.n_out, c.data()));

            std::vector<float> x(size_t(n_prefill * s.n_in));
            std::normal_distribution<float> nd(0.0f, 1.0f);
            for (auto & v : x) v = nd(rng);
            std::vector<float> y(size_t(n_prefill * s.n_out));
            std::vector<char> work(ops::matmul_work_size(t, s.n_in, n_prefill));

            // decode: one token, each call on the next copy
            for (size_t i = 0; i < n_copies; ++i) ops::matmul(ws[i], x.data(), 1, y.data(), work.data());
            // (best of a few rounds over all copies: the machine may be shared)
            const size_t n_dec = std::max<size_t>(n_copies, 20);
            double dec = 1e30, t0 = 0.0;
            for (int round = 0; round < (quick ? 2 : 5); ++round) {
                t0 = timer();
                for (size_t i = 0; i < n_dec; ++i) ops::matmul(ws[i % n_copies], x.data(), 1, y.data(), work.data());
                dec = std::min(dec, (timer() - t0) / double(n_dec));
            }

            // prefill: n_prefill tokens at once, best of a few
            double pre = 1e30;
            const double flop = 2.0 * double(s.n_out) * double(s.n_in) * double(n_prefill);
            const int reps = quick ? 1 : std::max(2, int(2e10 / flop));
            for (int r = 0; r < reps; ++r) {
                t0 = timer();
                ops::matmul(ws[size_t(r) % n_copies], x.data(), n_prefill, y.data(), work.data());
                pre = std::min(pre, timer() - t0);
            }
            std::printf("| %s | %s | %.3f | %.1f | %.1f | %.1f | %.1f |\n", type_name(t), s.name, dec * 1e3,
                        double(bytes) / dec / 1e9, pre * 1e3, flop / pre / 1e9, flop / pre / 1e9 / nth);
            std::fflush(stdout);
        }
    }
    return 0;
}
