// gloas-server's counters and histograms, written as Prometheus text
// (exposition format 0.0.4) by /metrics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace gloas::server {

struct engine_stats;

// A cumulative histogram with fixed upper bounds (seconds).
struct histogram {
    std::vector<double> bounds;    // increasing upper bounds; +Inf is implicit
    std::vector<uint64_t> counts;  // (bounds.size()) observations <= each bound (not cumulative)
    uint64_t n = 0;
    double sum = 0.0;

    explicit histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size(), 0) {}
    void add(double v);
};

// Thread-safe: HTTP threads count requests, the scheduler tokens and latencies.
class server_metrics {
public:
    server_metrics();

    void request(const std::string & path, int status);
    void prompt(int32_t n_prompt, int32_t n_cached);
    void first_token(double ttft_s);
    void next_token(double itl_s);
    void finished(int32_t n_generated, const std::string & finish_reason, double seconds);
    void rejected_full();  // 503: the queue was full

    // The Prometheus text, with the engine's K/V and scheduling gauges.
    std::string text(const engine_stats & es);

private:
    std::mutex mu_;
    std::map<std::pair<std::string, int>, uint64_t> requests_;  // (path, status) -> count
    std::map<std::string, uint64_t> finish_;                    // finish reason -> count
    uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, generated_tokens_ = 0, rejected_ = 0;
    histogram ttft_, itl_, duration_;
};

} // namespace gloas::server
