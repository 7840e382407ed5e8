// gloas-kernel-bench: throughput of the matmul kernels on Llama-shaped weights.
//
//   gloas-kernel-bench [-t THREADS] [-n PREFILL_TOKENS] [--types q4_0,q8_0,q4_K,q5_K,q6_K,f16] [--quick]
//
// Prints a read-bandwidth probe (sum of a 1 GiB buffer with 1 and THREADS
// threads), then per weight type and shape: decode (n_tok = 1) as GB/s of
// weights streamed, cycling over enough copies of the matrix to exceed the
// caches, and prefill (n_tok = PREFILL_TOKENS) as GFLOP/s in total and per
// thread (2 * rows * cols * tokens / seconds).
#include "quant/simd.h"
#include "quant/types.h"
#include "tensor/bandwidth.h"
#include "tensor/error.h"
#include "tensor/ops.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}


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
    std::printf("usage: gloas-kernel-bench [-t THREADS] [-n PREFILL_TOKENS] [--types q4_0,q8_0,q4_K,q5_K,q6_K,f16] [--quick]\n");
}

} // namespace

int main(int argc, char ** argv) {
    int nth = 2;
    int64_t n_prefill = 512;
    bool quick = false;
    std::string types_arg = "q4_0,q8_0,q4_K,q5_K,q6_K,f16";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-t" && i + 1 < argc) nth = std::atoi(argv[++i]);
        else if (a == "-n" && i + 1 < argc) n_prefill = std::atoll(argv[++i]);
        else if (a == "--types" && i + 1 < argc) types_arg = argv[++i];
        else if (a == "--quick") quick = true;
        else if (a == "-h" || a == "--help") { usage(); return 0; }
        else { usage(); return 1; }
    }
    if (nth < 1 || n_prefill < 1) { usage(); return 1; }
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
                t0 = now();
                for (size_t i = 0; i < n_dec; ++i) ops::matmul(ws[i % n_copies], x.data(), 1, y.data(), work.data());
                dec = std::min(dec, (now() - t0) / double(n_dec));
            }

            // prefill: n_prefill tokens at once, best of a few
            double pre = 1e30;
            const double flop = 2.0 * double(s.n_out) * double(s.n_in) * double(n_prefill);
            const int reps = quick ? 1 : std::max(2, int(2e10 / flop));
            for (int r = 0; r < reps; ++r) {
                t0 = now();
                ops::matmul(ws[size_t(r) % n_copies], x.data(), n_prefill, y.data(), work.data());
                pre = std::min(pre, now() - t0);
            }
            std::printf("| %s | %s | %.3f | %.1f | %.1f | %.1f | %.1f |\n", type_name(t), s.name, dec * 1e3,
                        double(bytes) / dec / 1e9, pre * 1e3, flop / pre / 1e9, flop / pre / 1e9 / nth);
            std::fflush(stdout);
        }
    }
    return 0;
}
