#include "tools/server/metrics.h"

#include "tools/server/engine.h"
#include "base/error.h"

#include <algorithm>

namespace gloas::server {

void histogram::add(double v) {
    const size_t i = size_t(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
    if (i < counts.size()) ++counts[i];
    ++n;
    sum += v;
}

server_metrics::server_metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      duration_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}) {}

void server_metrics::request(const std::string & path, int status) {
    std::lock_guard<std::mutex> l(mu_);
    ++requests_[{path, status}];
}

void server_metrics::prompt(int32_t n_prompt, int32_t n_cached) {
    std::lock_guard<std::mutex> l(mu_);
    prompt_tokens_ += uint64_t(n_prompt);
    cached_tokens_ += uint64_t(n_cached);
}

void server_metrics::first_token(double s) {
    std::lock_guard<std::mutex> l(mu_);
    ttft_.add(s);
}

void server_metrics::next_token(double s) {
    std::lock_guard<std::mutex> l(mu_);
    itl_.add(s);
}

void server_metrics::finished(int32_t n_generated, const std::string & reason, double seconds) {
    std::lock_guard<std::mutex> l(mu_);
    generated_tokens_ += uint64_t(n_generated);
    ++finish_[reason];
    duration_.add(seconds);
}

void server_metrics::rejected_full() {
    std::lock_guard<std::mutex> l(mu_);
    ++rejected_;
}

namespace {

void head(std::string & o, const char * name, const char * type, const char * help) {
    o += format("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void scalar(std::string & o, const char * name, const char * type, const char * help, double v) {
    head(o, name, type, help);
    o += format("%s %.17g\n", name, v);
}

void hist(std::string & o, const char * name, const char * help, const histogram & h) {
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
        cum += h.counts[i];
        o += format("%s_bucket{le=\"%g\"} %llu\n", name, h.bounds[i], (unsigned long long) cum);
    }
    o += format("%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", name, (unsigned long long) h.n, name,
                h.sum, name, (unsigned long long) h.n);
}

} // namespace

std::string server_metrics::text(const engine_stats & es) {
    std::lock_guard<std::mutex> l(mu_);
    std::string o;
    head(o, "gloas_requests_total", "counter", "HTTP requests answered, by path and status");
    for (const auto & [k, n] : requests_)
        o += format("gloas_requests_total{path=\"%s\",status=\"%d\"} %llu\n", k.first.c_str(), k.second,
                    (unsigned long long) n);
    head(o, "gloas_generations_total", "counter", "generations ended, by finish reason");
    for (const auto & [k, n] : finish_)
        o += format("gloas_generations_total{reason=\"%s\"} %llu\n", k.c_str(), (unsigned long long) n);
    scalar(o, "gloas_rejected_total", "counter", "requests refused with 503 because the queue was full", double(rejected_));
    scalar(o, "gloas_prompt_tokens_total", "counter", "prompt tokens of admitted requests", double(prompt_tokens_));
    scalar(o, "gloas_prompt_cached_tokens_total", "counter", "prompt tokens taken from stored K/V pages",
           double(cached_tokens_));
    scalar(o, "gloas_generated_tokens_total", "counter", "tokens generated", double(generated_tokens_));
    hist(o, "gloas_time_to_first_token_seconds", "from a request's arrival to its first token", ttft_);
    hist(o, "gloas_inter_token_seconds", "between consecutive tokens of one request", itl_);
    hist(o, "gloas_request_duration_seconds", "from a generation request's arrival to its end", duration_);
    scalar(o, "gloas_requests_processing", "gauge", "requests holding a sequence", es.active);
    scalar(o, "gloas_requests_waiting", "gauge", "requests queued for a sequence", es.waiting);
    scalar(o, "gloas_sequences", "gauge", "sequences of the context (--parallel)", es.n_parallel);
    scalar(o, "gloas_steps_total", "counter", "forward passes of the scheduler", double(es.steps));
    head(o, "gloas_kv_pages", "gauge", "K/V pages: stored in the store, held by active sequences, shared by several");
    o += format("gloas_kv_pages{state=\"stored\"} %zu\n", es.pages_stored);
    o += format("gloas_kv_pages{state=\"held\"} %zu\n", es.pages_held);
    o += format("gloas_kv_pages{state=\"shared\"} %zu\n", es.pages_shared);
    head(o, "gloas_kv_held_bytes", "gauge",
         "bytes of the K/V pages active sequences hold: each page once (shared), or once per sequence holding it "
         "(unshared, what copies would take)");
    o += format("gloas_kv_held_bytes{pages=\"shared\"} %zu\n", es.held_bytes);
    o += format("gloas_kv_held_bytes{pages=\"unshared\"} %zu\n", es.held_bytes_unshared);
    scalar(o, "gloas_kv_sequence_bytes", "gauge", "the active sequences' own K/V buffers (open pages, page summaries)",
           double(es.sequence_bytes));
    scalar(o, "gloas_kv_page_tokens", "gauge", "tokens per K/V page", es.page_tokens);
    scalar(o, "gloas_kv_stored_bytes", "gauge", "bytes of the stored K/V pages", double(es.stored_bytes));
    scalar(o, "gloas_kv_file_bytes", "gauge", "bytes of the page file on disk", double(es.file_bytes));
    scalar(o, "gloas_kv_pages_hit_total", "counter", "prompt pages found in the store", double(es.pages_hit));
    scalar(o, "gloas_kv_pages_missed_total", "counter", "full prompt pages computed", double(es.pages_missed));
    scalar(o, "gloas_kv_pages_written_total", "counter", "pages published to the store", double(es.pages_written));
    scalar(o, "gloas_kv_pages_evicted_total", "counter", "pages evicted by the policy", double(es.pages_evicted));
    scalar(o, "gloas_kv_hit_rate", "gauge", "pages hit / (hit + missed)", es.hit_rate);
    return o;
}

} // namespace gloas::server
