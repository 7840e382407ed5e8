// Token sampling: greedy, repetition, presence and frequency penalties, top-k,
// top-p, min-p, temperature, seeded draw.
//
// temp <= 0 is greedy: the argmax of the (penalized) logits, the lowest id on
// exact ties, no random number consumed. It is exact, so decoder goldens use it.
//
// Otherwise the steps run in llama.cpp's order, each on what the previous one
// left:
//   1. penalties over the last repeat_last_n accepted tokens, as llama.cpp's
//      penalties sampler applies them, each distinct token once with c its
//      count in that window: logit > 0 ? logit / repeat_penalty
//      : logit * repeat_penalty, then logit -= c * frequency_penalty +
//      presence_penalty (OpenAI's presence and frequency penalties); also
//      applied before the greedy argmax;
//   2. top-k: keep the k largest logits (ties: lowest id first);
//   3. top-p: keep the smallest prefix, by descending logit, whose cumulative
//      probability (softmax at temperature 1 over the remaining set) is >= p;
//      at least one token;
//   4. min-p: keep tokens whose probability is >= min_p * the largest one;
//   5. temperature: logits / temp;
//   6. softmax over what is left, and one draw from a xoshiro256** generator
//      seeded through splitmix64. Every non-greedy sample() consumes exactly one
//      64-bit draw.
//
// Parameters are checked in the constructor. Clamped (the effective values are
// readable through params()):
//   top_k <= 0 or > n_vocab        -> n_vocab (top-k off)
//   top_p outside [0, 1]           -> clamped into [0, 1] (1 = off)
//   min_p outside [0, 1]           -> clamped into [0, 1] (0 = off)
//   repeat_last_n < 0              -> 0 (penalty off); > 1 << 20 -> 1 << 20
//   repeat_penalty == 1, presence_penalty == 0 and frequency_penalty == 0
//                                  -> repeat_last_n = 0 (nothing to remember)
// Rejected with gloas::error ("sampler: ..."):
//   n_vocab <= 0; NaN or infinite temp; NaN top_p or min_p; repeat_penalty
//   <= 0, NaN or infinite; NaN or infinite presence_penalty or
//   frequency_penalty. Messages name the field ("sampler: repeat_penalty
//   ..."), as the C API's callers know it; command-line tools check their
//   flags' ranges before (decoder/options.h), so users see the flag.
//
// Logits: NaN counts as -inf (never picked unless every logit is NaN or
// -inf, in which case the greedy choice is returned). +inf is clamped to the
// largest float.
//
// seed == SEED_RANDOM (all ones) seeds from the clock; seed() reports the seed
// actually used, so passing it back reproduces the run. reset() forgets the
// accepted tokens and restarts the generator from that seed.
//
// Cost: every buffer is sized in the constructor (O(n_vocab) floats, ints and
// the penalty window); sample() allocates nothing. Top-k with k <= n/16 is one
// pass with a k-entry heap (its result sorted), larger k uses nth_element.
// Top-p over an unsorted set buckets the logits by distance below the max and
// sorts only the bucket where the cumulative probability crosses p. Ties at a
// cut are broken by the lower id, so the kept set is exactly the prefix of a
// full (logit desc, id asc) sort.
#pragma once

#include <cstdint>
#include <vector>

namespace gloas {

constexpr uint64_t SEED_RANDOM = 0xFFFFFFFFFFFFFFFFull;

struct sampler_params {
    float    temp           = 0.8f;   // <= 0: greedy
    int32_t  top_k          = 40;     // <= 0: off
    float    top_p          = 0.95f;  // 1: off
    float    min_p          = 0.0f;   // 0: off
    float    repeat_penalty = 1.0f;   // 1: off
    int32_t  repeat_last_n  = 64;     // 0: off (window of all three penalties)
    float    presence_penalty  = 0.0f;  // 0: off
    float    frequency_penalty = 0.0f;  // 0: off
    uint64_t seed           = SEED_RANDOM;
};

// xoshiro256** (Blackman and Vigna), state filled from a 64-bit seed by
// splitmix64.
class rng {
public:
    explicit rng(uint64_t seed = 0) { seed_with(seed); }
    void seed_with(uint64_t seed);
    uint64_t next();
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }

private:
    uint64_t s_[4];
};

// Index of the largest of x[0..n), the lowest index on exact ties; NaN is
// never the largest unless all are NaN (then 0). Precondition: n > 0.
int32_t argmax(const float * x, int32_t n);

class sampler {
public:
    // Throws gloas::error for rejected parameters (see above).
    sampler(const sampler_params & params, int32_t n_vocab);

    // logits: (n_vocab) raw logits of the next position. Returns a token id in
    // [0, n_vocab). Does not accept the token: call accept() for that.
    int32_t sample(const float * logits);

    // Remembers a token (prompt or generated) for the repetition penalty.
    // Throws gloas::error if token is outside [0, n_vocab).
    void accept(int32_t token);

    // Forgets the accepted tokens and restarts the generator from seed().
    void reset();

    uint64_t seed() const { return seed_; }
    int32_t n_vocab() const { return n_vocab_; }
    // The effective parameters after clamping; seed is the one used.
    const sampler_params & params() const { return p_; }

private:
    struct candidate {
        float   logit;
        int32_t id;
    };

    static constexpr int32_t N_BUCKETS = 1024;  // top-p histogram size

    void fill_candidates(const float * logits);  // cand_ = penalized logits in id order
    int32_t top_p_cut(float max_logit);          // nucleus to the front of cand_; its size

    sampler_params p_;
    int32_t  n_vocab_;
    uint64_t seed_;
    rng      rng_;

    std::vector<candidate> cand_;     // (n_vocab) working set
    int32_t n_cand_ = 0;              // live entries of cand_
    bool    sorted_ = false;          // cand_[0..n_cand_) in descending order
    std::vector<candidate> heap_;     // (top_k) top-k selection heap, when k <= n_vocab / 16
    std::vector<double> bucket_w_;    // (N_BUCKETS) top-p weight per logit bucket

    std::vector<int32_t>  recent_;    // (repeat_last_n) ring of accepted tokens
    int32_t  recent_head_ = 0;        // next slot to write
    int32_t  recent_n_    = 0;        // filled slots
    std::vector<uint32_t> count_;     // (n_vocab) occurrences in the window; all 0 between calls
};

} // namespace gloas
