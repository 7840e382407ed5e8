#include "decoder/autoconfig.h"

#include "kvcache/page.h"
#include "base/error.h"
#include "tensor/thread-pool.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace gloas {

namespace {

// "812 KiB", "3.4 MiB", "1.2 GiB": three significant digits at most.
std::string bytes(double b) {
    const char * unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
    return u == 0 ? format("%.0f bytes", b) : format(b < 10 ? "%.2f %s" : b < 100 ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

} // namespace

int32_t physical_cores() { return ops::physical_cores(); }

auto_config choose_config(const model & m, const auto_config_input & in) {
    const hparams & hp = m.hp;
    auto_config c;
    c.n_ctx = in.n_ctx > 0 ? in.n_ctx : hp.n_ctx_train;
    std::string & ex = c.explanation;

    ex += format("model: %s, %.3g M parameters, %s weights %s; %d layers x %d KV heads x %d dims\n",
                 m.name.c_str(), double(m.n_params) / 1e6, type_name(m.weight_type), bytes(double(m.weight_bytes)).c_str(),
                 hp.n_layer, hp.n_head_kv, hp.head_dim);

    std::string why;
    c.strategy = choose_strategy(m, c.n_ctx, in.ram_available, &why);
    context_params cp;
    apply_strategy(c.strategy, cp);
    c.kv_type = cp.kv.kv_type;
    c.sparse_ratio = cp.sparse.ratio;
    ex += format("strategy: %s: %s\n", memory_strategy_name(c.strategy), why.c_str());

    const page_geometry g(c.page_tokens, hp);
    const size_t page = g.page_bytes(c.kv_type);
    const size_t n_pages = (size_t(c.n_ctx) + size_t(c.page_tokens) - 1) / size_t(c.page_tokens);
    c.kv_bytes = page * n_pages;
    ex += format("K/V: %s pages of %d tokens (%s per token, %s per page; the smallest page every K/V "
                 "type allows), %s decode attention; %d positions need %s\n",
                 type_name(c.kv_type), c.page_tokens, bytes(double(page) / c.page_tokens).c_str(), bytes(double(page)).c_str(),
                 c.sparse_ratio < 1.0f ? format("sparse (%.2f of the pages)", double(c.sparse_ratio)).c_str() : "dense",
                 c.n_ctx, bytes(double(c.kv_bytes)).c_str());

    const double half = double(in.ram_available) / 2;
    const double left = half - double(m.weight_bytes);
    if (in.ram_available == 0 || double(c.kv_bytes) <= left) {
        c.kv_ram_bytes = 0;
        ex += in.ram_available == 0
                  ? std::string("RAM budget: unbounded (the available RAM is unknown)\n")
                  : format("RAM budget: unbounded: the whole K/V (%s) fits beside the weights in half of the %s "
                           "available\n", bytes(double(c.kv_bytes)).c_str(), bytes(double(in.ram_available)).c_str());
    } else {
        c.kv_ram_bytes = std::max(size_t(left > 0 ? left : 0), 16 * page);
        ex += format("RAM budget: %s of K/V resident (half of the %s available, less %s of weights, "
                     "at least 16 pages); the page file holds the other %s\n",
                     bytes(double(c.kv_ram_bytes)).c_str(), bytes(double(in.ram_available)).c_str(),
                     bytes(double(m.weight_bytes)).c_str(),
                     bytes(double(c.kv_bytes > c.kv_ram_bytes ? c.kv_bytes - c.kv_ram_bytes : 0)).c_str());
    }

    if (in.n_cores > 0) {
        c.n_threads = in.n_cores;
        ex += format("threads: %d, one per physical core (decode is bound by memory bandwidth; hyper-threads add none)\n",
                     c.n_threads);
    } else {
        const int32_t phys = physical_cores();
        c.n_threads = ops::default_threads();
        ex += format("threads: %d, one per physical core (decode is bound by memory bandwidth; hyper-threads add none) "
                     "not busy with other work (%d physical cores; a thread sharing its core's time with another "
                     "process would hold the others up)\n",
                     c.n_threads, phys);
    }

    const size_t per_token = sizeof(float) * size_t(2 * hp.n_embd + 2 * hp.n_embd_q() + 2 * hp.n_embd_kv() + 2 * hp.n_ff);
    int32_t ub = std::min(512, c.n_ctx);
    while (ub > 32 && in.ram_available > 0 && double(per_token) * ub > double(in.ram_available) / 16) ub /= 2;
    c.n_ubatch = std::max(1, ub);
    ex += format("ubatch: %d tokens per prefill chunk (%s of activations)\n", c.n_ubatch,
                 bytes(double(per_token) * c.n_ubatch).c_str());

    c.copy_weights = weights_copied_by_default(m.weight_bytes, in.ram_available);
    ex += c.copy_weights
              ? format("weights: copied into memory in huge pages (--no-mmap): %s, at most a quarter of the %s "
                       "available; decode reads them faster than through the file's mapping\n",
                       bytes(double(m.weight_bytes)).c_str(), bytes(double(in.ram_available)).c_str())
              : in.ram_available == 0
                    ? std::string("weights: mapped from the file (the available RAM is unknown)\n")
                    : format("weights: mapped from the file: %s, more than a quarter of the %s available, so the page "
                             "cache keeps the only copy\n",
                             bytes(double(m.weight_bytes)).c_str(), bytes(double(in.ram_available)).c_str());

    if (in.gpu_available > 0)
        ex += format("GPU: %s free, not used: this build has no CUDA backend\n", bytes(double(in.gpu_available)).c_str());
    else
        ex += "GPU: none used (this build has no CUDA backend)\n";
    return c;
}

bool weights_copied_by_default(size_t weight_bytes, size_t ram_available) {
    return ram_available > 0 && double(weight_bytes) <= double(ram_available) / 4;
}

} // namespace gloas
