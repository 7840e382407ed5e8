// Samplers: greedy exactness, reproducibility, each filter against a
// brute-force reference distribution, the repetition penalty, parameter checks
// and no allocation per sample.
#include "decoder/sampler.h"
#include "base/error.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>
#include <vector>

// Counts global allocations so a test can check that sample() makes none.
static std::atomic<long> g_allocs{0};
void * operator new(size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void * p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void * operator new[](size_t n) { return operator new(n); }
void operator delete(void * p) noexcept { std::free(p); }
void operator delete[](void * p) noexcept { std::free(p); }
void operator delete(void * p, size_t) noexcept { std::free(p); }
void operator delete[](void * p, size_t) noexcept { std::free(p); }

using namespace gloas;

namespace {

sampler_params params_with(float temp, int32_t top_k = 0, float top_p = 1.0f, float min_p = 0.0f,
                           uint64_t seed = 1234) {
    sampler_params p;
    p.temp = temp, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;  // the filters
    p.seed = seed;
    return p;
}

// Exact distribution the sampler should draw from, by full sort (no penalty).
std::vector<double> reference_probs(const std::vector<float> & logits, const sampler_params & p) {
    const int n = int(logits.size());
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
        return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
    });
    int keep = (p.top_k <= 0 || p.top_k > n) ? n : p.top_k;
    const double m = logits[size_t(order[0])];
    if (p.top_p < 1.0f) {
        double z = 0;
        for (int i = 0; i < keep; ++i) z += std::exp(logits[size_t(order[size_t(i)])] - m);
        double cum = 0;
        int k = 0;
        while (k < keep) {
            cum += std::exp(logits[size_t(order[size_t(k)])] - m);
            ++k;
            if (cum >= p.top_p * z) break;
        }
        keep = k;
    }
    if (p.min_p > 0.0f) {
        int k = 0;
        while (k < keep && std::exp(logits[size_t(order[size_t(k)])] - m) >= p.min_p) ++k;
        keep = k;
    }
    std::vector<double> probs(size_t(n), 0.0);
    double z = 0;
    for (int i = 0; i < keep; ++i) z += std::exp((logits[size_t(order[size_t(i)])] - m) / p.temp);
    for (int i = 0; i < keep; ++i)
        probs[size_t(order[size_t(i)])] = std::exp((logits[size_t(order[size_t(i)])] - m) / p.temp) / z;
    return probs;
}

std::vector<double> empirical(sampler & s, const std::vector<float> & logits, int draws) {
    std::vector<double> freq(logits.size(), 0.0);
    int out_of_range = 0;
    for (int i = 0; i < draws; ++i) {
        const int32_t t = s.sample(logits.data());
        if (t < 0 || t >= int32_t(logits.size())) ++out_of_range;
        else freq[size_t(t)] += 1.0 / draws;
    }
    CHECK(out_of_range == 0);
    return freq;
}

// Every frequency within tol of its probability (absolute), and tokens with
// probability 0 never drawn.
void check_matches(const std::vector<double> & freq, const std::vector<double> & probs, double tol) {
    for (size_t i = 0; i < probs.size(); ++i) {
        CAPTURE(i);
        CAPTURE(probs[i]);
        if (probs[i] == 0.0) CHECK(freq[i] == 0.0);
        else CHECK(std::fabs(freq[i] - probs[i]) <= tol);
    }
}

std::vector<float> random_logits(int n, uint64_t seed, float scale = 3.0f) {
    rng r(seed);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto & x : v) x = float((r.uniform() * 2.0 - 1.0) * scale);
    return v;
}

} // namespace

TEST_CASE("rng: xoshiro256** is deterministic per seed and uniform in [0, 1)") {
    rng a(42), b(42), c(43);
    bool differs = false;
    for (int i = 0; i < 100; ++i) {
        const uint64_t x = a.next();
        CHECK(x == b.next());
        if (x != c.next()) differs = true;
    }
    CHECK(differs);
    double sum = 0;
    for (int i = 0; i < 10000; ++i) {
        const double u = a.uniform();
        REQUIRE(u >= 0.0);
        REQUIRE(u < 1.0);
        sum += u;
    }
    CHECK(std::fabs(sum / 10000 - 0.5) < 0.02);
}

TEST_CASE("greedy picks the argmax, lowest id on ties, NaN never") {
    const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
    for (float temp : {0.0f, -1.0f}) {
        sampler s(params_with(temp), int32_t(logits.size()));
        for (int i = 0; i < 5; ++i) CHECK(s.sample(logits.data()) == 1);
    }
    CHECK(argmax(logits.data(), 5) == 1);

    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> with_nan = {nan, -2.0f, -1.0f, nan};
    sampler g(params_with(0.0f), 4);
    CHECK(g.sample(with_nan.data()) == 2);
    CHECK(argmax(with_nan.data(), 4) == 2);
    const std::vector<float> all_nan = {nan, nan, -inf};
    sampler g3(params_with(0.0f), 3);
    CHECK(g3.sample(all_nan.data()) == 0);

    // Non-greedy with NaN / inf logits stays in range and avoids NaN tokens.
    const std::vector<float> odd = {nan, inf, 1.0f, -inf};
    sampler t(params_with(1.0f), 4);
    for (int i = 0; i < 50; ++i) CHECK(t.sample(odd.data()) == 1);
    const std::vector<float> dead = {nan, -inf, -inf};
    sampler d(params_with(1.0f), 3);
    CHECK(d.sample(dead.data()) == 0);
}

TEST_CASE("greedy is exact on a large vocabulary") {
    const int n = 32000;
    for (uint64_t seed = 1; seed <= 5; ++seed) {
        auto logits = random_logits(n, seed);
        logits[size_t(seed * 1000)] = 10.0f;
        logits[size_t(seed * 3000)] = 10.0f;  // tie, higher id
        sampler s(params_with(0.0f), n);
        CHECK(s.sample(logits.data()) == int32_t(seed * 1000));
    }
}

TEST_CASE("same seed gives the same sequence, different seeds differ") {
    const auto logits = random_logits(1000, 7, 1.0f);
    auto run = [&](uint64_t seed) {
        sampler s(params_with(1.0f, 0, 1.0f, 0.0f, seed), 1000);
        std::vector<int32_t> out;
        for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits.data()));
        return out;
    };
    CHECK(run(1) == run(1));
    CHECK(run(99) == run(99));
    CHECK(run(1) != run(2));

    // A clock seed is reported and reproduces the run; reset() restarts it.
    sampler a(params_with(1.0f, 0, 1.0f, 0.0f, SEED_RANDOM), 1000);
    CHECK(a.seed() != SEED_RANDOM);
    CHECK(a.params().seed == a.seed());
    std::vector<int32_t> first;
    for (int i = 0; i < 64; ++i) first.push_back(a.sample(logits.data()));
    CHECK(run(a.seed()) == first);
    a.reset();
    std::vector<int32_t> again;
    for (int i = 0; i < 64; ++i) again.push_back(a.sample(logits.data()));
    CHECK(again == first);
}

TEST_CASE("top_k = 1 and a tiny top_p equal greedy") {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
        const int n = seed % 2 ? 32000 : 17;
        auto logits = random_logits(n, seed);
        if (seed % 3 == 0) logits[size_t(n - 1)] = logits[size_t(argmax(logits.data(), n))];  // a tie
        const int32_t want = argmax(logits.data(), n);
        sampler k1(params_with(1.5f, 1, 1.0f, 0.0f, seed), n);
        sampler p0(params_with(1.5f, 0, 1e-6f, 0.0f, seed), n);
        sampler pz(params_with(1.5f, 40, 0.0f, 0.0f, seed), n);
        sampler m1(params_with(1.5f, 0, 1.0f, 1.0f, seed), n);
        for (int i = 0; i < 10; ++i) {
            CHECK(k1.sample(logits.data()) == want);
            CHECK(p0.sample(logits.data()) == want);
            CHECK(pz.sample(logits.data()) == want);
            if (seed % 3 != 0) CHECK(m1.sample(logits.data()) == want);  // min_p 1 keeps ties
        }
    }
}

TEST_CASE("temp 1 over 4 tokens matches softmax (20000 draws, fixed seed)") {
    const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
    sampler s(params_with(1.0f, 0, 1.0f, 0.0f, 20240601), 4);
    const auto freq = empirical(s, logits, 20000);
    double z = 0;
    for (float x : logits) z += std::exp(x);
    for (size_t i = 0; i < 4; ++i) {
        const double p = std::exp(logits[i]) / z;
        CAPTURE(i);
        CHECK(std::fabs(freq[i] - p) <= 0.03 * p + 0.002);  // a few percent
    }
}

TEST_CASE("each filter matches a brute-force reference distribution") {
    struct combo { float temp; int32_t top_k; float top_p; float min_p; };
    const combo combos[] = {
        {1.0f, 0, 1.0f, 0.0f},  {0.5f, 0, 1.0f, 0.0f},  {2.0f, 0, 1.0f, 0.0f},
        {1.0f, 3, 1.0f, 0.0f},  {1.0f, 0, 0.6f, 0.0f},  {1.0f, 0, 1.0f, 0.2f},
        {0.7f, 5, 0.9f, 0.05f}, {1.3f, 40, 0.95f, 0.0f}, {1.0f, 8, 0.3f, 0.0f},
    };
    const auto logits = random_logits(12, 3, 2.0f);
    uint64_t seed = 100;
    for (const auto & c : combos) {
        const auto p = params_with(c.temp, c.top_k, c.top_p, c.min_p, ++seed);
        CAPTURE(c.temp);
        CAPTURE(c.top_k);
        CAPTURE(c.top_p);
        CAPTURE(c.min_p);
        sampler s(p, 12);
        check_matches(empirical(s, logits, 20000), reference_probs(logits, p), 0.015);
    }
}

TEST_CASE("the heap top-k path (k <= n/16) matches the reference distribution") {
    const auto logits = random_logits(400, 8, 2.0f);
    for (const auto & kp : {std::pair<int32_t, float>{5, 1.0f}, {20, 0.8f}, {25, 0.3f}}) {
        const int32_t top_k = kp.first;  // no structured binding: CAPTURE captures it (clang 14)
        const float top_p = kp.second;
        const auto p = params_with(0.9f, top_k, top_p, 0.0f, uint64_t(top_k));
        CAPTURE(top_k);
        CAPTURE(top_p);
        sampler s(p, 400);
        check_matches(empirical(s, logits, 20000), reference_probs(logits, p), 0.015);
    }
}

TEST_CASE("ties at a top-k or top-p cut keep the lowest ids") {
    struct combo { int n; int32_t top_k; float top_p; int32_t kept; };
    const combo combos[] = {
        {10, 0, 0.35f, 4},   // bucketed top-p: cumulative 0.1, 0.2, 0.3, 0.4
        {10, 3, 1.0f, 3},    // nth_element top-k
        {64, 3, 1.0f, 3},    // heap top-k
        {64, 3, 0.5f, 2},    // heap top-k, then top-p over the sorted set
        {64, 40, 0.09f, 4},  // nth_element top-k, then bucketed top-p: 4/40 >= 0.09
    };
    for (const auto & c : combos) {
        CAPTURE(c.n);
        CAPTURE(c.top_k);
        CAPTURE(c.top_p);
        const std::vector<float> logits(static_cast<size_t>(c.n), 0.25f);
        sampler s(params_with(1.0f, c.top_k, c.top_p, 0.0f, 9), c.n);
        const auto freq = empirical(s, logits, 4000);
        for (int i = 0; i < c.n; ++i) {
            CAPTURE(i);
            if (i < c.kept) CHECK(std::fabs(freq[size_t(i)] - 1.0 / c.kept) < 0.05);
            else CHECK(freq[size_t(i)] == 0.0);
        }
    }
}

TEST_CASE("top-p on a large vocabulary draws only from the nucleus") {
    const int n = 32000;
    auto logits = random_logits(n, 11, 1.0f);
    for (int i = 0; i < 300; ++i) logits[size_t(i * 97)] = 6.0f + 0.01f * float(i);  // a nucleus of ~300
    for (int32_t top_k : {0, 40, 5000}) {
        const auto p = params_with(0.9f, top_k, 0.7f, 0.0f, 5);
        const auto probs = reference_probs(logits, p);
        sampler s(p, n);
        int outside = 0;
        for (int i = 0; i < 100; ++i) {
            const int32_t t = s.sample(logits.data());
            if (t < 0 || t >= n || probs[size_t(t)] == 0.0) ++outside;
        }
        CHECK(outside == 0);
    }
}

TEST_CASE("repetition penalty lowers repeated tokens, handles negative logits, counts each token once") {
    sampler_params p = params_with(0.0f);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 4;

    // Positive logit divided: 2 -> 1 < 1.5.
    const std::vector<float> pos = {2.0f, 1.5f, -5.0f};
    sampler a(p, 3);
    CHECK(a.sample(pos.data()) == 0);
    a.accept(0);
    CHECK(a.sample(pos.data()) == 1);

    // Negative logit multiplied: -1 -> -2 < -1.5.
    const std::vector<float> neg = {-1.0f, -1.5f, -5.0f};
    sampler b(p, 3);
    CHECK(b.sample(neg.data()) == 0);
    b.accept(0);
    CHECK(b.sample(neg.data()) == 1);

    // Three repeats still penalize once: 2 -> 1 > 0.9 (thrice would be 0.25).
    const std::vector<float> once = {2.0f, 0.9f, -5.0f};
    sampler c(p, 3);
    for (int i = 0; i < 3; ++i) c.accept(0);
    CHECK(c.sample(once.data()) == 0);

    // The window: after repeat_last_n other tokens, token 0 is free again.
    sampler d(p, 3);
    d.accept(0);
    CHECK(d.sample(pos.data()) == 1);
    for (int i = 0; i < 4; ++i) d.accept(2);
    CHECK(d.sample(pos.data()) == 0);
    // reset() forgets the history.
    d.accept(0);
    CHECK(d.sample(pos.data()) == 1);
    d.reset();
    CHECK(d.sample(pos.data()) == 0);

    // Stochastic: the penalized token's frequency drops to its new softmax share.
    const std::vector<float> four = {1.0f, 1.0f, 1.0f, 1.0f};
    sampler_params q = params_with(1.0f, 0, 1.0f, 0.0f, 77);
    q.repeat_penalty = 2.0f;
    sampler e(q, 4);
    e.accept(2);
    const auto freq = empirical(e, four, 20000);
    const double p2 = std::exp(0.5) / (3 * std::exp(1.0) + std::exp(0.5));
    CHECK(std::fabs(freq[2] - p2) < 0.015);
    CHECK(freq[2] < 0.2);
}

TEST_CASE("presence and frequency penalties subtract from the logits of tokens in the window, as llama.cpp does") {
    // Greedy, so the penalized logits decide: each case is built so that the
    // penalty as llama.cpp applies it (after the repetition penalty, counts
    // over the last repeat_last_n tokens) flips the choice exactly at the
    // boundary it predicts.
    sampler_params p = params_with(0.0f);
    p.repeat_last_n = 8;

    // Presence: once is enough, and more occurrences take nothing more.
    p.presence_penalty = 0.5f;
    const std::vector<float> close = {2.0f, 1.6f, -5.0f};  // 2 - 0.5 = 1.5 < 1.6
    sampler a(p, 3);
    CHECK(a.sample(close.data()) == 0);
    a.accept(0);
    CHECK(a.sample(close.data()) == 1);
    const std::vector<float> far = {2.0f, 1.4f, -5.0f};    // 1.5 > 1.4 however often 0 occurred
    sampler b(p, 3);
    for (int i = 0; i < 5; ++i) b.accept(0);
    CHECK(b.sample(far.data()) == 0);

    // Frequency: count x penalty; 0 seen 3 times: 2 - 3 x 0.2 = 1.4.
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.2f;
    const std::vector<float> f1 = {2.0f, 1.45f, -5.0f};
    const std::vector<float> f2 = {2.0f, 1.35f, -5.0f};
    sampler c(p, 3);
    for (int i = 0; i < 3; ++i) c.accept(0);
    CHECK(c.sample(f1.data()) == 1);
    CHECK(c.sample(f2.data()) == 0);
    // Only the window counts: after seven more tokens one of the three is left in the last 8.
    for (int i = 0; i < 7; ++i) c.accept(2);
    CHECK(c.sample(f1.data()) == 0);  // 0 seen once in the last 8: 2 - 0.2 = 1.8

    // All three together: 4 / 2 (repeat) - 2 x 0.25 (frequency) - 0.5 (presence) = 1.
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.25f;
    p.presence_penalty = 0.5f;
    const std::vector<float> all_hi = {4.0f, 0.99f, -5.0f};
    const std::vector<float> all_lo = {4.0f, 1.01f, -5.0f};
    sampler d(p, 3);
    d.accept(0);
    d.accept(0);
    CHECK(d.sample(all_hi.data()) == 0);
    CHECK(d.sample(all_lo.data()) == 1);

    // Negative penalties favour what was said; a negative logit is
    // multiplied by the repetition penalty before the subtraction.
    sampler_params n = params_with(0.0f);
    n.repeat_last_n = 4;
    n.presence_penalty = -1.0f;
    sampler e(n, 3);
    e.accept(1);
    const std::vector<float> fav = {1.0f, 0.5f, -5.0f};  // 0.5 + 1 = 1.5 > 1
    CHECK(e.sample(fav.data()) == 1);
    n.presence_penalty = 0.5f;
    n.repeat_penalty = 2.0f;
    sampler g(n, 3);
    g.accept(0);
    const std::vector<float> neg = {-1.0f, -2.4f, -5.0f};  // -1 x 2 - 0.5 = -2.5 < -2.4
    CHECK(g.sample(neg.data()) == 1);

    // With only presence or frequency set the window is kept (repeat_last_n
    // is not zeroed as it is when every penalty is off).
    sampler_params w = params_with(0.0f);
    w.repeat_last_n = 16;
    w.frequency_penalty = 0.1f;
    CHECK(sampler(w, 10).params().repeat_last_n == 16);
    w.frequency_penalty = 0.0f;
    CHECK(sampler(w, 10).params().repeat_last_n == 0);
}

TEST_CASE("invalid parameters are clamped or rejected") {
    // Given top_k, top_p, min_p and repeat_last_n, with 100 tokens: what the
    // sampler keeps (every penalty is off, so the window is 0).
    struct clamp {
        int32_t top_k;
        float top_p, min_p;
        int32_t repeat_last_n;
        int32_t kept_top_k;
        float kept_top_p, kept_min_p;
    };
    const clamp rows[] = {
        {-5, 1.5f, -0.5f, -1, 100, 1.0f, 0.0f},
        {1000, -1.0f, 2.0f, sampler_params().repeat_last_n, 100, 0.0f, 1.0f},
    };
    for (const clamp & c : rows) {
        CAPTURE(c.top_k);
        sampler_params p = params_with(sampler_params().temp, c.top_k, c.top_p, c.min_p, 1);
        p.repeat_last_n = c.repeat_last_n;
        const sampler_params kept = sampler(p, 100).params();
        CHECK(kept.top_k == c.kept_top_k);
        CHECK(kept.top_p == c.kept_top_p);
        CHECK(kept.min_p == c.kept_min_p);
        CHECK(kept.repeat_last_n == 0);
    }

    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto bad = [&](auto && edit) {
        sampler_params b;
        edit(b);
        CHECK_THROWS_AS(sampler(b, 10), gloas::error);
    };
    bad([&](sampler_params & b) { b.temp = nan; });
    bad([&](sampler_params & b) { b.temp = std::numeric_limits<float>::infinity(); });
    bad([&](sampler_params & b) { b.top_p = nan; });
    bad([&](sampler_params & b) { b.min_p = nan; });
    bad([&](sampler_params & b) { b.repeat_penalty = 0.0f; });
    bad([&](sampler_params & b) { b.repeat_penalty = -1.0f; });
    bad([&](sampler_params & b) { b.repeat_penalty = std::numeric_limits<float>::infinity(); });
    bad([&](sampler_params & b) { b.presence_penalty = nan; });
    bad([&](sampler_params & b) { b.frequency_penalty = std::numeric_limits<float>::infinity(); });
    CHECK_THROWS_AS(sampler(sampler_params(), 0), gloas::error);

    sampler t(sampler_params(), 10);
    CHECK_THROWS_AS(t.accept(10), gloas::error);
    CHECK_THROWS_AS(t.accept(-1), gloas::error);
    CHECK_NOTHROW(t.accept(9));
}

TEST_CASE("sample() allocates nothing") {
    const int n = 32000;
    const auto logits = random_logits(n, 21);
    sampler_params p;  // the defaults: top-k 40, top-p 0.95
    p.seed = 3;
    p.repeat_penalty = 1.1f;
    p.presence_penalty = 0.3f;
    p.frequency_penalty = 0.2f;
    sampler a(p, n);
    sampler b(params_with(0.8f, 0, 0.9f, 0.05f, 4), n);
    sampler g(params_with(0.0f), n);
    const long before = g_allocs.load();
    for (int i = 0; i < 20; ++i) {
        a.accept(a.sample(logits.data()));
        b.accept(b.sample(logits.data()));
        g.accept(g.sample(logits.data()));
    }
    const long after = g_allocs.load();
    CHECK(after == before);
}
