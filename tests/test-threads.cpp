// The thread pool of the parallel ops (tensor/thread-pool.h): every item run
// once, nested and concurrent jobs, exceptions, a late thread's share taken
// by the others; and results that do not depend on the thread count (matmul
// for every weight type and the tile / direct token counts, a whole forward
// pass).
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/random-model.h"
#include "quant/quant.h"
#include "tensor/ops.h"
#include "tensor/thread-pool.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace gloas;

namespace {

// Restores the thread count a case changed.
struct threads_guard {
    int saved = ops::n_threads();
    ~threads_guard() { ops::set_n_threads(saved); }
};

std::vector<float> randn(std::mt19937 & rng, int64_t n, float sigma = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sigma);
    std::vector<float> x(static_cast<size_t>(n));
    for (auto & v : x) v = nd(rng);
    return x;
}

std::vector<char> make_weights(type t, int64_t n_out, int64_t n_in, std::mt19937 & rng) {
    const size_t rb = row_size(t, n_in);
    std::vector<char> w(rb * size_t(n_out) + 64);
    for (int64_t r = 0; r < n_out; ++r) {
        std::vector<float> x = randn(rng, n_in, 0.5f);
        traits(t).from_float_ref(x.data(), w.data() + size_t(r) * rb, n_in);
    }
    return w;
}

} // namespace

TEST_CASE("parallel_for runs every item exactly once, for any size, thread count and chunk") {
    for (int nth : {1, 2, 3, 8}) {
        for (int64_t n : {1, 2, 3, 7, 64, 1000, 100003}) {
            for (int64_t chunk : {0, 1, 5, 1000}) {
                std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
                for (auto & h : hits) h.store(0);
                std::atomic<int64_t> calls{0};
                ops::parallel_for(n, nth, chunk, [&](int64_t b, int64_t e) {
                    CHECK(0 <= b);
                    CHECK(b < e);
                    CHECK(e <= n);
                    if (chunk > 0 && nth > 1 && n > 1) CHECK(e - b <= chunk);
                    calls.fetch_add(1);
                    for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
                });
                int64_t bad = 0;
                for (auto & h : hits) bad += h.load() != 1;
                CHECK_MESSAGE(bad == 0, "nth=", nth, " n=", n, " chunk=", chunk);
                CHECK(calls.load() >= 1);
            }
        }
    }
    // a job over no items calls nothing
    bool called = false;
    ops::parallel_for(0, 4, 0, [&](int64_t, int64_t) { called = true; });
    CHECK(!called);
}

TEST_CASE("parallel_for: a job inside a job runs on the calling thread; jobs from two threads both finish") {
    const int64_t n = 64, m = 50;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n * m));
    for (auto & h : hits) h.store(0);
    ops::parallel_for(n, 4, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const std::thread::id me = std::this_thread::get_id();
            ops::parallel_for(m, 4, 1, [&](int64_t b2, int64_t e2) {
                const bool same = std::this_thread::get_id() == me;
                CHECK(same);
                for (int64_t j = b2; j < e2; ++j) hits[size_t(i * m + j)].fetch_add(1);
            });
        }
    });
    int64_t bad = 0;
    for (auto & h : hits) bad += h.load() != 1;
    CHECK(bad == 0);

    // two callers at once: one job runs on the pool, the other inline
    std::atomic<int64_t> sum[2];
    sum[0] = sum[1] = 0;
    auto caller = [&](int k) {
        for (int rep = 0; rep < 200; ++rep)
            ops::parallel_for(1000, 3, 0, [&](int64_t b, int64_t e) {
                int64_t s = 0;
                for (int64_t i = b; i < e; ++i) s += i;
                sum[k].fetch_add(s);
            });
    };
    std::thread a(caller, 0), b(caller, 1);
    a.join();
    b.join();
    CHECK(sum[0].load() == 200 * 999 * 1000 / 2);
    CHECK(sum[1].load() == 200 * 999 * 1000 / 2);
}

TEST_CASE("parallel_for: an exception in a chunk reaches the caller after the job, and the pool goes on") {
    std::atomic<int> ran{0};
    bool caught = false;
    try {
        ops::parallel_for(100, 3, 1, [&](int64_t b, int64_t) {
            ran.fetch_add(1);
            if (b == 70) throw std::runtime_error("chunk 70");
        });
    } catch (const std::runtime_error & e) {
        caught = std::strcmp(e.what(), "chunk 70") == 0;
    }
    CHECK(caught);
    CHECK(ran.load() == 100);  // the other chunks ran to the end
    std::atomic<int64_t> s{0};
    ops::parallel_for(100, 3, 1, [&](int64_t b, int64_t e) { s.fetch_add(e - b); });
    CHECK(s.load() == 100);
}

TEST_CASE("parallel_for: the caller takes the share of a thread that is slow") {
    // The worker's first chunk does not end before every other item is done:
    // the caller does its own share (items 0..31) and takes what is left of
    // the worker's instead of waiting for it, so the worker runs one chunk at
    // most (a chunk is at least 1/16 of a share). (Bounded wait: a pool that leaves the share to the worker fails
    // the checks instead of hanging.)
    // Seven workers started by an earlier job with more threads must not
    // join a job of two.
    ops::parallel_for(800, 8, 1, [](int64_t, int64_t) {});
    const std::thread::id caller = std::this_thread::get_id();
    std::atomic<int> by_caller{0}, by_worker{0}, worker_chunks{0};
    ops::parallel_for(64, 2, 1, [&](int64_t b, int64_t e) {
        if (std::this_thread::get_id() == caller) {
            by_caller.fetch_add(int(e - b));
            return;
        }
        worker_chunks.fetch_add(1);
        by_worker.fetch_add(int(e - b));
        const auto t0 = std::chrono::steady_clock::now();
        while (by_caller.load() + by_worker.load() < 64 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
            std::this_thread::yield();
    });
    CHECK(by_caller.load() + by_worker.load() == 64);
    CHECK(worker_chunks.load() <= 1);  // one chunk (the pool may make chunks of a few items)
    CHECK(by_caller.load() >= 56);
}

TEST_CASE("default thread count: between 1 and the physical cores; busy CPUs seen") {
    const int d = ops::default_threads();
    CHECK(d >= 1);
    CHECK(d <= ops::physical_cores());
    // a thread of ours spinning keeps a CPU busy
    std::atomic<bool> stop{false};
    std::thread spin([&] {
        while (!stop.load(std::memory_order_relaxed)) {
        }
    });
    const int busy = ops::busy_cpus(100);
    stop = true;
    spin.join();
    CHECK(busy >= 1);
}

TEST_CASE("matmul results do not depend on the thread count (every type, direct and tile token counts)") {
    threads_guard guard;
    std::mt19937 rng(7);
    const type types[] = {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0, type::Q4_1, type::Q5_0,
                          type::Q4_K, type::Q5_K, type::Q6_K, type::Q2_K, type::Q3_K};
    const int64_t n_in = 256, n_out = 1001;  // enough work for 3 threads even at one token
    for (type t : types) {
        std::vector<char> wbuf = make_weights(t, n_out, n_in, rng);
        std::vector<char> wbuf2 = make_weights(t, 37, n_in, rng);
        const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
        const tensor w2 = make_tensor_2d(t, n_in, 37, wbuf2.data());
        for (int64_t n_tok : {1, 2, 3, 4, 5, 17, 40}) {
            std::vector<float> x = randn(rng, n_tok * n_in);
            std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok) + 64);
            std::vector<float> y1, y2;
            for (int nth : {1, 2, 3}) {
                ops::set_n_threads(nth);
                std::vector<float> y(size_t(n_tok * n_out), -1.0f), yb(size_t(n_tok * 37), -1.0f);
                ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                // and a set of two matrices, split together
                const tensor * ws[2] = {&w2, &w};
                std::vector<float> ya(size_t(n_tok * n_out), -1.0f);
                float * ys[2] = {yb.data(), ya.data()};
                ops::matmul_n(ws, ys, 2, x.data(), n_tok, work.data());
                CHECK_MESSAGE(std::memcmp(y.data(), ya.data(), y.size() * sizeof(float)) == 0, type_name(t), " n_tok=", n_tok);
                if (nth == 1) {
                    y1 = y;
                    y2 = yb;
                } else {
                    CHECK_MESSAGE(std::memcmp(y.data(), y1.data(), y.size() * sizeof(float)) == 0, type_name(t),
                                  " n_tok=", n_tok, " threads=", nth);
                    CHECK_MESSAGE(std::memcmp(yb.data(), y2.data(), yb.size() * sizeof(float)) == 0, type_name(t),
                                  " n_tok=", n_tok, " threads=", nth);
                }
            }
        }
    }
}

TEST_CASE("a forward pass gives the same logits with 1, 2 and 3 threads (prompt chunks and decode steps)") {
    threads_guard guard;
    // wide enough that every matmul and the prompt's attention take threads
    random_model_params p;
    p.hp.name = "threads";
    p.hp.n_vocab = 512;
    p.hp.n_ctx = 256;
    p.hp.n_embd = 256;
    p.hp.n_ff = 768;
    p.hp.n_head = 8;
    p.hp.n_head_kv = 4;
    p.hp.n_layer = 2;
    p.hp.wtype = type::Q4_0;
    const std::string path = test::temp_dir("threads") + "/m.gguf";
    write_random_model(path, p);
    auto m = model::load({path, ""});
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(1 + (i * 37) % 500);
    std::vector<std::vector<float>> runs;
    for (int nth : {1, 2, 3}) {
        ops::set_n_threads(nth);
        context_params cp;
        cp.kv.kv_type = type::F16;
        cp.kv.keep_tails = false;
        cp.n_ubatch = 16;  // prompt chunks of 16, 16 and 8 tokens
        context ctx(*m, cp);
        std::vector<float> all;
        const float * l = ctx.eval(prompt.data(), int32_t(prompt.size()), [&](int32_t, const float * lg) {
            all.insert(all.end(), lg, lg + m->hp.n_vocab);
        });
        for (int s = 0; s < 5; ++s) {
            const int32_t tok = 1 + s * 11;
            l = ctx.eval(&tok, 1);
            all.insert(all.end(), l, l + m->hp.n_vocab);
        }
        runs.push_back(all);
    }
    REQUIRE(runs[0].size() == size_t(45 * 512));
    CHECK(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)) == 0);
    CHECK(std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * sizeof(float)) == 0);
}
