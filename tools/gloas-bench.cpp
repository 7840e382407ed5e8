// gloas-bench: prefill and decode throughput, in the spirit of llama-bench.
//
//   gloas-bench -m MODEL[,MODEL...] [-p 512] [-n 128] [-d 0,4096] [--kv-type f16,q8_0]
//               [-t 2] [-r 3] [--bandwidth] [-o md|json]
//
// pp<N>: one prefill of N tokens (in chunks of -b); tg<N>: N single-token
// decodes; both after -d tokens already in the context (depth; the depth's
// prefill is not timed). The K/V pages are in memory (no page file). Token ids are random
// (speed does not depend on them); tokenization and sampling are not timed.
// A warm-up run (which also pulls the weights into the page cache) precedes
// the timed repetitions. With --bandwidth the machine's read bandwidth is
// measured and decode is reported against its ceiling, bandwidth / bytes of
// weights read per token; prefill is also reported in GFLOP/s per thread,
// counting 2 x matrix parameters per token.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/strategy.h"
#include "tensor/bandwidth.h"
#include "tensor/error.h"
#include "tensor/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

const char * USAGE = R"(usage: gloas-bench -m MODEL[,MODEL...] [options]

  -m, --model LIST    models (GGUF or llama2.c), comma-separated or repeated
  -p, --n-prompt N    prompt tokens for the prefill test (default 512; 0 skips)
  -n, --n-gen N       tokens for the decode test (default 128; 0 skips)
  -d, --depth LIST    tokens already in the context (default 0)
      --kv-type LIST  K/V page types: f32, f16, q8_0, q4_0 (default f16)
      --strategy LIST memory strategies speed, balanced, aggressive (each sets
                      the K/V type and sparse ratio; replaces --kv-type)
      --kv-page N     tokens per page (default 32)
  -b, --ubatch N      prefill chunk size (default 512)
  -t, --threads N     threads (default: all)
  -r, --repetitions N timed repetitions (default 3)
      --bandwidth     measure read bandwidth and report decode against it
  -o, --output FMT    md (default), json or csv
  -h, --help
)";

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

struct result {
    std::string model, type, kv, test;
    double size_mib = 0, params_m = 0;
    int threads = 0;
    double mean = 0, sd = 0;     // tokens/s
    double ceiling_pct = -1;     // decode: % of bandwidth ceiling
    double gflops_thread = -1;   // prefill: GFLOP/s per thread
};

void stats(const std::vector<double> & v, double & mean, double & sd) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    sd = 0;
    for (double x : v) sd += (x - mean) * (x - mean);
    sd = v.size() > 1 ? std::sqrt(sd / double(v.size() - 1)) : 0.0;
}

std::vector<std::string> split(const std::string & s) {
    std::vector<std::string> out;
    size_t b = 0;
    while (b <= s.size()) {
        size_t e = s.find(',', b);
        if (e == std::string::npos) e = s.size();
        if (e > b) out.push_back(s.substr(b, e - b));
        b = e + 1;
    }
    return out;
}

int run(int argc, char ** argv) {
    std::vector<std::string> models;
    std::vector<int> depths = {0};
    // Each configuration is a K/V type and a sparse ratio, named for the table.
    struct kv_config { std::string name; type t; float sparse; };
    std::vector<kv_config> kv_configs = {{"f16", type::F16, 1.0f}};
    int page = 32;
    int n_prompt = 512, n_gen = 128, ubatch = 512, threads = 0, reps = 3;
    bool bandwidth = false;
    std::string out_fmt = "md";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "gloas-bench: %s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        auto int_value = [&]() {
            std::string v = value();
            char * end = nullptr;
            long x = std::strtol(v.c_str(), &end, 10);
            if (!end || *end || v.empty() || x < 0 || x > (1 << 24)) {
                std::fprintf(stderr, "gloas-bench: %s expects a non-negative integer, got '%s'\n", a.c_str(), v.c_str());
                std::exit(2);
            }
            return int(x);
        };
        if (a == "-h" || a == "--help") { std::fputs(USAGE, stdout); return 0; }
        else if (a == "-m" || a == "--model") for (auto & m : split(value())) models.push_back(m);
        else if (a == "-p" || a == "--n-prompt") n_prompt = int_value();
        else if (a == "-n" || a == "--n-gen") n_gen = int_value();
        else if (a == "-b" || a == "--ubatch") ubatch = std::max(1, int_value());
        else if (a == "--kv-page") page = std::max(1, int_value());
        else if (a == "-d" || a == "--depth") {
            depths.clear();
            for (auto & d : split(value())) {
                char * end = nullptr;
                long x = std::strtol(d.c_str(), &end, 10);
                if (!end || *end || x < 0 || x > (1 << 24)) { std::fprintf(stderr, "gloas-bench: bad depth '%s'\n", d.c_str()); return 2; }
                depths.push_back(int(x));
            }
        }
        else if (a == "--kv-type") {
            kv_configs.clear();
            for (auto & k : split(value())) {
                type t;
                if (!type_from_name(k.c_str(), &t)) { std::fprintf(stderr, "gloas-bench: unknown K/V type '%s'\n", k.c_str()); return 2; }
                kv_configs.push_back({type_name(t), t, 1.0f});
            }
        }
        else if (a == "--strategy") {
            kv_configs.clear();
            for (auto & k : split(value())) {
                memory_strategy st;
                if (!memory_strategy_from_name(k.c_str(), &st) || st == memory_strategy::AUTO) {
                    std::fprintf(stderr, "gloas-bench: --strategy takes speed, balanced, aggressive; got '%s'\n", k.c_str());
                    return 2;
                }
                context_params cp;
                apply_strategy(st, cp);
                kv_configs.push_back({memory_strategy_name(st) + std::string(" (") + type_name(cp.kv.kv_type) +
                                          (cp.sparse.ratio < 1.0f ? format(", sparse %.2g)", double(cp.sparse.ratio)) : std::string(")")),
                                      cp.kv.kv_type, cp.sparse.ratio});
            }
        }
        else if (a == "-t" || a == "--threads") threads = int_value();
        else if (a == "-r" || a == "--repetitions") reps = std::max(1, int_value());
        else if (a == "--bandwidth") bandwidth = true;
        else if (a == "-o" || a == "--output") out_fmt = value();
        else { std::fprintf(stderr, "gloas-bench: unknown option '%s'\nTry 'gloas-bench --help'.\n", a.c_str()); return 2; }
    }
    if (models.empty()) { std::fprintf(stderr, "gloas-bench: no model given (-m)\n"); return 2; }
    if (out_fmt != "md" && out_fmt != "json" && out_fmt != "csv") {
        std::fprintf(stderr, "gloas-bench: -o must be md, json or csv\n");
        return 2;
    }
    if (threads > 0) ops::set_n_threads(threads);
    const int nt = ops::n_threads();

    double bw = 0.0;
    if (bandwidth) {
        const double plain = measure_read_bandwidth(size_t(1) << 30, nt, 10);
        const double pref = measure_read_bandwidth(size_t(1) << 30, nt, 10, true);
        bw = std::max(plain, pref);
        std::fprintf(stderr, "gloas-bench: read bandwidth with %d threads: %.2f GB/s (%.2f GB/s with software prefetch)\n",
                     nt, plain / 1e9, pref / 1e9);
    }

    std::vector<result> results;
    std::mt19937 rng(1234);
    for (const auto & path : models) {
        std::fprintf(stderr, "gloas-bench: loading %s\n", path.c_str());
        auto m = model::load({path, ""});
        const int max_depth = *std::max_element(depths.begin(), depths.end());
        std::uniform_int_distribution<int32_t> tok(0, m->hp.n_vocab - 1);
        std::vector<int32_t> tokens(size_t(max_depth + std::max({n_prompt, n_gen, 16}) + 1));
        for (auto & t : tokens) t = tok(rng);

        // Matrix parameters: every weight except the norms and the embedding table
        // (a row lookup), i.e. what the matmuls multiply.
        double mat_params = double(m->output.nelements());
        for (const auto & l : m->layers)
            for (const tensor * t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_down, &l.ffn_up})
                mat_params += double(t->nelements());

        for (const kv_config & kc : kv_configs) {
            context_params cp;
            cp.n_ctx = int32_t(tokens.size());
            cp.n_ubatch = ubatch;
            cp.kv.kv_type = kc.t;
            cp.sparse.ratio = kc.sparse;
            cp.kv.page_tokens = page;
            cp.kv.dir = "";
            context ctx(*m, cp);
            // Warm-up: touches every weight page and every code path.
            ctx.eval(tokens.data(), 16);
            ctx.eval(tokens.data(), 1);

            auto base = [&](const std::string & test) {
                result r;
                r.model = m->name;
                r.type = type_name(m->weight_type);
                r.kv = kc.name;
                r.size_mib = double(m->weight_bytes) / (1024.0 * 1024.0);
                r.params_m = double(m->n_params) / 1e6;
                r.threads = nt;
                r.test = test;
                return r;
            };
            for (int depth : depths) {
                const std::string at = depth ? " @ d" + std::to_string(depth) : "";
                // The context holds `depth` tokens before each timed run.
                auto to_depth = [&]() {
                    ctx.reset();
                    if (depth > 0) ctx.eval(tokens.data(), depth);
                };
                if (n_prompt > 0) {
                    std::vector<double> v;
                    for (int r = 0; r < reps; ++r) {
                        to_depth();
                        double t0 = now_s();
                        ctx.eval(tokens.data() + depth, n_prompt);
                        v.push_back(double(n_prompt) / (now_s() - t0));
                    }
                    result res = base("pp" + std::to_string(n_prompt) + at);
                    stats(v, res.mean, res.sd);
                    res.gflops_thread = 2.0 * mat_params * res.mean / 1e9 / nt;
                    results.push_back(res);
                }
                if (n_gen > 0) {
                    std::vector<double> v;
                    for (int r = 0; r < reps; ++r) {
                        to_depth();
                        double t0 = now_s();
                        for (int i = 0; i < n_gen; ++i) ctx.eval(&tokens[size_t(depth + i)], 1);
                        v.push_back(double(n_gen) / (now_s() - t0));
                    }
                    result res = base("tg" + std::to_string(n_gen) + at);
                    stats(v, res.mean, res.sd);
                    if (bw > 0) res.ceiling_pct = 100.0 * res.mean / (bw / double(m->bytes_per_token()));
                    results.push_back(res);
                }
            }
        }
    }

    if (out_fmt == "json") {
        std::printf("[\n");
        for (size_t i = 0; i < results.size(); ++i) {
            const result & r = results[i];
            std::printf("  {\"model\": \"%s\", \"type\": \"%s\", \"kv_type\": \"%s\", \"size_mib\": %.2f, \"params_m\": %.2f, "
                        "\"threads\": %d, \"test\": \"%s\", \"tokens_per_s\": %.3f, \"sd\": %.3f",
                        r.model.c_str(), r.type.c_str(), r.kv.c_str(), r.size_mib, r.params_m, r.threads, r.test.c_str(), r.mean, r.sd);
            if (r.ceiling_pct >= 0) std::printf(", \"bandwidth_gbs\": %.3f, \"ceiling_pct\": %.1f", bw / 1e9, r.ceiling_pct);
            if (r.gflops_thread >= 0) std::printf(", \"gflops_per_thread\": %.1f", r.gflops_thread);
            std::printf("}%s\n", i + 1 < results.size() ? "," : "");
        }
        std::printf("]\n");
    } else if (out_fmt == "csv") {
        std::printf("model,type,kv,size_mib,params_m,threads,test,tokens_per_s,sd,ceiling_pct,gflops_per_thread\n");
        for (const result & r : results)
            std::printf("\"%s\",%s,\"%s\",%.2f,%.2f,%d,\"%s\",%.3f,%.3f,%s,%s\n", r.model.c_str(), r.type.c_str(), r.kv.c_str(),
                        r.size_mib, r.params_m, r.threads, r.test.c_str(), r.mean, r.sd,
                        r.ceiling_pct >= 0 ? format("%.1f", r.ceiling_pct).c_str() : "",
                        r.gflops_thread >= 0 ? format("%.1f", r.gflops_thread).c_str() : "");
    } else {
        std::printf("| model | type | size | params | threads | kv | test | t/s | notes |\n");
        std::printf("|---|---|---:|---:|---:|---|---|---:|---|\n");
        for (const result & r : results) {
            std::string notes;
            if (r.ceiling_pct >= 0) notes = format("%.0f%% of the %.1f GB/s ceiling", r.ceiling_pct, bw / 1e9);
            if (r.gflops_thread >= 0) notes = format("%.1f GFLOP/s per thread", r.gflops_thread);
            std::printf("| %s | %s | %.1f MiB | %.1f M | %d | %s | %s | %.2f ± %.2f | %s |\n", r.model.c_str(), r.type.c_str(),
                        r.size_mib, r.params_m, r.threads, r.kv.c_str(), r.test.c_str(), r.mean, r.sd, notes.c_str());
        }
    }
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    try {
        return run(argc, argv);
    } catch (const error & e) {
        std::fprintf(stderr, "gloas-bench: error: %s\n", e.what());
        return 1;
    }
}
