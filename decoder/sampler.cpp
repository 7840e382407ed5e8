#include "decoder/sampler.h"

#include "base/error.h"

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <limits>

namespace gloas {

namespace {

constexpr int32_t MAX_REPEAT_LAST_N = 1 << 20;

uint64_t splitmix64(uint64_t & x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t clock_seed(const void * salt) {
    uint64_t x = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
    x ^= uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
    x ^= uint64_t(reinterpret_cast<uintptr_t>(salt));
    uint64_t s = splitmix64(x);
    return s == SEED_RANDOM ? 0 : s;
}

// Descending logit, ascending id: a strict total order once NaN is gone.
template <class T>
bool before(const T & a, const T & b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

} // namespace

void rng::seed_with(uint64_t seed) {
    uint64_t x = seed;
    for (auto & s : s_) s = splitmix64(x);
}

uint64_t rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

int32_t argmax(const float * x, int32_t n) {
    GLOAS_ASSERT(n > 0);
    int32_t best = -1;
    float best_x = 0.0f;
    for (int32_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) continue;
        if (best < 0 || x[i] > best_x) { best = i; best_x = x[i]; }
    }
    return best < 0 ? 0 : best;
}

sampler::sampler(const sampler_params & params, int32_t n_vocab) : p_(params), n_vocab_(n_vocab) {
    if (n_vocab <= 0) throw error(format("sampler: n_vocab must be positive, got %d", n_vocab));
    if (!std::isfinite(p_.temp))
        throw error(format("sampler: temp must be a finite number, got %g", double(p_.temp)));
    if (std::isnan(p_.top_p)) throw error("sampler: top_p is NaN");
    if (std::isnan(p_.min_p)) throw error("sampler: min_p is NaN");
    if (!std::isfinite(p_.repeat_penalty) || p_.repeat_penalty <= 0.0f)
        throw error(format("sampler: repeat_penalty must be a positive finite number, got %g",
                           double(p_.repeat_penalty)));
    if (!std::isfinite(p_.presence_penalty))
        throw error(format("sampler: presence_penalty must be a finite number, got %g", double(p_.presence_penalty)));
    if (!std::isfinite(p_.frequency_penalty))
        throw error(format("sampler: frequency_penalty must be a finite number, got %g", double(p_.frequency_penalty)));

    if (p_.top_k <= 0 || p_.top_k > n_vocab) p_.top_k = n_vocab;
    p_.top_p = std::clamp(p_.top_p, 0.0f, 1.0f);
    p_.min_p = std::clamp(p_.min_p, 0.0f, 1.0f);
    p_.repeat_last_n = std::clamp(p_.repeat_last_n, 0, MAX_REPEAT_LAST_N);
    if (p_.repeat_penalty == 1.0f && p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f) p_.repeat_last_n = 0;

    seed_ = p_.seed == SEED_RANDOM ? clock_seed(this) : p_.seed;
    p_.seed = seed_;
    rng_.seed_with(seed_);

    cand_.resize(size_t(n_vocab));
    if (p_.top_k < n_vocab && int64_t(p_.top_k) * 16 <= n_vocab) heap_.resize(size_t(p_.top_k));
    if (p_.top_p < 1.0f) bucket_w_.resize(N_BUCKETS);
    recent_.resize(size_t(p_.repeat_last_n));
    if (p_.repeat_last_n > 0) count_.assign(size_t(n_vocab), 0);
}

void sampler::accept(int32_t token) {
    if (token < 0 || token >= n_vocab_)
        throw error(format("sampler: token %d is outside the vocabulary [0, %d)", token, n_vocab_));
    if (p_.repeat_last_n == 0) return;
    recent_[size_t(recent_head_)] = token;
    recent_head_ = (recent_head_ + 1) % p_.repeat_last_n;
    recent_n_ = std::min(recent_n_ + 1, p_.repeat_last_n);
}

void sampler::reset() {
    recent_head_ = 0;
    recent_n_ = 0;
    rng_.seed_with(seed_);
}

void sampler::fill_candidates(const float * logits) {
    for (int32_t i = 0; i < n_vocab_; ++i) {
        float x = logits[i];
        if (std::isnan(x)) x = -std::numeric_limits<float>::infinity();
        else if (x > FLT_MAX) x = FLT_MAX;
        cand_[size_t(i)] = {x, i};
    }
    n_cand_ = n_vocab_;
    if (recent_n_ == 0) return;

    // Count the window, then penalize each distinct token once, clearing its
    // count as it goes (so count_ is all zero again afterwards).
    for (int32_t j = 0; j < recent_n_; ++j) count_[size_t(recent_[size_t(j)])]++;
    const float penalty = p_.repeat_penalty;
    const float freq = p_.frequency_penalty, present = p_.presence_penalty;
    for (int32_t j = 0; j < recent_n_; ++j) {
        const int32_t t = recent_[size_t(j)];
        const uint32_t c = count_[size_t(t)];
        if (c == 0) continue;
        count_[size_t(t)] = 0;
        float & x = cand_[size_t(t)].logit;
        x = x > 0.0f ? x / penalty : x * penalty;
        if (freq != 0.0f || present != 0.0f) x -= float(c) * freq + present;
    }
}

int32_t sampler::top_p_cut(float max_logit) {
    candidate * c = cand_.data();
    const int32_t n = n_cand_;
    const double target = double(p_.top_p);

    if (sorted_) {
        double z = 0.0;
        for (int32_t i = 0; i < n; ++i) z += double(std::exp(c[i].logit - max_logit));
        double cum = 0.0;
        for (int32_t i = 0; i < n; ++i) {
            cum += double(std::exp(c[i].logit - max_logit));
            if (cum >= target * z) return i + 1;
        }
        return n;
    }

    // Unsorted: bucket by distance below the max (bucket 0 holds the max; the
    // bucket index never increases with the logit), find the bucket where the
    // cumulative weight crosses the target, move the buckets above it to the
    // front and sort only the crossing bucket.
    constexpr int32_t NB = N_BUCKETS;
    float lo = max_logit;
    for (int32_t i = 0; i < n; ++i)
        if (c[i].logit < lo && std::isfinite(c[i].logit)) lo = c[i].logit;
    const float span = std::min(max_logit - lo, 64.0f);  // weights beyond e^-64 share the last bucket
    const float scale = span > 0.0f ? float(NB) / span : 0.0f;
    auto bucket_of = [&](float x) {
        if (!std::isfinite(x)) return NB - 1;  // -inf (+inf is clamped away)
        const float d = (max_logit - x) * scale;
        return d >= float(NB - 1) ? NB - 1 : int32_t(d);
    };

    double * w = bucket_w_.data();
    std::fill(w, w + NB, 0.0);
    double z = 0.0;
    for (int32_t i = 0; i < n; ++i) {
        const double wi = double(std::exp(c[i].logit - max_logit));
        z += wi;
        w[bucket_of(c[i].logit)] += wi;
    }
    const double goal = target * z;
    double cum = 0.0;
    int32_t b = 0;
    while (b < NB - 1 && cum + w[b] < goal) cum += w[b++];

    candidate * mid = std::partition(c, c + n, [&](const candidate & x) { return bucket_of(x.logit) < b; });
    candidate * end = std::partition(mid, c + n, [&](const candidate & x) { return bucket_of(x.logit) == b; });
    std::sort(mid, end, [](const candidate & x, const candidate & y) { return before(x, y); });
    for (candidate * x = mid; x < end; ++x) {
        cum += double(std::exp(x->logit - max_logit));
        if (cum >= goal) return int32_t(x - c) + 1;
    }
    return int32_t(end - c);
}

int32_t sampler::sample(const float * logits) {
    GLOAS_ASSERT(logits != nullptr);
    fill_candidates(logits);
    candidate * c = cand_.data();
    auto cmp = [](const candidate & a, const candidate & b) { return before(a, b); };

    if (p_.temp <= 0.0f) {
        // Greedy: the first of the candidates in id order with the largest logit.
        int32_t best = 0;
        float best_logit = c[0].logit;
        for (int32_t i = 1; i < n_cand_; ++i)
            if (c[i].logit > best_logit) { best = i; best_logit = c[i].logit; }
        return c[best].id;
    }

    // Top-k. Small k: one pass keeping the best k in a heap whose front is the
    // worst kept (most tokens fail one comparison with it), leaving them
    // sorted. Large k: nth_element, unsorted.
    sorted_ = false;
    if (p_.top_k < n_cand_) {
        const int32_t k = p_.top_k;
        if (!heap_.empty()) {
            candidate * h = heap_.data();
            std::copy(c, c + k, h);
            std::make_heap(h, h + k, cmp);
            float worst = h[0].logit;
            // cand_ is in id order, so a later token tying the worst kept one
            // ranks below it: strict > is the full order here.
            for (int32_t i = k; i < n_cand_; ++i) {
                if (c[i].logit > worst) {
                    std::pop_heap(h, h + k, cmp);
                    h[k - 1] = c[i];
                    std::push_heap(h, h + k, cmp);
                    worst = h[0].logit;
                }
            }
            std::sort_heap(h, h + k, cmp);
            std::copy(h, h + k, c);
            sorted_ = true;
        } else {
            std::nth_element(c, c + k, c + n_cand_, cmp);
        }
        n_cand_ = k;
    }

    float max_logit = c[0].logit;
    for (int32_t i = 1; i < n_cand_; ++i) max_logit = std::max(max_logit, c[i].logit);
    if (max_logit == -std::numeric_limits<float>::infinity()) {
        // Nothing has any probability: the greedy choice (lowest id).
        rng_.next();
        int32_t id = c[0].id;
        for (int32_t i = 1; i < n_cand_; ++i) id = std::min(id, c[i].id);
        return id;
    }

    // Top-p at temperature 1 over what top-k left.
    if (p_.top_p < 1.0f && n_cand_ > 1) n_cand_ = top_p_cut(max_logit);

    // Min-p: keep p >= min_p * p_max, i.e. logit >= max_logit + log(min_p).
    if (p_.min_p > 0.0f && n_cand_ > 1) {
        const double threshold = double(max_logit) + std::log(double(p_.min_p));
        int32_t keep = 0;
        for (int32_t i = 0; i < n_cand_; ++i)
            if (double(c[i].logit) >= threshold) c[keep++] = c[i];
        GLOAS_ASSERT(keep >= 1);  // the max itself always passes
        n_cand_ = keep;
    }

    // Temperature and softmax (the weights overwrite the logits), then one draw.
    const float temp = p_.temp;
    double z = 0.0;
    for (int32_t i = 0; i < n_cand_; ++i) {
        c[i].logit = std::exp((c[i].logit - max_logit) / temp);
        z += double(c[i].logit);
    }
    const double u = rng_.uniform() * z;
    double cum = 0.0;
    for (int32_t i = 0; i < n_cand_; ++i) {
        cum += double(c[i].logit);
        if (u < cum) return c[i].id;
    }
    // Rounding left u at the very top: the last token with any weight.
    for (int32_t i = n_cand_ - 1; i > 0; --i)
        if (c[i].logit > 0.0f) return c[i].id;
    return c[0].id;
}

} // namespace gloas
