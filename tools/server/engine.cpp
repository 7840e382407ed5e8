#include "tools/server/engine.h"

#include "decoder/tokenizer.h"
#include "base/error.h"
#include "tools/server/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

namespace gloas::server {

namespace {

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

} // namespace

engine::engine(const model & m, context & ctx, const engine_params & p, server_metrics & metrics)
    : m_(m), ctx_(ctx), p_(p), metrics_(metrics) {
    GLOAS_ASSERT(ctx.n_seq_max() == p.n_parallel && p.n_parallel >= 1);
    seq_free_.assign(size_t(p.n_parallel), true);
    lp_.resize(size_t(m.hp.n_vocab));
    ids_.resize(size_t(m.hp.n_vocab));
    update_stats();
    thread_ = std::thread([this] { loop(); });
}

engine::~engine() { stop(); }

void engine::stop() {
    {
        std::lock_guard<std::mutex> l(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool engine::submit(const std::shared_ptr<job> & j) {
    {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) return false;
        // A job may wait when every sequence is busy, up to `queue` of them.
        if (n_held_ + int32_t(waiting_.size()) >= p_.n_parallel + p_.queue) return false;
        waiting_.push_back(j);
        stats_.waiting = int32_t(waiting_.size());
    }
    cv_.notify_all();
    return true;
}

void engine::wake() { cv_.notify_all(); }

engine_stats engine::stats() {
    std::lock_guard<std::mutex> l(mu_);
    return stats_;
}

void engine::update_stats() {
    kv_store & st = ctx_.store();
    const kv_metrics & km = st.metrics();
    engine_stats s;
    s.n_parallel = p_.n_parallel;
    s.active = int32_t(active_.size());
    s.pages_hit = km.pages_hit;
    s.pages_missed = km.pages_missed;
    s.pages_written = km.pages_written;
    s.pages_evicted = km.pages_evicted;
    s.hit_rate = km.hit_rate();
    s.pages_stored = st.stored_pages();
    s.stored_bytes = st.stored_bytes();
    s.file_bytes = st.file_bytes();
    s.page_tokens = st.geometry().page_tokens;
    std::map<int64_t, int32_t> refs;  // slot -> sequences holding it
    for (const auto & j : active_) {
        const kv_sequence & kv = ctx_.seq_kv(j->seq);
        s.sequence_bytes += kv.ram_bytes();
        for (int32_t i = 0; i < kv.n_pages(); ++i) {
            const page_ref & r = kv.page(i);
            const size_t bytes = st.geometry().page_bytes(r.t);
            s.held_bytes_unshared += bytes;
            if (refs[r.slot]++ == 0) s.held_bytes += bytes;
        }
        s.pages_held += size_t(kv.n_pages());
    }
    for (const auto & [slot, n] : refs)
        if (n > 1) s.pages_shared += 1;
    std::lock_guard<std::mutex> l(mu_);
    s.steps = stats_.steps;
    s.waiting = int32_t(waiting_.size());
    stats_ = s;
}

void engine::loop() {
    std::vector<std::shared_ptr<job>> admitted;
    for (;;) {
        admitted.clear();
        {
            std::unique_lock<std::mutex> l(mu_);
            cv_.wait(l, [&] { return stop_ || !active_.empty() || !waiting_.empty(); });
            if (stop_) break;
            // Cancelled jobs leave the queue at once; the others take free sequences in order.
            for (auto it = waiting_.begin(); it != waiting_.end();) {
                if ((*it)->cancel.load()) {
                    std::shared_ptr<job> j = *it;
                    it = waiting_.erase(it);
                    l.unlock();
                    finish(*j, "cancelled");
                    l.lock();
                    it = waiting_.begin();
                    continue;
                }
                ++it;
            }
            for (size_t s = 0; s < seq_free_.size() && !waiting_.empty(); ++s) {
                if (!seq_free_[s]) continue;
                std::shared_ptr<job> j = waiting_.front();
                waiting_.pop_front();
                seq_free_[s] = false;
                ++n_held_;
                j->seq = int32_t(s);
                active_.push_back(j);
                admitted.push_back(j);
            }
            stats_.waiting = int32_t(waiting_.size());
            stats_.active = int32_t(active_.size());
        }
        step(admitted);
        update_stats();
    }
    // Stopping: every job still held or queued ends as cancelled.
    for (auto & j : active_) finish(*j, "cancelled");
    active_.clear();
    std::deque<std::shared_ptr<job>> rest;
    {
        std::lock_guard<std::mutex> l(mu_);
        rest.swap(waiting_);
    }
    for (auto & j : rest) finish(*j, "cancelled");
    ctx_.store().flush();
}

void engine::finish(job & j, const char * reason, const std::string & err) {
    if (j.seq >= 0) {
        ctx_.seq_clear(j.seq);  // the sequence's pages go back to the store now
        seq_free_[size_t(j.seq)] = true;
        j.seq = -1;
        std::lock_guard<std::mutex> l(mu_);
        --n_held_;
    }
    const double t = now_s();
    {
        std::lock_guard<std::mutex> l(j.mu);
        j.done = true;
        j.finish_reason = reason;
        j.error = err;
        j.t_end = t;
    }
    j.cv.notify_all();
    metrics_.finished(j.n_gen, reason, t - j.t_submit);
}

void engine::step(std::vector<std::shared_ptr<job>> & admitted) {
    // New jobs first take their stored prefix.
    for (auto & j : admitted) {
        try {
            const int32_t n = int32_t(j->prompt.size());
            const int32_t reused = ctx_.seq_reuse_prefix(j->seq, j->prompt.data(), n);
            j->n_eval = reused;
            j->smp = std::make_unique<sampler>(j->p.sampling, m_.hp.n_vocab);
            for (int32_t t : j->prompt) j->smp->accept(t);
            j->prev = j->prompt.back();
            {
                std::lock_guard<std::mutex> l(j->mu);
                j->n_cached = reused;
                j->started = true;
            }
            metrics_.prompt(n, reused);
                } catch (const error & e) {
            finish(*j, "error", e.what());
        }
    }
    // Clients gone since the last step (one poll for all), cancelled or
    // failed jobs free their sequence before the batch is built.
    polls_.clear();
    polled_.clear();
    for (auto & j : active_) {
        if (j->seq < 0 || j->client_fd < 0 || j->cancel.load()) continue;
        polls_.push_back({j->client_fd, short(POLLRDHUP), 0});
        polled_.push_back(j.get());
    }
    if (!polls_.empty() && ::poll(polls_.data(), polls_.size(), 0) > 0)
        for (size_t k = 0; k < polls_.size(); ++k)
            if (polls_[k].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) polled_[k]->cancel = true;
    for (auto & j : active_)
        if (j->seq >= 0 && j->cancel.load()) finish(*j, "cancelled");
    active_.erase(std::remove_if(active_.begin(), active_.end(), [](const std::shared_ptr<job> & j) { return j->seq < 0; }),
                  active_.end());
    if (active_.empty()) return;

    b_tok_.clear();
    b_seq_.clear();
    b_logits_.clear();
    b_jobs_.clear();
    for (auto & j : active_) {
        if (j->pending < 0) continue;
        b_tok_.push_back(j->pending);
        b_seq_.push_back(j->seq);
        b_logits_.push_back(1);
        b_jobs_.push_back({j.get(), int32_t(b_tok_.size()) - 1});
    }
    // Followers are decided on what earlier steps evaluated, before this
    // step's chunks are counted in n_eval.
    for (auto & j : active_) j->waits = j->pending < 0 && follows(*j);
    int32_t budget = std::max(0, p_.step_tokens - int32_t(b_tok_.size()));
    for (auto & j : active_) {
        if (j->pending >= 0 || j->waits || budget == 0) continue;
        const int32_t n_prompt = int32_t(j->prompt.size());
        const int32_t n = std::min(budget, n_prompt - j->n_eval);
        if (n <= 0) continue;
        for (int32_t i = 0; i < n; ++i) {
            b_tok_.push_back(j->prompt[size_t(j->n_eval + i)]);
            b_seq_.push_back(j->seq);
            b_logits_.push_back(0);
        }
        j->n_eval += n;
        budget -= n;
        if (j->n_eval == n_prompt) {
            b_logits_.back() = 1;
            b_jobs_.push_back({j.get(), int32_t(b_tok_.size()) - 1});
        }
    }
    if (b_tok_.empty()) return;

    batch b;
    b.n_tokens = int32_t(b_tok_.size());
    b.token = b_tok_.data();
    b.seq = b_seq_.data();
    b.logits = b_logits_.data();
    try {
        ctx_.decode(b);
    } catch (const error & e) {
        // The batch was checked before anything changed: fail its jobs, keep serving.
        std::set<int32_t> seqs(b_seq_.begin(), b_seq_.end());
        for (auto & j : active_)
            if (seqs.count(j->seq)) finish(*j, "error", e.what());
        active_.erase(std::remove_if(active_.begin(), active_.end(), [](const std::shared_ptr<job> & j) { return j->seq < 0; }),
                      active_.end());
        return;
    }
    {
        std::lock_guard<std::mutex> l(mu_);
        ++stats_.steps;
    }
    for (auto & [j, idx] : b_jobs_) {
        j->pending = -1;
        on_token(*j, ctx_.batch_logits(idx));
    }
    active_.erase(std::remove_if(active_.begin(), active_.end(), [](const std::shared_ptr<job> & j) { return j->seq < 0; }),
                  active_.end());
}

// Whether job j waits this step for an earlier job that is prefilling pages
// of j's prompt (see engine.h, step 2). A follower whose leader has evaluated
// the shared pages takes them from the store first.
bool engine::follows(job & j) {
    if (j.n_eval != j.n_cached) return false;  // j has begun its own prefill
    const int32_t page = ctx_.store().params().page_tokens;
    const int32_t n = int32_t(j.prompt.size());
    int32_t wait_for = 0;   // pages still being computed by a leader
    int32_t ready = 0;      // pages a leader has evaluated
    for (auto & l : active_) {
        if (l.get() == &j) break;  // leaders come earlier in admission order
        if (l->seq < 0) continue;
        const size_t lim = size_t(std::min<int32_t>(n - 1, int32_t(l->prompt.size())));
        const size_t c = size_t(std::mismatch(j.prompt.begin(), j.prompt.begin() + lim, l->prompt.begin()).first -
                                j.prompt.begin());
        const int32_t shared = int32_t(c) / page * page;
        if (shared <= j.n_eval) continue;
        const int32_t done = std::min(shared, l->n_eval / page * page);
        ready = std::max(ready, done);
        if (done < shared) wait_for = std::max(wait_for, shared);
    }
    if (ready > j.n_eval) {
        const int32_t reused = ctx_.seq_reuse_prefix(j.seq, j.prompt.data(), n);
        if (reused > j.n_eval) {
            metrics_.prompt(0, reused - j.n_eval);  // cached after all
            j.n_eval = reused;
            std::lock_guard<std::mutex> l(j.mu);
            j.n_cached = reused;
        }
    }
    return wait_for > j.n_eval;
}

// Samples the job's next token from `logits` and ends the job or leaves the
// token pending for the next step.
void engine::on_token(job & j, const float * logits) {
    GLOAS_ASSERT(logits);
    const tokenizer & tok = m_.tok;
    if (!j.p.logit_bias.empty() || j.p.ignore_eos) {
        biased_.assign(logits, logits + m_.hp.n_vocab);
        for (const auto & [id, b] : j.p.logit_bias) biased_[size_t(id)] += b;
        if (j.p.ignore_eos)
            for (int32_t id : {tok.eos(), tok.eot()})
                if (id >= 0) biased_[size_t(id)] = -INFINITY;
        logits = biased_.data();
    }
    const int32_t id = j.smp->sample(logits);
    const double t = now_s();
    if (j.n_gen == 0) {
        j.t_first = t;
        metrics_.first_token(t - j.t_submit);
    } else {
        metrics_.next_token(t - j.t_last);
    }
    j.t_last = t;
    if (tok.is_eog(id)) {
        release(j, true);
        finish(j, "stop");
        return;
    }
    j.smp->accept(id);
    const int32_t prev = j.prev;
    const std::string piece = tok.token_to_piece(prev, id);
    j.prev = id;
    const size_t before = j.out.size();
    j.out += piece;

    token_logprob lp;
    if (j.p.logprobs >= 0) {
        const int32_t V = m_.hp.n_vocab;
        float mx = -INFINITY;
        for (int32_t v = 0; v < V; ++v) mx = std::max(mx, std::isnan(logits[v]) ? -INFINITY : logits[v]);
        double sum = 0.0;
        for (int32_t v = 0; v < V; ++v) sum += std::isnan(logits[v]) ? 0.0 : std::exp(double(logits[v] - mx));
        const float lse = mx + float(std::log(sum));
        for (int32_t v = 0; v < V; ++v) lp_[size_t(v)] = std::isnan(logits[v]) ? -INFINITY : logits[v] - lse;
        lp.text = piece;
        lp.logprob = lp_[size_t(id)];
        const int32_t k = std::min(j.p.logprobs, V);
        for (int32_t v = 0; v < V; ++v) ids_[size_t(v)] = v;
        std::partial_sort(ids_.begin(), ids_.begin() + k, ids_.end(), [&](int32_t a, int32_t b) {
            return lp_[size_t(a)] > lp_[size_t(b)] || (lp_[size_t(a)] == lp_[size_t(b)] && a < b);
        });
        for (int32_t i = 0; i < k; ++i)
            lp.top.push_back({tok.token_to_piece(prev, ids_[size_t(i)]),
                              lp_[size_t(ids_[size_t(i)])]});
    }
    {
        std::lock_guard<std::mutex> l(j.mu);
        ++j.n_gen;
        if (j.p.logprobs >= 0) j.logprobs.push_back(std::move(lp));
    }

    // A stop string ends the text where it starts; only its first
    // occurrence counts, and it may have begun in earlier tokens.
    size_t cut = std::string::npos;
    for (const std::string & s : j.p.stop) {
        const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
        const size_t at = j.out.find(s, from);
        if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
        j.out.resize(cut);
        release(j, true);
        finish(j, "stop");
        return;
    }
    if (j.n_gen >= j.p.max_tokens || ctx_.seq_n_past(j.seq) >= ctx_.n_ctx()) {
        release(j, true);
        finish(j, "length");
        return;
    }
    j.pending = id;
    release(j, false);
}

// Moves the text that is safe to show into j.text: whole UTF-8 characters,
// less a tail that could begin a stop string (unless `all`: the text ended).
void engine::release(job & j, bool all) {
    size_t end = j.out.size();
    if (!all) {
        for (const std::string & s : j.p.stop) {
            // The longest suffix of out that is a proper prefix of s.
            for (size_t n = std::min(s.size() - 1, j.out.size()); n > 0; --n) {
                if (j.out.compare(j.out.size() - n, n, s, 0, n) == 0) {
                    end = std::min(end, j.out.size() - n);
                    break;
                }
            }
        }
        end = std::max(j.released, std::min(end, j.released + utf8_complete_prefix(std::string_view(j.out).substr(j.released))));
    }
    if (end <= j.released) return;
    {
        std::lock_guard<std::mutex> l(j.mu);
        j.text.append(j.out, j.released, end - j.released);
        j.marks.push_back(j.text.size());
    }
    j.released = end;
    j.cv.notify_all();
}

} // namespace gloas::server
