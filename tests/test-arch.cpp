// Architectures and variants: tiny synthetic GGUF models (written with
// gguf_writer) of every variant the loader accepts — qwen2 with Q/K/V biases
// and NEOX rope, llama with head_dim != n_embd / n_head, n_rot < head_dim,
// rope_freqs factors, linear rope scaling, tied and untied output; qwen3's
// q/k norms; phi3's fused matrices, partial rotary dims, long/short factors
// and attn_factor; gemma2/gemma3's scaled embeddings, post norms, GELU,
// soft-caps and sliding-window layers (gemma3's local rope base) — are run
// through context::eval (chunked, token by token, and in a batch of two
// sequences) and compared with a naive scalar forward pass written here from
// the definitions (double accumulation, f32 weights). Negative controls check
// the comparison would catch each feature left out. Also: the pages a window
// layer reads (counted), Hugging Face folders of each family through
// gloas-convert, random models of each family, the rope kernels, the
// refusals (unknown architecture, missing tensor, bad shapes, MoE and vision
// tensors) and the profiler; with GLOAS_ARCH_DUMP set, the files and logits
// of the llama.cpp comparison in BENCHMARKS.md.
#include "decoder/gguf-writer.h"
#include "decoder/llama-gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/random-model.h"
#include "base/error.h"
#include "tensor/ops.h"
#include "tensor/profile.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>
#include <sys/stat.h>

using namespace gloas;

namespace {

// Shape and variant of a synthetic model.
struct spec {
    std::string arch = "llama";
    int n_vocab = 48, n_embd = 32, n_ff = 40, n_head = 4, n_head_kv = 2, n_layer = 2;
    int head_dim = 8;   // written as key_length when != n_embd / n_head
    int n_rot = 8;      // written as rope.dimension_count
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;
    float linear_factor = 0.0f;  // > 0: rope.scaling.type "linear" with this factor
    bool qkv_bias = false, o_bias = false;
    bool tied = false;           // no output.weight
    bool rope_freqs = false;     // rope_freqs.weight
    int ctx_len = 256;           // context_length
    // phi3
    bool fused = true;           // attn_qkv and gate+up in ffn_up (else separate q/k/v; ffn always fused)
    bool rope_long_short = false;  // rope_factors_long/short.weight
    int ctx_orig = 0;            // > 0: rope.scaling.original_context_length
    float attn_factor = 0.0f;    // > 0: rope.scaling.attn_factor
    // gemma2 / gemma3
    int window = 0;              // > 0: attention.sliding_window
    float attn_cap = 0.0f, final_cap = 0.0f;  // gemma2's soft-caps (written when > 0)
    bool neox() const { return arch != "llama"; }
    bool gemma() const { return arch == "gemma2" || arch == "gemma3"; }
    bool qk_norm() const { return arch == "qwen3" || arch == "gemma3"; }
    // The layers that slide, as llama.cpp assigns them.
    bool is_swa(int il) const {
        if (window <= 0) return false;
        const int period = arch == "gemma2" ? 2 : arch == "gemma3" ? 6 : 0;
        return period > 0 && il % period < period - 1;
    }
};

// Weights by GGUF tensor name, row-major (rows = output features).
using weights = std::map<std::string, std::vector<float>>;

weights make_weights(const spec & s, uint32_t seed) {
    std::mt19937 rng(seed);
    weights w;
    auto fill = [&](const std::string & name, size_t n, float lo, float hi) {
        std::uniform_real_distribution<float> d(lo, hi);
        std::vector<float> & v = w[name];
        v.resize(n);
        for (float & x : v) x = d(rng);
    };
    const size_t E = size_t(s.n_embd), Q = size_t(s.n_head * s.head_dim), KV = size_t(s.n_head_kv * s.head_dim);
    const size_t F = size_t(s.n_ff), V = size_t(s.n_vocab);
    auto mat = [&](const std::string & name, size_t rows, size_t cols) {
        const float a = 1.0f / std::sqrt(float(cols));
        fill(name, rows * cols, -a, a);
    };
    fill("token_embd.weight", V * E, -1.0f, 1.0f);
    fill("output_norm.weight", E, 0.5f, 1.5f);
    if (!s.tied) mat("output.weight", V, E);
    if (s.rope_freqs) fill("rope_freqs.weight", size_t(s.n_rot / 2), 1.0f, 8.0f);
    if (s.rope_long_short) {
        fill("rope_factors_long.weight", size_t(s.n_rot / 2), 1.0f, 8.0f);
        fill("rope_factors_short.weight", size_t(s.n_rot / 2), 1.0f, 1.5f);
    }
    const bool phi3 = s.arch == "phi3";
    for (int il = 0; il < s.n_layer; ++il) {
        const std::string b = "blk." + std::to_string(il) + ".";
        fill(b + "attn_norm.weight", E, 0.5f, 1.5f);
        // Large enough Q/K that attention is far from uniform (rope matters).
        if (phi3 && s.fused) {
            fill(b + "attn_qkv.weight", (Q + 2 * KV) * E, -0.6f, 0.6f);
        } else {
            fill(b + "attn_q.weight", Q * E, -0.6f, 0.6f);
            fill(b + "attn_k.weight", KV * E, -0.6f, 0.6f);
            mat(b + "attn_v.weight", KV, E);
        }
        mat(b + "attn_output.weight", E, Q);
        fill(b + "ffn_norm.weight", E, 0.5f, 1.5f);
        if (phi3) {
            mat(b + "ffn_up.weight", 2 * F, E);
        } else {
            mat(b + "ffn_gate.weight", F, E);
            mat(b + "ffn_up.weight", F, E);
        }
        mat(b + "ffn_down.weight", E, F);
        if (s.qk_norm()) {
            fill(b + "attn_q_norm.weight", size_t(s.head_dim), 0.5f, 1.5f);
            fill(b + "attn_k_norm.weight", size_t(s.head_dim), 0.5f, 1.5f);
        }
        if (s.gemma()) {
            fill(b + "post_attention_norm.weight", E, 0.5f, 1.5f);
            fill(b + "post_ffw_norm.weight", E, 0.5f, 1.5f);
        }
        if (s.qkv_bias) {
            fill(b + "attn_q.bias", Q, -0.5f, 0.5f);
            fill(b + "attn_k.bias", KV, -0.5f, 0.5f);
            fill(b + "attn_v.bias", KV, -0.5f, 0.5f);
        }
        if (s.o_bias) fill(b + "attn_output.bias", E, -0.5f, 0.5f);
    }
    return w;
}

// A SentencePiece vocabulary of n pieces: <unk>, <s>, </s>, then "p3", "p4"...
vocab make_vocab(int n) {
    vocab v;
    for (int i = 0; i < n; ++i) {
        v.pieces.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "p" + std::to_string(i));
        v.scores.push_back(-float(i));
        v.types.push_back(i == 0 ? token_type::UNKNOWN : i < 3 ? token_type::CONTROL : token_type::NORMAL);
    }
    return v;
}

// Writes the model `s` with weights `w` to `path`; `skip` names a tensor left
// out (for the refusal tests).
void write_model(const std::string & path, const spec & s, const weights & w, const std::string & skip = {}) {
    gguf_writer g;
    const std::string a = s.arch + ".";
    g.set_str("general.architecture", s.arch);
    g.set_str("general.name", "synthetic " + s.arch);
    g.set_u32(a + "context_length", uint32_t(s.ctx_len));
    if (s.window > 0) g.set_u32(a + "attention.sliding_window", uint32_t(s.window));
    if (s.attn_cap > 0.0f) g.set_f32(a + "attn_logit_softcapping", s.attn_cap);
    if (s.final_cap > 0.0f) g.set_f32(a + "final_logit_softcapping", s.final_cap);
    if (s.ctx_orig > 0) g.set_u32(a + "rope.scaling.original_context_length", uint32_t(s.ctx_orig));
    if (s.attn_factor > 0.0f) g.set_f32(a + "rope.scaling.attn_factor", s.attn_factor);
    g.set_u32(a + "embedding_length", uint32_t(s.n_embd));
    g.set_u32(a + "block_count", uint32_t(s.n_layer));
    g.set_u32(a + "feed_forward_length", uint32_t(s.n_ff));
    g.set_u32(a + "attention.head_count", uint32_t(s.n_head));
    g.set_u32(a + "attention.head_count_kv", uint32_t(s.n_head_kv));
    if (s.head_dim * s.n_head != s.n_embd) {
        g.set_u32(a + "attention.key_length", uint32_t(s.head_dim));
        g.set_u32(a + "attention.value_length", uint32_t(s.head_dim));
    }
    g.set_u32(a + "rope.dimension_count", uint32_t(s.n_rot));
    g.set_f32(a + "rope.freq_base", s.rope_base);
    if (s.linear_factor > 0.0f) {
        g.set_str(a + "rope.scaling.type", "linear");
        g.set_f32(a + "rope.scaling.factor", s.linear_factor);
    }
    g.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
    vocab voc = make_vocab(s.n_vocab);
    if (s.arch == "phi3") voc.pieces[3] = "<|endoftext|>";  // as Phi-3's (llama.cpp looks it up by name)
    llama_gguf_set_vocab(g, voc);
    const int64_t E = s.n_embd, Q = s.n_head * s.head_dim, KV = s.n_head_kv * s.head_dim, F = s.n_ff;
    // GGUF shapes, innermost first.
    auto shape_of = [&](const std::string & name, int64_t * ne) -> int {
        auto ends = [&](const char * suf) {
            const size_t n = std::strlen(suf);
            return name.size() >= n && name.compare(name.size() - n, n, suf) == 0;
        };
        if (name == "token_embd.weight" || name == "output.weight") { ne[0] = E; ne[1] = s.n_vocab; return 2; }
        if (name == "rope_freqs.weight" || name == "rope_factors_long.weight" || name == "rope_factors_short.weight") {
            ne[0] = s.n_rot / 2;
            return 1;
        }
        if (ends("attn_q_norm.weight") || ends("attn_k_norm.weight")) { ne[0] = s.head_dim; return 1; }
        if (ends("norm.weight")) { ne[0] = E; return 1; }
        if (ends("attn_qkv.weight")) { ne[0] = E; ne[1] = Q + 2 * KV; return 2; }
        if (s.arch == "phi3" && ends("ffn_up.weight")) { ne[0] = E; ne[1] = 2 * F; return 2; }
        if (ends("attn_q.weight")) { ne[0] = E; ne[1] = Q; return 2; }
        if (ends("attn_k.weight") || ends("attn_v.weight")) { ne[0] = E; ne[1] = KV; return 2; }
        if (ends("attn_output.weight")) { ne[0] = Q; ne[1] = E; return 2; }
        if (ends("ffn_gate.weight") || ends("ffn_up.weight")) { ne[0] = E; ne[1] = F; return 2; }
        if (ends("ffn_down.weight")) { ne[0] = F; ne[1] = E; return 2; }
        if (ends("attn_q.bias")) { ne[0] = Q; return 1; }
        if (ends("attn_k.bias") || ends("attn_v.bias")) { ne[0] = KV; return 1; }
        if (ends("attn_output.bias")) { ne[0] = E; return 1; }
        FAIL("no shape for " << name);
        return 0;
    };
    for (const auto & kv : w) {
        if (kv.first == skip) continue;
        int64_t ne[4] = {1, 1, 1, 1};
        const int nd = shape_of(kv.first, ne);
        REQUIRE(size_t(ne[0] * ne[1]) == kv.second.size());
        g.add_tensor(kv.first, type::F32, nd, ne, kv.second.data());
    }
    g.write(path);
}

// The rope of the definition: pair i of the first n_rot dims turns by
// pos * scale * base^(-2i/n_rot) / factor_i; NORM pairs (2i, 2i+1), NEOX
// (i, i + n_rot/2).
void ref_rope(double * x, int n_head, int head_dim, int n_rot, int pos, bool neox, double base, double scale,
              const float * factors) {
    for (int h = 0; h < n_head; ++h) {
        double * xh = x + h * head_dim;
        for (int i = 0; i < n_rot / 2; ++i) {
            double theta = pos * scale * std::pow(base, -2.0 * i / n_rot);
            if (factors) theta /= factors[i];
            const int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
            const double x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
            xh[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
        }
    }
}

// Logits (n_vocab) of every position of `toks` by the textbook forward pass
// of model `s` with weights `w`, in a context of n_ctx positions (phi3 picks
// its rope factors by it).
std::vector<std::vector<double>> ref_forward(const spec & s, const weights & w, const std::vector<int32_t> & toks,
                                             int n_ctx = 64) {
    const int E = s.n_embd, HD = s.head_dim, Q = s.n_head * HD, KV = s.n_head_kv * HD, F = s.n_ff;
    const int T = int(toks.size());
    auto W = [&](const std::string & name) -> const std::vector<float> & {
        auto it = w.find(name);
        REQUIRE_MESSAGE(it != w.end(), name);
        return it->second;
    };
    // y (rows) = rows [r0, r0 + rows) of m (.., cols) x (cols)
    auto matvec = [](const std::vector<float> & m, const std::vector<double> & x, int rows, int r0 = 0) {
        const size_t cols = x.size();
        std::vector<double> y(size_t(rows), 0.0);
        for (int r = 0; r < rows; ++r)
            for (size_t c = 0; c < cols; ++c) y[size_t(r)] += double(m[size_t(r0 + r) * cols + c]) * x[c];
        return y;
    };
    // RMSNorm of each of the x.size() / g.size() groups of x (one per head for q/k norms).
    auto rmsnorm = [&](const std::vector<double> & x, const std::vector<float> & g) {
        std::vector<double> y(x.size());
        for (size_t h0 = 0; h0 < x.size(); h0 += g.size()) {
            double ss = 0.0;
            for (size_t i = 0; i < g.size(); ++i) ss += x[h0 + i] * x[h0 + i];
            const double r = 1.0 / std::sqrt(ss / double(g.size()) + double(s.rms_eps));
            for (size_t i = 0; i < g.size(); ++i) y[h0 + i] = x[h0 + i] * r * double(g[i]);
        }
        return y;
    };
    auto add_bias = [&](std::vector<double> & y, const std::string & name) {
        if (!w.count(name)) return;
        const auto & b = W(name);
        for (size_t i = 0; i < y.size(); ++i) y[i] += double(b[i]);
    };
    auto cap = [](double x, double c) { return c > 0.0 ? c * std::tanh(x / c) : x; };
    const float * factors = s.rope_freqs ? W("rope_freqs.weight").data() : nullptr;
    if (s.rope_long_short)
        factors = W(n_ctx > (s.ctx_orig > 0 ? s.ctx_orig : s.ctx_len) ? "rope_factors_long.weight"
                                                                        : "rope_factors_short.weight").data();
    const double scale = s.linear_factor > 0.0f ? 1.0 / double(s.linear_factor) : 1.0;
    const bool phi3 = s.arch == "phi3", gemma = s.gemma();
    // gemma: 1/sqrt(head_dim) (the 27B shapes aside); gemma2's default caps
    const double qscale = 1.0 / std::sqrt(double(HD));
    const double attn_cap = s.arch == "gemma2" ? (s.attn_cap > 0.0f ? s.attn_cap : 50.0) : 0.0;
    const double final_cap = s.arch == "gemma2" ? (s.final_cap > 0.0f ? s.final_cap : 30.0)
                           : s.arch == "gemma3" && s.window == 0 ? s.final_cap : 0.0;

    const size_t nt = toks.size();
    std::vector<std::vector<double>> x(nt, std::vector<double>(size_t(E)));
    for (int t = 0; t < T; ++t)
        for (int i = 0; i < E; ++i) {
            x[size_t(t)][size_t(i)] = double(W("token_embd.weight")[size_t(toks[size_t(t)]) * size_t(E) + size_t(i)]);
            if (gemma) x[size_t(t)][size_t(i)] *= std::sqrt(double(E));
        }

    for (int il = 0; il < s.n_layer; ++il) {
        const std::string b = "blk." + std::to_string(il) + ".";
        const bool swa = s.is_swa(il);
        // gemma3's sliding layers: rope base 10000, unscaled
        const double base = s.arch == "gemma3" && swa ? 10000.0 : s.rope_base;
        const double rscale = s.arch == "gemma3" && swa ? 1.0 : scale;
        std::vector<std::vector<double>> q(nt), k(nt), v(nt);
        for (int t = 0; t < T; ++t) {
            const auto xn = rmsnorm(x[size_t(t)], W(b + "attn_norm.weight"));
            if (phi3 && s.fused) {
                q[size_t(t)] = matvec(W(b + "attn_qkv.weight"), xn, Q);
                k[size_t(t)] = matvec(W(b + "attn_qkv.weight"), xn, KV, Q);
                v[size_t(t)] = matvec(W(b + "attn_qkv.weight"), xn, KV, Q + KV);
            } else {
                q[size_t(t)] = matvec(W(b + "attn_q.weight"), xn, Q);
                k[size_t(t)] = matvec(W(b + "attn_k.weight"), xn, KV);
                v[size_t(t)] = matvec(W(b + "attn_v.weight"), xn, KV);
            }
            if (s.qkv_bias) {
                add_bias(q[size_t(t)], b + "attn_q.bias");
                add_bias(k[size_t(t)], b + "attn_k.bias");
                add_bias(v[size_t(t)], b + "attn_v.bias");
            }
            if (s.qk_norm()) {
                q[size_t(t)] = rmsnorm(q[size_t(t)], W(b + "attn_q_norm.weight"));
                k[size_t(t)] = rmsnorm(k[size_t(t)], W(b + "attn_k_norm.weight"));
            }
            ref_rope(q[size_t(t)].data(), s.n_head, HD, s.n_rot, t, s.neox(), base, rscale, factors);
            ref_rope(k[size_t(t)].data(), s.n_head_kv, HD, s.n_rot, t, s.neox(), base, rscale, factors);
            if (s.attn_factor > 0.0f)  // cos and sin scaled: the rotated dims
                for (auto * y : {&q[size_t(t)], &k[size_t(t)]})
                    for (size_t i = 0; i < y->size(); ++i)
                        if (int(i % size_t(HD)) < s.n_rot) (*y)[i] *= double(s.attn_factor);
        }
        for (int t = 0; t < T; ++t) {
            std::vector<double> att(size_t(Q), 0.0);
            const int lo = swa ? std::max(0, t - s.window + 1) : 0;
            for (int h = 0; h < s.n_head; ++h) {
                const int hk = h / (s.n_head / s.n_head_kv);
                std::vector<double> sc(size_t(t + 1), 0.0);
                double mx = -1e300;
                for (int j = lo; j <= t; ++j) {
                    double d = 0.0;
                    for (int i = 0; i < HD; ++i) d += q[size_t(t)][size_t(h * HD + i)] * k[size_t(j)][size_t(hk * HD + i)];
                    sc[size_t(j)] = cap(d * qscale, attn_cap);
                    mx = std::max(mx, sc[size_t(j)]);
                }
                double sum = 0.0;
                for (int j = lo; j <= t; ++j) sum += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
                for (int j = lo; j <= t; ++j)
                    for (int i = 0; i < HD; ++i)
                        att[size_t(h * HD + i)] += sc[size_t(j)] / sum * v[size_t(j)][size_t(hk * HD + i)];
            }
            auto o = matvec(W(b + "attn_output.weight"), att, E);
            if (s.o_bias) add_bias(o, b + "attn_output.bias");
            if (gemma) o = rmsnorm(o, W(b + "post_attention_norm.weight"));
            for (int i = 0; i < E; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
            const auto xn = rmsnorm(x[size_t(t)], W(b + "ffn_norm.weight"));
            auto g = phi3 ? matvec(W(b + "ffn_up.weight"), xn, F) : matvec(W(b + "ffn_gate.weight"), xn, F);
            const auto u = phi3 ? matvec(W(b + "ffn_up.weight"), xn, F, F) : matvec(W(b + "ffn_up.weight"), xn, F);
            for (int i = 0; i < F; ++i) {
                const double z = g[size_t(i)];
                const double act = gemma ? 0.5 * z * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)))
                                         : z / (1.0 + std::exp(-z));
                g[size_t(i)] = act * u[size_t(i)];
            }
            auto d = matvec(W(b + "ffn_down.weight"), g, E);
            if (gemma) d = rmsnorm(d, W(b + "post_ffw_norm.weight"));
            for (int i = 0; i < E; ++i) x[size_t(t)][size_t(i)] += d[size_t(i)];
        }
    }
    std::vector<std::vector<double>> logits;
    const auto & out = W(s.tied ? "token_embd.weight" : "output.weight");
    for (int t = 0; t < T; ++t) {
        logits.push_back(matvec(out, rmsnorm(x[size_t(t)], W("output_norm.weight")), s.n_vocab));
        for (double & l : logits.back()) l = cap(l, final_cap);
    }
    return logits;
}

// Largest |a - b| over all positions.
double max_diff(const std::vector<std::vector<float>> & a, const std::vector<std::vector<double>> & b) {
    REQUIRE(a.size() == b.size());
    double d = 0.0;
    for (size_t t = 0; t < a.size(); ++t) {
        REQUIRE(a[t].size() == b[t].size());
        for (size_t i = 0; i < a[t].size(); ++i) d = std::max(d, std::fabs(double(a[t][i]) - b[t][i]));
    }
    return d;
}

context_params f32_params(int32_t n_ubatch) {
    context_params cp;
    cp.n_ctx = 64;
    cp.n_ubatch = n_ubatch;
    cp.kv.kv_type = type::F32;
    cp.kv.page_tokens = 4;  // the test's positions cross sealed pages
    return cp;
}

// Logits of every position: one eval in chunks of n_ubatch.
std::vector<std::vector<float>> run_prefill(const model & m, const std::vector<int32_t> & toks, int32_t n_ubatch) {
    context ctx(m, f32_params(n_ubatch));
    std::vector<std::vector<float>> out;
    const int V = m.hp.n_vocab;
    ctx.eval(toks.data(), int32_t(toks.size()),
             [&](int32_t, const float * l) { out.emplace_back(l, l + V); });
    return out;
}

// Logits of every position: one token per eval.
std::vector<std::vector<float>> run_stepwise(const model & m, const std::vector<int32_t> & toks) {
    context ctx(m, f32_params(8));
    std::vector<std::vector<float>> out;
    const int V = m.hp.n_vocab;
    for (int32_t t : toks) {
        const float * l = ctx.eval(&t, 1);
        out.emplace_back(l, l + V);
    }
    return out;
}

const std::vector<int32_t> k_tokens = {1, 7, 23, 5, 40, 12, 12, 3, 31, 19, 8};

// Tolerance of the context's f32 logits against the double reference: the
// kernels sum in float in another order (logits here are O(1..10); the
// differences seen are about 3e-6).
constexpr double TOL = 1e-4;
// A wrong variant must miss the reference by far more than that.
constexpr double WRONG = 100 * TOL;

std::string load_error(const std::string & path) {
    const std::string e = test::error_of([&] { model::load({path, ""}); });
    return e.empty() ? "(loaded without error)" : e;
}

// What rewrite_gguf changes in a copy of a file: a string key set (when
// `key` is not empty) and a 1-D tensor of n elements added (when `tensor`
// is not empty), F32 elements all `fill` or F16 elements all zero.
struct gguf_edit {
    std::string key, value;
    std::string tensor;
    type t = type::F32;
    int64_t n = 0;
    float fill = 0.0f;
};

gguf_edit set_key(const std::string & key, const std::string & value) { return {key, value, "", type::F32, 0, 0.0f}; }

gguf_edit add_1d(const std::string & tensor, type t, int64_t n, float fill = 0.0f) { return {"", "", tensor, t, n, fill}; }

// src's metadata and tensors with `e` applied, written to out.
void rewrite_gguf(const std::string & src_path, const std::string & out, const gguf_edit & e) {
    gguf_writer g;
    auto src = gguf_file::open(src_path);
    g.copy_metadata(*src);
    if (!e.key.empty()) g.set_str(e.key, e.value);
    for (const auto & ti : src->tensors()) g.add_tensor(ti.name, ti.t, ti.n_dims, ti.ne, ti.data);
    REQUIRE((e.t == type::F32 || e.fill == 0.0f));
    std::vector<float> f32(size_t(e.n), e.fill);
    std::vector<uint16_t> f16(size_t(e.n), 0);
    const int64_t ne[1] = {e.n};
    if (!e.tensor.empty()) g.add_tensor(e.tensor, e.t, 1, ne, e.t == type::F16 ? static_cast<const void *>(f16.data()) : f32.data());
    g.write(out);
}

// Checks model `s` against the reference, prefill in chunks and stepwise.
std::unique_ptr<model> check_model(const spec & s, const std::string & path, uint32_t seed) {
    const weights w = make_weights(s, seed);
    write_model(path, s, w);
    auto m = model::load({path, ""});
    const auto ref = ref_forward(s, w, k_tokens);
    const double d1 = max_diff(run_prefill(*m, k_tokens, 3), ref);
    const double d2 = max_diff(run_stepwise(*m, k_tokens), ref);
    INFO("prefill diff " << d1 << ", stepwise diff " << d2);
    CHECK(d1 < TOL);
    CHECK(d2 < TOL);
    return m;
}

// Decodes one batch of tokens `tok` of sequences `seq`, every logit kept;
// returns the largest |logit - reference| over them, ref(i) being the
// reference logits of token i.
double decode_diff(context & ctx, const std::vector<int32_t> & tok, const std::vector<int32_t> & seq, int n_vocab,
                   const std::function<const std::vector<double> &(size_t)> & ref) {
    std::vector<int8_t> keep(tok.size(), 1);
    batch bt;
    bt.n_tokens = int32_t(tok.size());
    bt.token = tok.data();
    bt.seq = seq.data();
    bt.logits = keep.data();
    ctx.decode(bt);
    double d = 0.0;
    for (size_t i = 0; i < tok.size(); ++i) {
        const float * l = ctx.batch_logits(int32_t(i));
        REQUIRE(l);
        const std::vector<double> & r = ref(i);
        for (int v = 0; v < n_vocab; ++v) d = std::max(d, std::fabs(double(l[v]) - r[size_t(v)]));
    }
    return d;
}

// A copy of s changed by edit: one variant of a list of families.
spec variant(spec s, const std::function<void(spec &)> & edit) {
    edit(s);
    return s;
}

} // namespace

TEST_CASE("rope_ex: NEOX and NORM pair layouts, factors, scaling, kernel against reference") {
    const int64_t n_head = 3, head_dim = 24, n_rot = 16;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    std::vector<float> base(size_t(n_head * head_dim));
    for (float & v : base) v = d(rng);
    std::vector<float> factors(size_t(n_rot / 2));
    for (float & f : factors) f = 1.0f + 3.0f * std::fabs(d(rng));

    SUBCASE("pair layouts: a unit vector in dim 0 turns into its partner by pos radians") {
        for (auto st : {ops::rope_style::NORM, ops::rope_style::NEOX}) {
            std::vector<float> x(size_t(head_dim), 0.0f);
            x[0] = 1.0f;
            ops::rope_params p;
            p.style = st;
            ops::rope_ex(x.data(), 1, head_dim, n_rot, 3, p);  // pair 0 turns by exactly pos
            const size_t partner = st == ops::rope_style::NEOX ? size_t(n_rot / 2) : 1;
            CHECK(x[0] == doctest::Approx(std::cos(3.0)).epsilon(1e-6));
            CHECK(x[partner] == doctest::Approx(std::sin(3.0)).epsilon(1e-6));
            for (size_t i = 0; i < x.size(); ++i)
                if (i != 0 && i != partner) CHECK(x[i] == 0.0f);
        }
    }
    SUBCASE("kernel equals reference; dims past n_rot untouched") {
        for (auto st : {ops::rope_style::NORM, ops::rope_style::NEOX})
            for (bool use_f : {false, true})
                for (float fs : {1.0f, 0.25f})
                    for (int64_t pos : {0, 1, 17, 1000, -5}) {
                        ops::rope_params p;
                        p.style = st;
                        p.freq_base = 500000.0f;
                        p.freq_scale = fs;
                        p.factors = use_f ? factors.data() : nullptr;
                        std::vector<float> a = base, b = base;
                        ops::rope_ex(a.data(), n_head, head_dim, n_rot, pos, p);
                        ops::rope_ex_ref(b.data(), n_head, head_dim, n_rot, pos, p);
                        for (size_t i = 0; i < a.size(); ++i) {
                            CHECK(std::fabs(a[i] - b[i]) <= 1e-6f);
                            if (int64_t(i) % head_dim >= n_rot) CHECK(a[i] == base[i]);
                        }
                    }
    }
    SUBCASE("rope is the NORM rope_ex, bit for bit") {
        for (int64_t pos : {0, 5, 333}) {
            std::vector<float> a = base, b = base, c = base, e = base;
            ops::rope(a.data(), n_head, head_dim, n_rot, pos, 10000.0f);
            ops::rope_params p;
            ops::rope_ex(b.data(), n_head, head_dim, n_rot, pos, p);
            ops::rope_ref(c.data(), n_head, head_dim, n_rot, pos, 10000.0f);
            ops::rope_ex_ref(e.data(), n_head, head_dim, n_rot, pos, p);
            CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(c.data(), e.data(), c.size() * sizeof(float)) == 0);
        }
    }
    SUBCASE("a pure rotation linear in pos: rope(pos) then rope(-d) is rope(pos - d)") {
        for (auto st : {ops::rope_style::NORM, ops::rope_style::NEOX}) {
            ops::rope_params p;
            p.style = st;
            p.factors = factors.data();
            p.freq_scale = 0.5f;
            for (int64_t pos : {10, 700, 4000}) {
                const int64_t dd = pos / 2 + 3;
                std::vector<float> a = base, b = base;
                ops::rope_ex(a.data(), n_head, head_dim, n_rot, pos, p);
                ops::rope_ex(a.data(), n_head, head_dim, n_rot, -dd, p);
                ops::rope_ex(b.data(), n_head, head_dim, n_rot, pos - dd, p);
                for (size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= 1e-5f);
                // and the norm of each pair is kept
                double n0 = 0.0, n1 = 0.0;
                for (size_t i = 0; i < a.size(); ++i) {
                    n0 += double(base[i]) * base[i];
                    n1 += double(a[i]) * a[i];
                }
                CHECK(n1 == doctest::Approx(n0).epsilon(1e-5));
            }
        }
    }
}

TEST_CASE("qwen2: Q/K/V biases and NEOX rope match the reference forward pass (tied output)") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "qwen2";
    s.qkv_bias = true;
    s.tied = true;  // as Qwen2-0.5B
    s.rms_eps = 1e-6f;
    s.rope_base = 1000000.0f / 64.0f;
    s.n_ff = 48;
    const std::string path = dir + "/qwen2.gguf";
    auto m = check_model(s, path, 1);
    CHECK(m->arch == "qwen2");
    CHECK(m->hp.rope_type == ops::rope_style::NEOX);
    CHECK(m->output.data == m->tok_embd.data);
    CHECK(!m->layers[0].bq.empty());
    CHECK(m->layers[0].bo.empty());
    CHECK(m->rope().style == ops::rope_style::NEOX);

    // Negative controls: the reference with the wrong rope ordering, or
    // without the biases, is far off.
    const weights w = make_weights(s, 1);
    const auto got = run_prefill(*m, k_tokens, 4);
    spec norm = s;
    norm.arch = "llama";  // NORM ordering in ref_forward
    CHECK(max_diff(got, ref_forward(norm, w, k_tokens)) > WRONG);
    spec nobias = s;
    nobias.qkv_bias = false;
    CHECK(max_diff(got, ref_forward(nobias, w, k_tokens)) > WRONG);
}

TEST_CASE("llama: head_dim != n_embd / n_head, n_rot < head_dim, rope_freqs, freq_base, output bias") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.n_embd = 24;
    s.n_head = 4;
    s.n_head_kv = 1;
    s.head_dim = 12;  // 4 * 12 = 48 != 24
    s.n_rot = 8;      // dims 8..11 of each head are not rotated
    s.rope_base = 500000.0f;
    s.rope_freqs = true;
    s.o_bias = true;
    auto m = check_model(s, dir + "/llama3ish.gguf", 2);
    CHECK(m->hp.head_dim == 12);
    CHECK(m->hp.n_rot == 8);
    CHECK(m->hp.n_embd_q() == 48);
    CHECK(m->hp.rope_type == ops::rope_style::NORM);
    CHECK(m->hp.rope_freq_base == 500000.0f);
    CHECK(!m->rope_freqs.empty());
    CHECK(m->rope().factors != nullptr);
    CHECK(m->output.data != m->tok_embd.data);

    // Without the factors the reference is far off.
    const weights w = make_weights(s, 2);
    spec nof = s;
    nof.rope_freqs = false;
    CHECK(max_diff(run_prefill(*m, k_tokens, 5), ref_forward(nof, w, k_tokens)) > WRONG);
}

TEST_CASE("llama: linear rope scaling, grouped-query attention, tied output") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.linear_factor = 4.0f;
    s.tied = true;
    s.n_head = 8;
    s.n_head_kv = 2;
    s.head_dim = 4;
    s.n_rot = 4;
    s.n_layer = 3;
    auto m = check_model(s, dir + "/linear.gguf", 3);
    CHECK(m->hp.rope_freq_scale == 0.25f);
    const weights w = make_weights(s, 3);
    spec unscaled = s;
    unscaled.linear_factor = 0.0f;
    CHECK(max_diff(run_prefill(*m, k_tokens, 11), ref_forward(unscaled, w, k_tokens)) > WRONG);
}

TEST_CASE("qwen2: a batch mixing two sequences (prefill of one, decode of the other) matches the reference") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "qwen2";
    s.qkv_bias = true;
    s.rope_freqs = true;
    const weights w = make_weights(s, 6);
    write_model(dir + "/q.gguf", s, w);
    auto m = model::load({dir + "/q.gguf", ""});
    context_params cp = f32_params(4);
    cp.n_seq_max = 2;
    context ctx(*m, cp);

    const std::vector<int32_t> a = {1, 9, 14, 30, 2, 17, 44};
    const std::vector<int32_t> b = {1, 33, 6, 6, 21};
    const auto ref_a = ref_forward(s, w, a), ref_b = ref_forward(s, w, b);
    // Sequence 1 first takes b[0..2] alone; then one batch: the rest of b
    // (positions 3, 4) after all of a (positions 0..6), every logit kept.
    std::vector<int32_t> tok(b.begin(), b.begin() + 3), seq(3, 1);
    batch first;
    first.n_tokens = 3;
    first.token = tok.data();
    first.seq = seq.data();
    ctx.decode(first);
    tok = a;
    tok.insert(tok.end(), b.begin() + 3, b.end());
    seq.assign(a.size(), 0);
    seq.insert(seq.end(), 2, 1);
    const double d = decode_diff(ctx, tok, seq, s.n_vocab, [&](size_t i) -> const std::vector<double> & {
        return i < a.size() ? ref_a[i] : ref_b[3 + (i - a.size())];
    });
    CHECK(d < TOL);
}

// check_model, and a batch of two sequences (one in a single prefill, the
// other token by token) against the same reference.
std::unique_ptr<model> check_family(const spec & s, const std::string & path, uint32_t seed) {
    auto m = check_model(s, path, seed);
    const weights w = make_weights(s, seed);
    const auto ref = ref_forward(s, w, k_tokens);
    context_params cp = f32_params(4);
    cp.n_seq_max = 2;
    context ctx(*m, cp);
    const int32_t n = int32_t(k_tokens.size());
    double d = 0.0;
    std::vector<int32_t> tok, seq;
    for (int32_t t = 0; t < n; ++t) {
        // sequence 1 takes one token per batch; sequence 0 all of its tokens in the first
        tok.clear();
        seq.clear();
        if (t == 0) {
            tok = k_tokens;
            seq.assign(size_t(n), 0);
        }
        tok.push_back(k_tokens[size_t(t)]);
        seq.push_back(1);
        d = std::max(d, decode_diff(ctx, tok, seq, s.n_vocab, [&](size_t i) -> const std::vector<double> & {
                         return ref[seq[i] == 0 ? i : size_t(t)];
                     }));
    }
    INFO("batch diff " << d);
    CHECK(d < TOL);
    return m;
}

TEST_CASE("qwen3: per-head q/k RMSNorm before rope, no biases, separate or tied output") {
    const std::string dir = test::temp_dir("arch");
    for (bool tied : {false, true}) {
        spec s;
        s.arch = "qwen3";
        s.head_dim = 16;  // 4 * 16 = 64 != n_embd 32, as Qwen3's key_length
        s.n_rot = 16;
        s.rms_eps = 1e-6f;
        s.rope_base = 1000000.0f;
        s.tied = tied;
        auto m = check_family(s, dir + "/qwen3.gguf", tied ? 11 : 12);
        CHECK(m->hp.rope_type == ops::rope_style::NEOX);
        CHECK(!m->layers[0].q_norm.empty());
        CHECK(m->layers[0].bq.empty());
        CHECK((m->output.data == m->tok_embd.data) == tied);
        // Without the q/k norms the reference is far off.
        const weights w = make_weights(s, tied ? 11 : 12);
        spec qwen2 = s;
        qwen2.arch = "qwen2";
        CHECK(max_diff(run_prefill(*m, k_tokens, 4), ref_forward(qwen2, w, k_tokens)) > WRONG);
    }
}

TEST_CASE("phi3: fused QKV and gate/up, partial rotary dims, long/short rope factors, attn_factor") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "phi3";
    s.head_dim = 8;
    s.n_rot = 6;  // partial rotary, as Phi-4-mini
    s.rope_long_short = true;
    s.ctx_len = 256;
    s.ctx_orig = 32;  // the test's 64 positions are past it: long factors
    s.attn_factor = 1.2f;
    auto m = check_family(s, dir + "/phi3.gguf", 21);
    CHECK(!m->rope_long.empty());
    CHECK(m->rope(64, 0).factors == m->rope_long.data);
    CHECK(m->rope(32, 0).factors == m->rope_short.data);
    CHECK(m->hp.rope_attn_factor == 1.2f);
    const weights w = make_weights(s, 21);
    const auto got = run_prefill(*m, k_tokens, 5);
    CHECK(max_diff(got, ref_forward(s, w, k_tokens, 16)) > WRONG);  // the short factors
    spec noaf = s;
    noaf.attn_factor = 0.0f;
    CHECK(max_diff(got, ref_forward(noaf, w, k_tokens)) > WRONG);

    // Pages computed with the long factors are never taken by a context on
    // the short ones (a shared page folder), and the other way round.
    {
        const std::string kvdir = dir + "/kv";
        std::vector<int32_t> toks;
        for (int i = 0; i < 24; ++i) toks.push_back(int32_t(3 + i % 40));
        auto prompt = [&](int32_t n_ctx) {
            context_params cp = f32_params(8);
            cp.n_ctx = n_ctx;
            cp.kv.dir = kvdir;
            context ctx(*m, cp);
            ctx.eval_prompt(toks.data(), int32_t(toks.size()));
            return ctx.n_reused();
        };
        CHECK(prompt(64) == 0);   // long factors: stores its pages
        CHECK(prompt(32) == 0);   // short: none of them
        CHECK(prompt(32) == 20);  // short again: its own
        CHECK(prompt(64) == 20);  // long again: its own
    }

    // rope.scaling.type "longrope" (the factors are the tensors) loads as the same model.
    {
        rewrite_gguf(dir + "/phi3.gguf", dir + "/phi3-longrope.gguf", set_key("phi3.rope.scaling.type", "longrope"));
        auto ml = model::load({dir + "/phi3-longrope.gguf", ""});
        CHECK(max_diff(run_prefill(*ml, k_tokens, 5), ref_forward(s, w, k_tokens)) < TOL);
    }

    // separate q/k/v, short factors (the context within the original one)
    spec sep = s;
    sep.fused = false;
    sep.ctx_orig = 128;
    sep.attn_factor = 0.0f;
    check_family(sep, dir + "/phi3-sep.gguf", 22);
}

TEST_CASE("gemma2: scaled embeddings, post norms, GELU, soft-caps, sliding windows every other layer") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "gemma2";
    s.n_layer = 4;
    s.head_dim = 16;
    s.n_rot = 16;
    s.tied = true;
    s.rms_eps = 1e-6f;
    s.window = 5;  // k_tokens has 11 positions and pages are 4 tokens
    s.attn_cap = 3.0f;
    s.final_cap = 4.0f;
    auto m = check_family(s, dir + "/gemma2.gguf", 31);
    CHECK(m->hp.is_swa(0));
    CHECK(!m->hp.is_swa(1));
    CHECK(m->hp.n_swa == 5);
    CHECK(m->hp.attn_softcap == 3.0f);
    const weights w = make_weights(s, 31);
    const auto got = run_prefill(*m, k_tokens, 3);
    for (auto change : {0, 1, 2}) {
        spec o = s;
        if (change == 0) o.window = 0;
        if (change == 1) o.attn_cap = 1000.0f;
        if (change == 2) o.final_cap = 1000.0f;
        CHECK(max_diff(got, ref_forward(o, w, k_tokens)) > WRONG);
    }
    // gemma2's defaults when the file has no caps: 50 and 30
    spec d = s;
    d.attn_cap = d.final_cap = 0.0f;
    auto md = check_model(d, dir + "/gemma2-defaults.gguf", 32);
    CHECK(md->hp.attn_softcap == 50.0f);
    CHECK(md->hp.final_softcap == 30.0f);
}

TEST_CASE("gemma3: q/k norms, five sliding layers of six with rope base 10000, global rope base") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "gemma3";
    s.n_layer = 7;  // layers 0-4 and 6 slide, 5 is global
    s.head_dim = 16;
    s.n_rot = 16;
    s.tied = true;
    s.rms_eps = 1e-6f;
    s.rope_base = 1000000.0f;
    s.window = 4;
    auto m = check_family(s, dir + "/gemma3.gguf", 41);
    CHECK(!m->hp.is_swa(5));
    CHECK(m->hp.is_swa(6));
    CHECK(m->hp.attn_softcap == 0.0f);
    CHECK(m->hp.final_softcap == 0.0f);
    CHECK(m->rope(64, 0).freq_base == 10000.0f);
    CHECK(m->rope(64, 5).freq_base == 1000000.0f);
    const weights w = make_weights(s, 41);
    const auto got = run_prefill(*m, k_tokens, 4);
    spec one_base = s;
    one_base.arch = "gemma2";  // no local base (and gemma2's caps, far off too)
    CHECK(max_diff(got, ref_forward(one_base, w, k_tokens)) > WRONG);
    spec wide = s;
    wide.window = 0;
    CHECK(max_diff(got, ref_forward(wide, w, k_tokens)) > WRONG);
}

TEST_CASE("sliding windows: a window layer never reads the sealed pages before its window") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "gemma2";
    s.n_layer = 2;  // layer 0 slides, layer 1 is global
    s.head_dim = 8;
    s.window = 6;
    const weights w = make_weights(s, 51);
    write_model(dir + "/win.gguf", s, w);
    auto m = model::load({dir + "/win.gguf", ""});
    std::vector<int32_t> toks;
    for (int i = 0; i < 40; ++i) toks.push_back(int32_t((i * 7 + 3) % s.n_vocab));
    const int P = 4;
    for (int32_t ub : {1, 7}) {
        context ctx(*m, f32_params(ub));
        std::vector<std::vector<float>> got;
        for (size_t i = 0; i < toks.size(); i += size_t(ub)) {
            const int32_t n = int32_t(std::min(toks.size() - i, size_t(ub)));
            ctx.eval(toks.data() + i, n, [&](int32_t, const float * l) { got.emplace_back(l, l + s.n_vocab); });
        }
        CHECK(max_diff(got, ref_forward(s, w, toks)) < TOL);
        // Sealed pages read, per KV head: position p of a global layer reads
        // pages [0, p / P), of a window layer only those from (p - W + 1) / P.
        uint64_t want = 0;
        for (int p = 0; p < int(toks.size()); ++p)
            for (int il = 0; il < s.n_layer; ++il) {
                const int lo = s.is_swa(il) ? std::max(0, p - s.window + 1) / P : 0;
                want += uint64_t(std::max(0, p / P - lo) * s.n_head_kv);
            }
        CHECK(ctx.kv().page_reads() == want);
        uint64_t all = 0;
        for (int p = 0; p < int(toks.size()); ++p) all += uint64_t(p / P * s.n_head_kv * s.n_layer);
        CHECK(want < all * 3 / 4);  // a real saving: the window layer reads about 2 pages instead of up to 9
    }
    // Prefix reuse: a second prompt over the same tokens takes the stored
    // pages and gives the same logits.
    {
        context ctx(*m, f32_params(8));
        std::vector<float> first;
        {
            const float * l = ctx.eval_prompt(toks.data(), int32_t(toks.size()));
            first.assign(l, l + s.n_vocab);
        }
        ctx.reset();
        const float * l = ctx.eval_prompt(toks.data(), int32_t(toks.size()));
        CHECK(ctx.n_reused() >= 32);
        for (int v = 0; v < s.n_vocab; ++v) CHECK(l[v] == first[size_t(v)]);
    }
    // Quantized pages: window layers (gemma3's, through the page kernel and
    // the boundary page's loop) stay close to the f32 reference.
    {
        spec g3 = s;
        g3.arch = "gemma3";
        g3.n_layer = 6;
        const weights w3 = make_weights(g3, 52);
        write_model(dir + "/win3.gguf", g3, w3);
        auto m3 = model::load({dir + "/win3.gguf", ""});
        context_params cp = f32_params(16);
        cp.kv.kv_type = type::Q8_0;
        cp.kv.page_tokens = 32;
        std::vector<int32_t> t3;
        for (int i = 0; i < 60; ++i) t3.push_back(int32_t((i * 11 + 5) % s.n_vocab));
        context ctx(*m3, cp);
        std::vector<std::vector<float>> got;
        ctx.eval(t3.data(), int32_t(t3.size()), [&](int32_t, const float * l) { got.emplace_back(l, l + s.n_vocab); });
        const double d = max_diff(got, ref_forward(g3, w3, t3));
        INFO("q8_0 diff " << d);
        CHECK(d < 0.05);
    }
    // A sliding context cannot be combined with windows.
    context_params cp = f32_params(4);
    cp.slide.on = true;
    CHECK_THROWS_WITH_AS(context(*m, cp), doctest::Contains("sliding-window"), error);
}

TEST_CASE("unsupported variants are refused by name: mixture-of-experts, vision towers") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "phi3";
    const weights w = make_weights(s, 61);
    write_model(dir + "/phi3.gguf", s, w);
    auto with_extra = [&](const std::string & out, const std::string & name, int64_t n) {
        rewrite_gguf(dir + "/phi3.gguf", dir + "/" + out, add_1d(name, type::F32, n));
        return load_error(dir + "/" + out);
    };
    std::string e = with_extra("moe.gguf", "blk.0.ffn_gate_inp.weight", s.n_embd);
    CHECK_MESSAGE(e.find("moe.gguf") != std::string::npos, e);
    CHECK_MESSAGE(e.find("mixture-of-experts") != std::string::npos, e);
    e = with_extra("vision.gguf", "v.blk.0.attn_q.weight", 8);
    CHECK_MESSAGE(e.find("vision tower") != std::string::npos, e);
    spec moe = s;
    moe.arch = "qwen3moe";
    write_model(dir + "/qwen3moe.gguf", moe, make_weights(moe, 61));
    e = load_error(dir + "/qwen3moe.gguf");
    CHECK_MESSAGE(e.find("mixture-of-experts architecture 'qwen3moe' is not supported") != std::string::npos, e);
}

// With GLOAS_ARCH_DUMP=DIR set: writes DIR/<family>.gguf (F32 weights, a
// small random model of each family) and DIR/<family>.gloas.txt, the logits
// of 64 prompt positions and a greedy continuation of 64 tokens, in a
// context of 512 positions (the format: "vocab V positions N", one line of
// logits per position, then "greedy" and the token ids), and
// DIR/<family>.ref.txt, the plain-loop reference's logits in the same format
// (no greedy ids). BENCHMARKS.md compares both with llama.cpp's on the same
// files.
TEST_CASE("families: logits for the comparison with llama.cpp (GLOAS_ARCH_DUMP)") {
    const char * dir = std::getenv("GLOAS_ARCH_DUMP");
    if (!dir || !*dir) return;
    const spec base = variant({}, [](spec & s) {
        s.n_vocab = 256, s.n_embd = 64, s.n_ff = 128;
        s.n_head = 4, s.n_head_kv = 2;
        s.rms_eps = 1e-6f;
    });
    const spec g2 = variant(base, [](spec & s) {
        s.arch = "gemma2", s.n_layer = 4, s.head_dim = s.n_rot = 32, s.tied = true;
        s.window = 16, s.attn_cap = 5.0f, s.final_cap = 8.0f;
    });
    const std::vector<spec> specs = {
        variant(base, [](spec & s) { s.arch = "qwen3", s.head_dim = s.n_rot = 32, s.rope_base = 1000000.0f; }),
        // phi3: a context of 512 takes the long factors
        variant(base, [](spec & s) {
            s.arch = "phi3", s.head_dim = 16, s.n_rot = 12, s.tied = false;
            s.rope_long_short = true, s.ctx_len = 1024, s.ctx_orig = 256, s.attn_factor = 1.1f;
        }),
        g2,
        variant(g2, [](spec & s) {
            s.arch = "gemma3", s.n_layer = 7, s.rope_base = 1000000.0f;
            s.attn_cap = s.final_cap = 0.0f;
        }),
    };
    std::vector<int32_t> prompt;
    for (int i = 0; i < 64; ++i) prompt.push_back(int32_t(3 + (i * 37 + 11) % 253));
    for (const spec & s : specs) {
        const std::string path = std::string(dir) + "/" + s.arch + ".gguf";
        const weights w = make_weights(s, 7);
        write_model(path, s, w);
        auto m = model::load({path, ""});
        context_params cp = f32_params(64);
        cp.n_ctx = 512;
        cp.kv.page_tokens = 32;
        context ctx(*m, cp);
        std::FILE * f = std::fopen((std::string(dir) + "/" + s.arch + ".gloas.txt").c_str(), "w");
        REQUIRE(f);
        std::fprintf(f, "vocab %d positions %d\n", s.n_vocab, int(prompt.size()));
        auto argmax = [&](const float * l) { return int32_t(std::max_element(l, l + s.n_vocab) - l); };
        int32_t next = 0;
        ctx.eval(prompt.data(), int32_t(prompt.size()), [&](int32_t, const float * l) {
            for (int v = 0; v < s.n_vocab; ++v) std::fprintf(f, v ? " %.7g" : "%.7g", double(l[v]));
            std::fprintf(f, "\n");
            next = argmax(l);
        });
        std::fprintf(f, "greedy");
        for (int g = 0; g < 64; ++g) {
            std::fprintf(f, " %d", next);
            next = argmax(ctx.eval(&next, 1));
        }
        std::fprintf(f, "\n");
        std::fclose(f);
        // The plain-loop reference (double), the definition both are compared with.
        std::FILE * rf = std::fopen((std::string(dir) + "/" + s.arch + ".ref.txt").c_str(), "w");
        REQUIRE(rf);
        std::fprintf(rf, "vocab %d positions %d\n", s.n_vocab, int(prompt.size()));
        for (const std::vector<double> & l : ref_forward(s, w, prompt, 512)) {
            for (int v = 0; v < s.n_vocab; ++v) std::fprintf(rf, v ? " %.9g" : "%.9g", l[size_t(v)]);
            std::fprintf(rf, "\n");
        }
        std::fprintf(rf, "greedy\n");
        std::fclose(rf);
    }
}

// A Hugging Face folder of model `s` with weights `w` (GGUF names mapped back
// to Hugging Face's, Gemma's norms stored as w - 1), F32 safetensors, and a
// tokenizer.json of the same pieces.
void write_hf_family(const std::string & dir, const spec & s, const weights & w) {
    struct st {
        std::string name;
        std::vector<int64_t> shape;
        const std::vector<float> * v;
        float sub;
    };
    std::vector<st> ts;
    std::vector<std::vector<float>> keep;  // shifted copies
    auto put = [&](const std::string & hf, const std::string & gg, std::vector<int64_t> shape, float sub = 0.0f) {
        auto it = w.find(gg);
        REQUIRE_MESSAGE(it != w.end(), gg);
        ts.push_back({hf, shape, &it->second, sub});
    };
    const bool gemma = s.gemma(), phi3 = s.arch == "phi3";
    const float g1 = gemma ? 1.0f : 0.0f;
    const int64_t E = s.n_embd, Q = s.n_head * s.head_dim, KV = s.n_head_kv * s.head_dim, F = s.n_ff;
    put("model.embed_tokens.weight", "token_embd.weight", {s.n_vocab, E});
    if (!s.tied) put("lm_head.weight", "output.weight", {s.n_vocab, E});
    put("model.norm.weight", "output_norm.weight", {E}, g1);
    for (int il = 0; il < s.n_layer; ++il) {
        const std::string h = "model.layers." + std::to_string(il) + ".", g = "blk." + std::to_string(il) + ".";
        put(h + "input_layernorm.weight", g + "attn_norm.weight", {E}, g1);
        if (phi3) {
            put(h + "self_attn.qkv_proj.weight", g + "attn_qkv.weight", {Q + 2 * KV, E});
            put(h + "mlp.gate_up_proj.weight", g + "ffn_up.weight", {2 * F, E});
        } else {
            put(h + "self_attn.q_proj.weight", g + "attn_q.weight", {Q, E});
            put(h + "self_attn.k_proj.weight", g + "attn_k.weight", {KV, E});
            put(h + "self_attn.v_proj.weight", g + "attn_v.weight", {KV, E});
            put(h + "mlp.gate_proj.weight", g + "ffn_gate.weight", {F, E});
            put(h + "mlp.up_proj.weight", g + "ffn_up.weight", {F, E});
        }
        if (s.qkv_bias) {
            put(h + "self_attn.q_proj.bias", g + "attn_q.bias", {Q});
            put(h + "self_attn.k_proj.bias", g + "attn_k.bias", {KV});
            put(h + "self_attn.v_proj.bias", g + "attn_v.bias", {KV});
        }
        if (s.qk_norm()) {
            put(h + "self_attn.q_norm.weight", g + "attn_q_norm.weight", {s.head_dim}, g1);
            put(h + "self_attn.k_norm.weight", g + "attn_k_norm.weight", {s.head_dim}, g1);
        }
        put(h + "self_attn.o_proj.weight", g + "attn_output.weight", {E, Q});
        if (gemma) {
            put(h + "post_attention_layernorm.weight", g + "post_attention_norm.weight", {E}, 1.0f);
            put(h + "pre_feedforward_layernorm.weight", g + "ffn_norm.weight", {E}, 1.0f);
            put(h + "post_feedforward_layernorm.weight", g + "post_ffw_norm.weight", {E}, 1.0f);
        } else {
            put(h + "post_attention_layernorm.weight", g + "ffn_norm.weight", {E});
        }
        put(h + "mlp.down_proj.weight", g + "ffn_down.weight", {E, F});
    }
    // safetensors: a JSON header padded to 8 bytes, then the data
    std::string head = "{", data;
    for (const st & t : ts) {
        std::vector<float> v = *t.v;
        for (float & x : v) x -= t.sub;
        head += std::string(head.size() > 1 ? "," : "") + "\"" + t.name + "\":{\"dtype\":\"F32\",\"shape\":[";
        for (size_t i = 0; i < t.shape.size(); ++i) head += (i ? "," : "") + std::to_string(t.shape[i]);
        head += "],\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + v.size() * 4) + "]}";
        data.append(reinterpret_cast<const char *>(v.data()), v.size() * 4);
    }
    head += "}";
    while (head.size() % 8) head += ' ';
    const uint64_t hn = head.size();
    test::write_file(dir + "/model.safetensors", std::string(reinterpret_cast<const char *>(&hn), 8) + head + data);

    const char * mt = s.arch == "gemma3" ? "gemma3_text" : s.arch.c_str();
    std::string cfg = format(R"({"model_type": "%s", "hidden_act": "%s", "hidden_size": %d, "intermediate_size": %d,
  "num_hidden_layers": %d, "num_attention_heads": %d, "num_key_value_heads": %d, "head_dim": %d,
  "rms_norm_eps": %g, "rope_theta": %g, "max_position_embeddings": %d, "vocab_size": %d, "tie_word_embeddings": %s,
  "bos_token_id": 1, "eos_token_id": 2)",
                             mt, gemma ? "gelu_pytorch_tanh" : "silu", s.n_embd, s.n_ff, s.n_layer, s.n_head, s.n_head_kv,
                             s.head_dim, double(s.rms_eps), double(s.rope_base), s.ctx_len, s.n_vocab,
                             s.tied ? "true" : "false");
    if (gemma) cfg += format(R"(, "sliding_window": %d)", s.window);
    if (s.arch == "gemma2") cfg += format(R"(, "attn_logit_softcapping": %g, "final_logit_softcapping": %g)",
                                          double(s.attn_cap), double(s.final_cap));
    if (phi3) {
        cfg += format(R"(, "partial_rotary_factor": %g)", double(s.n_rot) / double(s.head_dim));
        if (s.rope_long_short) {
            auto list = [&](const char * n) {
                std::string l = "[";
                for (float f : w.at(n)) l += (l.size() > 1 ? ", " : "") + format("%.9g", double(f));
                return l + "]";
            };
            cfg += format(R"(, "original_max_position_embeddings": %d, "rope_scaling": {"type": "longrope", "long_factor": %s, "short_factor": %s})",
                          s.ctx_orig, list("rope_factors_long.weight").c_str(), list("rope_factors_short.weight").c_str());
        }
    }
    test::write_file(dir + "/config.json", cfg + "}\n");

    // tokenizer.json: a SentencePiece-style BPE of the test's pieces
    const vocab v = make_vocab(s.n_vocab);
    std::string tj = R"({"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "merges": [], "vocab": {)";
    for (size_t i = 0; i < v.pieces.size(); ++i) tj += (i ? ", \"" : "\"") + v.pieces[i] + "\": " + std::to_string(i);
    tj += R"(}}, "added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}]})";
    test::write_file(dir + "/tokenizer.json", tj);
}

TEST_CASE("gloas-convert: Hugging Face folders of qwen2, qwen3, phi3, gemma2 and gemma3 give the reference logits") {
    const std::string dir = test::temp_dir("arch-hf");
    std::vector<spec> specs;
    spec q2;
    q2.arch = "qwen2";
    q2.qkv_bias = true;
    specs.push_back(q2);
    spec q3;
    q3.arch = "qwen3";
    q3.head_dim = q3.n_rot = 16;
    specs.push_back(q3);
    spec p3;
    p3.arch = "phi3";
    p3.n_rot = 6;
    p3.rope_long_short = true;
    p3.ctx_orig = 32;  // max_position_embeddings 256 / 32: attn_factor sqrt(1 + ln 8 / ln 32)
    specs.push_back(p3);
    spec g2;
    g2.arch = "gemma2";
    g2.n_layer = 3;
    g2.tied = true;
    g2.window = 5;
    g2.attn_cap = 3.0f;
    g2.final_cap = 4.0f;
    specs.push_back(g2);
    spec g3 = g2;
    g3.arch = "gemma3";
    g3.n_layer = 7;
    g3.attn_cap = g3.final_cap = 0.0f;
    specs.push_back(g3);
    for (spec s : specs) {
        CAPTURE(s.arch);
        const weights w = make_weights(s, 71);
        const std::string hf = dir + "/" + s.arch;
        REQUIRE(::mkdir(hf.c_str(), 0755) == 0);
        write_hf_family(hf, s, w);
        const std::string out = dir + "/" + s.arch + ".gguf";
        auto r = test::run_tool("gloas-convert", {hf, "--outtype", "f32", "-q", "-o", out});
        REQUIRE_MESSAGE(r.status == 0, r.err);
        auto m = model::load({out, ""});
        CHECK(m->arch == s.arch);
        if (s.arch == "phi3") {
            s.attn_factor = float(std::sqrt(1.0 + std::log(8.0) / std::log(32.0)));
            CHECK(m->hp.rope_attn_factor == doctest::Approx(s.attn_factor));
            CHECK(m->hp.n_rot == 6);
        }
        CHECK(max_diff(run_prefill(*m, k_tokens, 4), ref_forward(s, w, k_tokens)) < TOL);
    }
    // Qwen's GPT-2-style byte-level tokenizer.json: a "gpt2" vocabulary with
    // its merges and the qwen2 pre-tokenizer.
    {
        spec s = q3;
        // the 256 byte characters of GPT-2's byte-to-unicode map, 3 merges, one special token
        std::vector<std::string> pieces;
        for (int b = 0, extra = 0; b < 256; ++b) {
            const bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            const int cp = direct ? b : 256 + extra++;
            std::string u;
            if (cp < 0x80) u += char(cp);
            else { u += char(0xC0 | (cp >> 6)); u += char(0x80 | (cp & 0x3F)); }
            pieces.push_back(u);
        }
        pieces.push_back("th");
        pieces.push_back("\xC4\xA0th");  // "Ġth"
        pieces.push_back("\xC4\xA0the");
        s.n_vocab = int(pieces.size()) + 1;
        const weights w = make_weights(s, 72);
        const std::string hf = dir + "/qwen3-bpe";
        REQUIRE(::mkdir(hf.c_str(), 0755) == 0);
        write_hf_family(hf, s, w);
        std::string tj = R"({"model": {"type": "BPE", "byte_fallback": false, "merges": ["t h", "\u0120 th", "\u0120th e"], "vocab": {)";
        for (size_t i = 0; i < pieces.size(); ++i) tj += (i ? ", \"" : "\"") + test::json_escape(pieces[i]) + "\": " + std::to_string(i);
        tj += format(R"(}}, "pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": [{"id": %zu, "content": "<|endoftext|>", "special": true}]})",
                     pieces.size());
        test::write_file(hf + "/tokenizer.json", tj);
        const std::string out = dir + "/qwen3-bpe.gguf";
        auto r = test::run_tool("gloas-convert", {hf, "--outtype", "f32", "-q", "-o", out});
        REQUIRE_MESSAGE(r.status == 0, r.err);
        auto m = model::load({out, ""});
        CHECK(m->tok.kind() == vocab_kind::BPE);
        const std::vector<int32_t> ids = m->tok.encode(" the them", false);
        // " the", " them" -> "Ġthe", then "Ġthe" "m" (the merges in rank order)
        CHECK(ids == std::vector<int32_t>{int32_t(pieces.size()) - 1, int32_t(pieces.size()) - 1, 'm'});
        CHECK(m->tok.decode(ids) == " the them");
        CHECK(max_diff(run_prefill(*m, k_tokens, 4), ref_forward(s, w, k_tokens)) < TOL);
    }
    // A multimodal Gemma 3 and a mixture-of-experts model are refused by name.
    const std::string mm = dir + "/mm";
    REQUIRE(::mkdir(mm.c_str(), 0755) == 0);
    test::write_file(mm + "/config.json", R"({"model_type": "gemma3", "vision_config": {}, "text_config": {}})");
    auto r = test::run_tool("gloas-convert", {mm, "-q", "-o", dir + "/mm.gguf"});
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("vision tower") != std::string::npos, r.err);
    test::write_file(mm + "/config.json", R"({"model_type": "qwen3_moe"})");
    r = test::run_tool("gloas-convert", {mm, "-q", "-o", dir + "/mm.gguf"});
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("mixture-of-experts") != std::string::npos, r.err);
}

TEST_CASE("random models (gloas-gen-model's writer) of every family load and run") {
    const std::string dir = test::temp_dir("arch-random");
    for (const char * arch : {"llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"}) {
        CAPTURE(arch);
        random_model_params p;
        llama_gguf_hparams & hp = p.hp;
        hp = test::small_model_hparams(arch, arch, 7);
        hp.head_dim = 32;  // != 64 / 4, as Qwen3 and Gemma
        if (hp.arch == "gemma2" || hp.arch == "gemma3") hp.sliding_window = 8;
        if (hp.arch == "gemma2") hp.attn_softcap = 50.0f;
        const std::string path = dir + "/" + arch + ".gguf";
        write_random_model(path, p);
        auto m = model::load({path, ""});
        CHECK(m->arch == arch);
        CHECK(m->hp.head_dim == 32);
        CHECK((m->output.data == m->tok_embd.data) == (hp.arch == "gemma2" || hp.arch == "gemma3"));
        context ctx(*m, f32_params(8));
        const float * l = ctx.eval(k_tokens.data(), int32_t(k_tokens.size()));
        for (int v = 0; v < m->hp.n_vocab; ++v) REQUIRE(std::isfinite(l[v]));
    }
}

TEST_CASE("refusals name the architecture, the tensor or the key") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    const weights w = make_weights(s, 4);

    spec other = s;
    other.arch = "gptneox";
    write_model(dir + "/neox.gguf", other, w);
    std::string e = load_error(dir + "/neox.gguf");
    CHECK_MESSAGE(e.find("neox.gguf") != std::string::npos, e);
    CHECK_MESSAGE(e.find("architecture 'gptneox' is not supported") != std::string::npos, e);
    CHECK_MESSAGE(e.find("llama, qwen2") != std::string::npos, e);

    write_model(dir + "/missing.gguf", s, w, "blk.1.ffn_up.weight");
    e = load_error(dir + "/missing.gguf");
    CHECK_MESSAGE(e.find("missing.gguf") != std::string::npos, e);
    CHECK_MESSAGE(e.find("missing tensor 'blk.1.ffn_up.weight'") != std::string::npos, e);

    write_model(dir + "/noembd.gguf", s, w, "token_embd.weight");
    e = load_error(dir + "/noembd.gguf");
    CHECK_MESSAGE(e.find("missing tensor 'token_embd.weight'") != std::string::npos, e);

    // Keys are read with the architecture's prefix: a qwen2 file with llama.*
    // keys misses qwen2.embedding_length.
    {
        gguf_writer g;
        g.set_str("general.architecture", "qwen2");
        g.set_u32("llama.embedding_length", 32);
        g.write(dir + "/prefix.gguf");
        e = load_error(dir + "/prefix.gguf");
        CHECK_MESSAGE(e.find("missing metadata key qwen2.embedding_length") != std::string::npos, e);
    }

    // A copy of a good file with one tensor added or one key changed: the
    // refusal names the file and what is wrong.
    write_model(dir + "/base.gguf", s, w);
    struct bad_edit {
        const char * file;
        gguf_edit edit;
        std::vector<const char *> says;
    };
    const bad_edit bad[] = {
        // rope_freqs.weight with n_rot entries instead of n_rot / 2
        {"freqs.gguf", add_1d("rope_freqs.weight", type::F32, s.n_rot, 1.0f),
         {"freqs.gguf", "rope_freqs.weight", "expected (4)"}},
        // a bias of the wrong length names the tensor
        {"bias.gguf", add_1d("blk.0.attn_k.bias", type::F32, 7), {"'blk.0.attn_k.bias' has shape (7)"}},
        // biases must be f32
        {"f16bias.gguf", add_1d("blk.0.attn_q.bias", type::F16, s.n_head * s.head_dim),
         {"blk.0.attn_q.bias must be f32 (is f16)"}},
        // a tensor of a variant the loader does not know is refused, not ignored
        {"extra.gguf", add_1d("blk.1.ffn_up.bias", type::F32, s.n_ff),
         {"extra.gguf", "tensor 'blk.1.ffn_up.bias' is not used by architecture 'llama'"}},
        // rope scaling types other than none and linear
        {"yarn.gguf", set_key("llama.rope.scaling.type", "yarn"), {"llama.rope.scaling.type 'yarn' is not supported"}},
    };
    for (const bad_edit & b : bad) {
        CAPTURE(b.file);
        rewrite_gguf(dir + "/base.gguf", dir + "/" + b.file, b.edit);
        e = load_error(dir + "/" + b.file);
        for (const char * say : b.says) CHECK_MESSAGE(e.find(say) != std::string::npos, e);
    }
    // and the file without them loads
    CHECK_NOTHROW(model::load({dir + "/base.gguf", ""}));
}

TEST_CASE("profile: per op type and per layer when enabled, nothing when disabled") {
    const std::string dir = test::temp_dir("arch");
    spec s;
    s.arch = "qwen2";
    s.qkv_bias = true;
    s.n_layer = 3;
    write_model(dir + "/p.gguf", s, make_weights(s, 5));
    auto m = model::load({dir + "/p.gguf", ""});

    profile::enable(false);
    profile::reset();
    run_prefill(*m, k_tokens, 4);
    {
        const profile::report r = profile::snapshot();
        CHECK(r.total_ns() == 0);
        CHECK(r.op_calls[int(profile::op::MATMUL)] == 0);
        CHECK(r.layer_ns.empty());
    }

    profile::enable(true);
    run_prefill(*m, k_tokens, 4);  // 3 chunks
    profile::enable(false);
    const profile::report r = profile::snapshot();
    using profile::op;
    CHECK(r.op_ns[int(op::MATMUL)] > 0);
    CHECK(r.op_calls[int(op::MATMUL)] == 3 * s.n_layer * 4);  // per chunk and layer: QKV, O, gate+up, down
    CHECK(r.op_calls[int(op::GET_ROWS)] == 3);
    CHECK(r.op_calls[int(op::OUTPUT)] == 3);                    // every chunk keeps logits here
    CHECK(r.op_calls[int(op::BIAS)] == 3 * s.n_layer);
    CHECK(r.op_calls[int(op::ROPE)] == 3 * s.n_layer);
    CHECK(r.op_calls[size_t(profile::add_op("attention"))] == 3 * s.n_layer);  // the decoder's own op type
    CHECK(r.op_calls[size_t(profile::add_op("kv_store"))] == 3 * s.n_layer);
    REQUIRE(r.layer_ns.size() == size_t(s.n_layer));
    for (size_t l = 0; l < r.layer_ns.size(); ++l) {
        CHECK(r.layer_ns[l] > 0);
        CHECK(r.layer_calls[l] > 0);
    }
    int64_t layers = 0;
    for (int64_t v : r.layer_ns) layers += v;
    CHECK(layers < r.total_ns());  // get_rows and output are outside the layers

    // Recording stops when disabled.
    run_prefill(*m, k_tokens, 4);
    CHECK(profile::snapshot().total_ns() == r.total_ns());

    const std::string out = dir + "/profile.txt";
    std::FILE * f = std::fopen(out.c_str(), "w");
    REQUIRE(f);
    profile::print(f);
    std::fclose(f);
    const std::string text = test::read_file(out);
    CHECK_MESSAGE(text.find("matmul") != std::string::npos, text);
    CHECK_MESSAGE(text.find("attention") != std::string::npos, text);
    CHECK_MESSAGE(text.find("layer") != std::string::npos, text);
    CHECK_MESSAGE(text.find("\n  2 ") != std::string::npos, text);  // the last layer's row
    profile::reset();
    CHECK(profile::snapshot().total_ns() == 0);
}
