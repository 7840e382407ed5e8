// gloas-server's generation engine: continuous batching of many requests
// over one context.
//
// The context holds n_seq_max sequences on one K/V store. One scheduler
// thread owns the context: HTTP threads only submit jobs and read their
// progress. Every step the scheduler
//   1. admits waiting jobs into free sequences, in arrival order; each first
//      takes the leading pages of its prompt already in the store
//      (context::seq_reuse_prefix: shared with other sequences and earlier
//      runs; those positions are the job's cached tokens);
//   2. builds one batch: the pending token of every generating job, then
//      prefill chunks of the jobs still reading their prompt, in admission
//      order, while the batch holds fewer than step_tokens tokens (HYBRID:
//      one forward pass mixes decode tokens and prefill chunks). A job that
//      has not begun its own prefill and whose prompt shares whole pages
//      beyond its cached tokens with an earlier job still prefilling them
//      (a follower) waits: once the leader has evaluated those pages they
//      are in the store, and the follower takes them (seq_reuse_prefix
//      again, counted as cached) instead of computing them a second time;
//   3. decodes it, samples a token for every job whose last position was
//      evaluated, and ends jobs that are done (end of sequence, a stop
//      string, max_tokens, a full context, cancelled): their sequence is
//      cleared at once, so the next step can admit a waiting job there.
// A job whose client closed its connection (job::client_fd, checked every
// step) or that its HTTP thread cancelled (job::cancel) stops before the
// next step.
//
// Text is released to the reader as whole UTF-8 characters, holding back any
// tail that may be the start of a stop string; a stop string and what follows
// it are never released.
#pragma once

#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"

#include <atomic>
#include <poll.h>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace gloas::server {

class server_metrics;

// What a request asks for, checked by the HTTP side (api.h).
struct gen_params {
    sampler_params sampling;
    int32_t max_tokens = 0;            // >= 1: tokens to generate at most
    std::vector<std::string> stop;     // non-empty strings that end the text (not included)
    int32_t logprobs = -1;             // -1: none; else how many alternatives per token (0..20)
    std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, added to its logit)
    bool ignore_eos = false;           // end-of-sequence tokens do not end the text (they get -inf)
};

struct token_logprob {
    std::string text;                                // the token's piece (bytes)
    float logprob = 0.0f;                            // log softmax of the raw logits
    std::vector<std::pair<std::string, float>> top;  // the most likely tokens, best first
};

// One request's generation, shared by the HTTP thread that waits on it and
// the scheduler. Fields under "progress" are read and written under mu.
struct job {
    // Set before submit, then read-only.
    std::vector<int32_t> prompt;  // at least one token, fewer than the context's positions
    gen_params p;
    double t_submit = 0.0;        // seconds (steady clock)
    int client_fd = -1;           // the client's socket, watched every step for the peer
                                  // closing (a job ends before its handler closes it); -1: none

    // Set by the client's thread: stop as soon as possible.
    std::atomic<bool> cancel{false};

    // Progress.
    std::mutex mu;
    std::condition_variable cv;
    std::string text;                     // released text
    std::vector<size_t> marks;            // text.size() after each release (about one per token):
                                          // a stream sends one chunk per mark, as OpenAI sends one per token
    std::vector<token_logprob> logprobs;  // one per generated token (when p.logprobs >= 0)
    bool done = false;
    std::string finish_reason;            // "stop", "length", "cancelled" or "error"
    std::string error;                    // when finish_reason is "error"
    int32_t n_cached = 0;                 // prompt positions taken from the store
    int32_t n_gen = 0;                    // tokens generated (an end-of-sequence token not counted)
    bool started = false;                 // admitted into a sequence
    double t_first = 0.0;                 // first token sampled (0: not yet)
    double t_end = 0.0;

    // The scheduler's own.
    int32_t seq = -1;
    int32_t n_eval = 0;                   // prompt positions in the sequence
    int32_t pending = -1;                 // sampled token to evaluate next step
    bool waits = false;                   // this step: a follower waiting for its leader's pages
    int32_t prev = -1;                    // the previous token (for token_to_piece)
    std::unique_ptr<sampler> smp;
    std::string out;                      // generated text so far (stop string removed)
    size_t released = 0;                  // bytes of out released into text
    double t_last = 0.0;
};

struct engine_params {
    int32_t n_parallel = 1;   // sequences of the context
    int32_t queue = 64;       // jobs that may wait for a sequence
    int32_t step_tokens = 128;  // tokens per step (at least one per generating job)
};

// The K/V and scheduling figures /metrics and /health report, as of the
// last step.
struct engine_stats {
    int32_t active = 0;          // jobs holding a sequence
    int32_t waiting = 0;         // jobs in the queue
    int32_t n_parallel = 0;
    uint64_t steps = 0;
    uint64_t pages_hit = 0, pages_missed = 0, pages_written = 0, pages_evicted = 0;
    double hit_rate = 0.0;
    size_t pages_stored = 0;     // pages in the store (page file or memory)
    size_t pages_held = 0;       // page references the active sequences hold
    size_t pages_shared = 0;     // pages of active sequences that another active sequence holds too
    size_t held_bytes = 0;       // bytes of the distinct pages the active sequences hold
    size_t held_bytes_unshared = 0;  // what they would hold with a copy of each page per sequence
    size_t sequence_bytes = 0;   // the active sequences' own buffers (open pages, summaries; kv_sequence::ram_bytes)
    size_t stored_bytes = 0;
    size_t file_bytes = 0;
    int32_t page_tokens = 0;
};

class engine {
public:
    // The context must have p.n_parallel sequences; both outlive the engine.
    engine(const model & m, context & ctx, const engine_params & p, server_metrics & metrics);
    ~engine();  // stops the scheduler; unfinished jobs end as cancelled
    engine(const engine &) = delete;
    engine & operator=(const engine &) = delete;

    // Queues a job; false when the queue is full (the job is untouched).
    bool submit(const std::shared_ptr<job> & j);
    // Wakes the scheduler (after setting a job's cancel flag).
    void wake();
    // Stops the scheduler thread; unfinished jobs end as cancelled.
    void stop();

    engine_stats stats();
    int32_t n_ctx() const { return ctx_.n_ctx(); }

private:
    void loop();
    void step(std::vector<std::shared_ptr<job>> & admitted);
    void finish(job & j, const char * reason, const std::string & error = {});
    void on_token(job & j, const float * logits);
    void release(job & j, bool all);
    void update_stats();
    bool follows(job & j);

    const model & m_;
    context & ctx_;
    engine_params p_;
    server_metrics & metrics_;

    std::mutex mu_;                           // guards waiting_, stop_, stats_
    std::condition_variable cv_;
    std::deque<std::shared_ptr<job>> waiting_;
    int32_t n_held_ = 0;                      // jobs holding a sequence
    bool stop_ = false;
    engine_stats stats_;

    // Scheduler thread only.
    std::vector<std::shared_ptr<job>> active_;  // admission order
    std::vector<bool> seq_free_;
    std::vector<int32_t> b_tok_, b_seq_;
    std::vector<int8_t> b_logits_;
    std::vector<std::pair<job *, int32_t>> b_jobs_;  // job and the batch index of its last token
    std::vector<float> lp_;                    // (n_vocab) log-probabilities scratch
    std::vector<int32_t> ids_;                 // (n_vocab) scratch
    std::vector<float> biased_;
    std::vector<struct pollfd> polls_;         // clients' sockets of the active jobs
    std::vector<job *> polled_;                // the job of each entry of polls_                // (n_vocab) logits with a job's logit_bias
    std::thread thread_;
};

} // namespace gloas::server
