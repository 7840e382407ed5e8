// gloas-kv-trace: hit rates of the K/V store's eviction policies on a
// synthetic multi-user prefix-caching workload, or on a recorded trace.
//
//   gloas-kv-trace [--seed N] [--requests N] [--capacity P1,P2,...] [--compressed-share F]
//                  [--miss-hint] [--trace FILE --block-tokens N [--page-tokens P]]
//
// The workload: a few system prompts (20 pages each, Zipf-like popularity);
// each request is a system prompt followed by a user-specific tail of 1-10
// pages; some users come back with their whole earlier conversation as prefix
// plus a new tail; occasionally a one-off long document scans 50-120 new pages
// once. Pages are named by a prefix hash chained over the request, as the
// store's prefix index names them.
//
// A recorded trace (--trace) is JSON lines of {"timestamp", "input_length",
// "output_length", "hash_ids"}, the format of the Mooncake traces: one hash
// id per block of --block-tokens prompt tokens, equal ids meaning equal
// blocks. A request's full pages of --page-tokens tokens are named by a hash
// chained over the ids of the blocks each page overlaps (and its offset in
// them), so two requests share exactly the pages whose tokens and prefix are
// equal; the partial last page is not counted (the store keys it apart).
//
// Every policy replays the same trace through the same cache simulation: a
// request walks its pages in order; a resident page is a hit (an access), a
// missing one a miss, inserted after evicting until it fits; the request's
// pages are in use (not evictable) until it ends. Capacities are in pages of
// FULL_BYTES (a Q8_0 page); COMPRESSED re-quantizes to COMPRESSED_BYTES (Q4_0)
// and its compressed pages count as hits. Prints one markdown table: hit rate
// per policy (rows) and capacity (columns).
#include "tools/common/cli.h"
#include "kvcache/policy.h"
#include "base/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using namespace gloas;

namespace {

constexpr size_t FULL_BYTES = 34;        // per page, in blocks of bytes: Q8_0
constexpr size_t COMPRESSED_BYTES = 18;  // Q4_0

uint64_t mix(uint64_t x) {  // splitmix64 finalizer
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

struct workload_params {
    uint64_t seed = 1;
    int n_requests = 20000;
    int n_system = 4;           // system prompts
    int system_pages = 20;      // pages per system prompt
    double zipf_s = 1.0;        // popularity of system prompt i ~ 1 / (i + 1)^s
    int tail_min = 1, tail_max = 10;
    double p_return = 0.35;     // a request is a returning user's next turn
    int recent_users = 400;     // returning users come from the most recent ones
    int max_conversation = 80;  // pages; longer conversations end
    double p_document = 0.02;   // a request is a one-off long document
    int doc_min = 50, doc_max = 120;
};

struct workload {
    std::vector<std::vector<uint64_t>> requests;  // page hashes, in walk order
    size_t n_lookups = 0;
    size_t n_distinct = 0;
    size_t n_reused = 0;  // distinct pages referenced by more than one request
};

workload make_workload(const workload_params & wp) {
    std::mt19937_64 rng(wp.seed);
    uint64_t fresh = 0;  // content counter: every new page gets new tokens
    auto new_page = [&](uint64_t parent) { return mix(parent ^ mix(++fresh + (wp.seed << 40))); };

    std::vector<std::vector<uint64_t>> system(size_t(wp.n_system));
    std::vector<double> weights;
    for (int s = 0; s < wp.n_system; ++s) {
        uint64_t h = 0;
        for (int i = 0; i < wp.system_pages; ++i) system[size_t(s)].push_back(h = new_page(h));
        weights.push_back(1.0 / std::pow(double(s + 1), wp.zipf_s));
    }
    std::discrete_distribution<int> pick_system(weights.begin(), weights.end());
    std::uniform_int_distribution<int> tail_len(wp.tail_min, wp.tail_max);
    std::uniform_int_distribution<int> doc_len(wp.doc_min, wp.doc_max);
    std::uniform_real_distribution<double> u01(0.0, 1.0);

    std::vector<std::vector<uint64_t>> users;  // each user's conversation so far
    std::vector<size_t> active;                // users that may come back, oldest first

    workload w;
    for (int r = 0; r < wp.n_requests; ++r) {
        const double x = u01(rng);
        std::vector<uint64_t> pages;
        if (x < wp.p_document) {
            pages = system[size_t(pick_system(rng))];
            const int n = doc_len(rng);
            for (int i = 0; i < n; ++i) pages.push_back(new_page(pages.back()));
        } else {
            size_t user;
            if (x < wp.p_document + wp.p_return && !active.empty()) {
                // Recent users are likelier to return: the age rank is geometric-ish.
                const size_t n = std::min(active.size(), size_t(wp.recent_users));
                const double ur = u01(rng);
                const size_t rank = std::min(n - 1, size_t(double(n) * ur * ur));
                const size_t at = active.size() - 1 - rank;
                user = active[at];
                active.erase(active.begin() + long(at));
            } else {
                user = users.size();
                users.push_back(system[size_t(pick_system(rng))]);
            }
            std::vector<uint64_t> & conv = users[user];
            const int n = tail_len(rng);
            for (int i = 0; i < n; ++i) conv.push_back(new_page(conv.back()));
            pages = conv;
            if (int(conv.size()) < wp.max_conversation) active.push_back(user);
            else conv = {};  // the conversation ends; free its memory
        }
        w.n_lookups += pages.size();
        w.requests.push_back(std::move(pages));
    }
    std::unordered_map<uint64_t, int> seen;
    for (const auto & req : w.requests) {
        for (uint64_t h : req) seen[h] += 1;
    }
    w.n_distinct = seen.size();
    for (const auto & [h, n] : seen) w.n_reused += n > 1;
    return w;
}

struct sim_result {
    uint64_t hits = 0, lookups = 0;
    uint64_t bypassed = 0;  // misses that could not be cached (everything in use)
};

// The workload of a recorded trace (see the top of the file). Throws
// gloas::error "FILE:LINE: ..." for a line that is not such a request.
workload read_trace(const std::string & path, int64_t block_tokens, int64_t page_tokens, int max_requests) {
    std::ifstream in(path);
    if (!in) throw error(format("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    workload w;
    std::unordered_map<uint64_t, int> seen;
    std::string line;
    for (int ln = 1; std::getline(in, line) && int(w.requests.size()) < max_requests; ++ln) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const auto bad = [&](const std::string & what) {
            return error(format("%s:%d: %s", path.c_str(), ln, what.c_str()));
        };
        nlohmann::json o;
        try {
            o = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error &) {
            throw bad("not a JSON object");
        }
        if (!o.is_object()) throw bad("not a JSON object");
        const auto len = o.find("input_length");
        const auto ids = o.find("hash_ids");
        if (len == o.end() || !len->is_number_integer() || len->get<int64_t>() < 0)
            throw bad("'input_length' must be a non-negative integer");
        if (ids == o.end() || !ids->is_array()) throw bad("'hash_ids' must be an array of integers");
        std::vector<uint64_t> blocks;
        for (const auto & b : *ids) {
            if (!b.is_number_integer()) throw bad("'hash_ids' must be an array of integers");
            blocks.push_back(b.get<uint64_t>());
        }
        const int64_t n_tokens = std::min(len->get<int64_t>(), int64_t(blocks.size()) * block_tokens);
        std::vector<uint64_t> pages;
        uint64_t h = 0;
        for (int64_t p = 0; (p + 1) * page_tokens <= n_tokens; ++p) {
            const int64_t first = p * page_tokens / block_tokens, last = ((p + 1) * page_tokens - 1) / block_tokens;
            uint64_t x = mix(uint64_t(p * page_tokens - first * block_tokens));
            for (int64_t b = first; b <= last; ++b) x = mix(x ^ blocks[size_t(b)]);
            pages.push_back(h = mix(h ^ x));
        }
        for (uint64_t pg : pages) seen[pg] += 1;
        w.n_lookups += pages.size();
        w.requests.push_back(std::move(pages));
    }
    if (w.requests.empty()) throw error(format("%s: no requests", path.c_str()));
    w.n_distinct = seen.size();
    for (const auto & [pg, n] : seen) w.n_reused += n > 1;
    return w;
}

// Replays the workload through one policy with `capacity` bytes.
sim_result simulate(evict_policy kind, const workload & w, size_t capacity, double share, bool miss_hint) {
    std::unique_ptr<eviction_policy> pol = make_eviction_policy(kind, capacity, share);
    struct slot_info {
        uint64_t hash;
        size_t bytes;
        bool compressed;
        uint64_t in_use;  // request id using it, +1 (0: none)
    };
    std::vector<slot_info> slots;
    std::vector<int64_t> free_slots;
    std::unordered_map<uint64_t, int64_t> resident;
    size_t used = 0;
    uint64_t clock = 0;
    sim_result res;
    uint64_t req_id = 0;
    const auto evictable = [&](int64_t s) { return slots[size_t(s)].in_use != req_id; };

    for (const auto & req : w.requests) {
        ++req_id;  // pages marked with an earlier request id are no longer in use
        for (uint64_t h : req) {
            ++res.lookups;
            auto it = resident.find(h);
            if (it != resident.end()) {
                ++res.hits;
                slots[size_t(it->second)].in_use = req_id;
                pol->on_access(it->second, ++clock);
                continue;
            }
            if (miss_hint) pol->on_miss(h);
            bool fits = true;
            while (used + FULL_BYTES > capacity) {
                const eviction e = pol->choose(evictable);
                if (e.slot < 0) {
                    fits = false;
                    break;
                }
                slot_info & v = slots[size_t(e.slot)];
                GLOAS_ASSERT(v.in_use != req_id && v.bytes > 0);
                if (e.action == evict_action::COMPRESS) {
                    GLOAS_ASSERT(!v.compressed);
                    used -= v.bytes - COMPRESSED_BYTES;
                    v.bytes = COMPRESSED_BYTES;
                    v.compressed = true;
                    pol->on_compress(e.slot, v.bytes);
                } else {
                    used -= v.bytes;
                    resident.erase(v.hash);
                    v = slot_info{0, 0, false, 0};
                    free_slots.push_back(e.slot);
                    pol->on_remove(e.slot);
                }
            }
            if (!fits) {
                ++res.bypassed;
                continue;
            }
            int64_t s;
            if (!free_slots.empty()) {
                s = free_slots.back();
                free_slots.pop_back();
            } else {
                s = int64_t(slots.size());
                slots.push_back({});
            }
            slots[size_t(s)] = slot_info{h, FULL_BYTES, false, req_id};
            resident[h] = s;
            used += FULL_BYTES;
            GLOAS_ASSERT(used <= capacity);
            page_stats st;
            st.slot = s;
            st.hash = h;
            st.bytes = FULL_BYTES;
            st.n_access = 1;
            st.last_access = st.inserted = ++clock;
            pol->on_insert(st, clock);
        }
    }
    return res;
}

// A comma-separated list of capacities in pages, each in 1..2^30.
std::vector<long> parse_list(const char * flag, const char * s) {
    std::vector<long> out;
    const std::string str(s);
    size_t at = 0;
    while (at <= str.size()) {
        const size_t comma = std::min(str.find(',', at), str.size());
        const std::string item = str.substr(at, comma - at);
        char * end = nullptr;
        errno = 0;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || errno || *end != '\0' || v <= 0 || v > (1L << 30))
            cli::usage_error(format("%s: '%s' is not a list of page counts (integers in 1..%ld)", flag, s, 1L << 30));
        out.push_back(v);
        at = comma + 1;
    }
    return out;
}

void usage(FILE * f) {
    std::fprintf(f,
                 "usage: gloas-kv-trace [options]\n"
                 "\n"
                 "Replays a synthetic prefix-caching workload (shared system prompts, user\n"
                 "tails, returning users, one-off long documents) through every eviction\n"
                 "policy of the K/V store and prints the hit rate per policy and capacity.\n"
                 "\n"
                 "  --seed N               workload seed (default 1)\n"
                 "  --requests N           number of requests (default 20000)\n"
                 "  --capacity P1,P2,...   store capacities in pages (default 64,128,256,512,1024)\n"
                 "  --compressed-share F   COMPRESSED: share of the capacity for compressed\n"
                 "                         pages (default 0.3)\n"
                 "  --miss-hint            report each miss with on_miss() before making room\n"
                 "                         for it (ADAPTIVE then adapts before choosing, as ARC\n"
                 "                         does; the store does not know the hash that early)\n"
                 "  --trace FILE           replay a recorded trace instead: JSON lines of\n"
                 "                         {\"timestamp\", \"input_length\", \"output_length\",\n"
                 "                         \"hash_ids\"} (the Mooncake format; --requests caps\n"
                 "                         how many are read)\n"
                 "  --block-tokens N       with --trace: prompt tokens per hash id (needed;\n"
                 "                         Mooncake's traces use 512)\n"
                 "  --page-tokens N        with --trace: tokens per K/V page (default 32)\n"
                 "  -h, --help             this text\n"
                 "\n"
                 "Exit status: 0 on success, 1 for a trace that cannot be read, 2 for a bad\n"
                 "command line.\n");
}

} // namespace

int main(int argc, char ** argv) {
    cli::prog = "gloas-kv-trace";
    return cli::run_main([&] {
        workload_params wp;
        std::vector<long> capacities = {64, 128, 256, 512, 1024};
        double share = 0.3;
        bool miss_hint = false;
        std::string trace;
        int64_t block_tokens = 0, page_tokens = 32;
        bool requests_given = false;
        for (int i = 1; i < argc; ++i) {
            const char * a = argv[i];
            auto value = [&] { return cli::next_value(argc, argv, i); };
            if (!std::strcmp(a, "-h") || !std::strcmp(a, "--help")) {
                usage(stdout);
                return 0;
            } else if (!std::strcmp(a, "--seed")) {
                wp.seed = uint64_t(cli::parse_int(a, value(), 0, int64_t(1) << 40));
            } else if (!std::strcmp(a, "--requests")) {
                wp.n_requests = int(cli::parse_int(a, value(), 1, 10000000));
                requests_given = true;
            } else if (!std::strcmp(a, "--trace")) {
                trace = value();
            } else if (!std::strcmp(a, "--block-tokens")) {
                block_tokens = cli::parse_int(a, value(), 1, 1 << 20);
            } else if (!std::strcmp(a, "--page-tokens")) {
                page_tokens = cli::parse_int(a, value(), 1, 1 << 16);
            } else if (!std::strcmp(a, "--capacity")) {
                capacities = parse_list(a, value());
            } else if (!std::strcmp(a, "--miss-hint")) {
                miss_hint = true;
            } else if (!std::strcmp(a, "--compressed-share")) {
                const char * v = value();
                char * end = nullptr;
                share = std::strtod(v, &end);
                if (!*v || *end != '\0' || !(share >= 0.0 && share <= 1.0))
                    cli::usage_error(format("--compressed-share: '%s' is not a number in [0, 1]", v));
            } else if (a[0] == '-') {
                cli::usage_error(format("unknown option '%s'", a));
            } else {
                cli::usage_error(format("unexpected argument '%s' (gloas-kv-trace takes only options)", a));
            }
        }

        if (trace.empty() && block_tokens > 0) cli::usage_error("--block-tokens needs --trace");
        if (!trace.empty() && block_tokens == 0)
            cli::usage_error("--trace needs --block-tokens N (prompt tokens per hash id; Mooncake's traces use 512)");
        const workload w = trace.empty() ? make_workload(wp)
                                         : read_trace(trace, block_tokens, page_tokens,
                                                      requests_given ? wp.n_requests : INT32_MAX);
        if (trace.empty()) {
            std::printf("workload: seed %llu, %d requests, %zu page lookups, %zu distinct pages, "
                        "%zu reused by more than one request\n",
                        (unsigned long long) wp.seed, wp.n_requests, w.n_lookups, w.n_distinct, w.n_reused);
            std::printf("(%d system prompts of %d pages, Zipf s=%.1f; tails %d-%d pages; %.0f%% returning users; "
                        "%.0f%% documents of %d-%d pages; compressed share %.2f)\n\n",
                        wp.n_system, wp.system_pages, wp.zipf_s, wp.tail_min, wp.tail_max, 100 * wp.p_return,
                        100 * wp.p_document, wp.doc_min, wp.doc_max, share);
        } else {
            std::printf("workload: trace %s, %zu requests, %zu page lookups, %zu distinct pages, "
                        "%zu reused by more than one request\n",
                        trace.c_str(), w.requests.size(), w.n_lookups, w.n_distinct, w.n_reused);
            std::printf("(blocks of %lld tokens, pages of %lld tokens; compressed share %.2f)\n\n",
                        (long long) block_tokens, (long long) page_tokens, share);
        }

        std::printf("| policy     |");
        for (long c : capacities) std::printf(" %5ld pages |", c);
        std::printf("\n|------------|");
        for (size_t i = 0; i < capacities.size(); ++i) std::printf("------------:|");
        std::printf("\n");
        std::vector<uint64_t> bypassed(capacities.size(), 0);
        for (evict_policy p : {evict_policy::LRU, evict_policy::LFU, evict_policy::FIFO, evict_policy::ADAPTIVE,
                               evict_policy::COMPRESSED}) {
            std::printf("| %-10s |", evict_policy_name(p));
            for (size_t i = 0; i < capacities.size(); ++i) {
                const sim_result r = simulate(p, w, size_t(capacities[i]) * FULL_BYTES, share, miss_hint);
                std::printf("      %5.1f%% |", 100.0 * double(r.hits) / double(std::max<uint64_t>(r.lookups, 1)));
                bypassed[i] = std::max(bypassed[i], r.bypassed);
            }
            std::printf("\n");
            std::fflush(stdout);
        }
        std::printf("\nhit rate = hits / page lookups. A request's pages are in use until it ends; misses left\n"
                    "uncached because they filled the whole store (most over the policies):");
        for (size_t i = 0; i < capacities.size(); ++i) {
            std::printf("%s %llu", i ? "," : "", (unsigned long long) bypassed[i]);
        }
        std::printf(".\n");
        return 0;
    });
}
