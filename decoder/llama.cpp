#include "decoder/llama.h"

#include "tensor/error.h"
#include "tensor/ops.h"

#include <algorithm>
#include <cmath>

namespace gloas {

context::context(const model & m, const context_params & p) : m_(m) {
    const hparams & hp = m.hp;
    n_ctx_ = p.n_ctx > 0 ? p.n_ctx : hp.n_ctx_train;
    if (p.n_ctx < 0) throw error(format("context size %d must be positive", p.n_ctx));
    n_ubatch_ = std::max(1, std::min(p.n_ubatch > 0 ? p.n_ubatch : 512, n_ctx_));
    if (p.n_threads > 0) ops::set_n_threads(p.n_threads);

    kv_geometry g;
    g.n_layer = hp.n_layer;
    g.n_ctx = n_ctx_;
    g.n_head = hp.n_head;
    g.n_head_kv = hp.n_head_kv;
    g.head_dim = hp.head_dim;
    page_geometry pg;
    pg.page_tokens = p.kv.page_tokens;
    pg.n_layer = hp.n_layer;
    pg.n_head_kv = hp.n_head_kv;
    pg.head_dim = hp.head_dim;
    if (pg.page_tokens <= 0 || !pg.valid_for(p.kv.kv_type))
        throw error(format("page size %d tokens must be a positive multiple of %lld for K/V type %s", pg.page_tokens,
                           (long long) traits(p.kv.kv_type).blck_size, type_name(p.kv.kv_type)));
    store_ = std::make_unique<kv_store>(p.kv, pg, m.fingerprint);
    kv_ = std::make_unique<kv_sequence>(*store_, g, n_ubatch_);
    if (!(p.sparse.ratio > 0.0f && p.sparse.ratio <= 1.0f))
        throw error(format("sparse attention ratio %g must be in (0, 1]", double(p.sparse.ratio)));
    kv_->set_sparse(p.sparse);

    const size_t U = size_t(n_ubatch_);
    x_.resize(U * size_t(hp.n_embd));
    xb_.resize(U * size_t(hp.n_embd));
    q_.resize(U * size_t(hp.n_embd_q()));
    k_.resize(U * size_t(hp.n_embd_kv()));
    v_.resize(U * size_t(hp.n_embd_kv()));
    att_.resize(U * size_t(hp.n_embd_q()));
    hb_.resize(U * size_t(hp.n_ff));
    hb2_.resize(U * size_t(hp.n_ff));
    logits_.resize(size_t(hp.n_vocab));

    size_t work = ops::matmul_work_size(m.output.t, hp.n_embd, n_ubatch_);
    for (const auto & l : m.layers)
        for (const tensor * t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
            work = std::max(work, ops::matmul_work_size(t->t, t->ne[0], n_ubatch_));
    work_.resize(work);
}

void context::reset() {
    n_past_ = 0;
    n_reused_ = 0;
    kv_->clear();
}

const float * context::eval_prompt(const int32_t * tokens, int32_t n) {
    if (n <= 0) throw error("eval: no tokens");
    if (n_past_ != 0) throw error("eval_prompt: the context is not empty");
    if (n > n_ctx_) throw error(format("the prompt is %d tokens but the context holds %d", n, n_ctx_));
    for (int32_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m_.hp.n_vocab)
            throw error(format("token id %d is out of range (vocabulary has %d tokens)", tokens[i], m_.hp.n_vocab));
    n_reused_ = kv_->reuse_prefix(tokens, n);
    n_past_ = n_reused_;
    return eval(tokens + n_reused_, n - n_reused_);
}

const float * context::eval(const int32_t * tokens, int32_t n) { return eval(tokens, n, logits_fn()); }

const float * context::eval(const int32_t * tokens, int32_t n, const logits_fn & on_logits) {
    if (n <= 0) throw error("eval: no tokens");
    if (n_past_ + int64_t(n) > n_ctx_)
        throw error(format("context full: %d positions used, %d more requested, context size is %d",
                           n_past_, n, n_ctx_));
    for (int32_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m_.hp.n_vocab)
            throw error(format("token id %d is out of range (vocabulary has %d tokens)", tokens[i], m_.hp.n_vocab));
    for (int32_t done = 0; done < n;) {
        const int32_t chunk = std::min(n_ubatch_, n - done);
        forward(tokens + done, chunk, n_past_, on_logits ? &on_logits : nullptr);
        n_past_ += chunk;
        done += chunk;
    }
    return logits_.data();
}

void context::forward(const int32_t * tokens, int32_t n, int32_t pos0, const logits_fn * on_logits) {
    const hparams & hp = m_.hp;
    const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff;
    const float scale = 1.0f / std::sqrt(float(hp.head_dim));
    float * x = x_.data();
    float * xb = xb_.data();
    void * work = work_.data();

    for (int32_t t = 0; t < n; ++t) ops::get_row(m_.tok_embd, tokens[t], x + t * E);

    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const layer_weights & l = m_.layers[size_t(il)];
        const float * attn_norm = static_cast<const float *>(l.attn_norm.data);
        const float * ffn_norm = static_cast<const float *>(l.ffn_norm.data);

        // attention
        for (int32_t t = 0; t < n; ++t) ops::rmsnorm(xb + t * E, x + t * E, attn_norm, E, hp.rms_eps);
        ops::matmul(l.wq, xb, n, q_.data(), work);
        ops::matmul(l.wk, xb, n, k_.data(), work);
        ops::matmul(l.wv, xb, n, v_.data(), work);
        for (int32_t t = 0; t < n; ++t) {
            ops::rope(q_.data() + t * Q, hp.n_head, hp.head_dim, hp.n_rot, pos0 + t, hp.rope_freq_base);
            ops::rope(k_.data() + t * KV, hp.n_head_kv, hp.head_dim, hp.n_rot, pos0 + t, hp.rope_freq_base);
        }
        kv_->store(il, pos0, n, k_.data(), v_.data());
        kv_->attend(il, pos0, n, q_.data(), att_.data(), scale);
        ops::matmul(l.wo, att_.data(), n, xb, work);
        ops::add(x, xb, int64_t(n) * E);

        // feed-forward
        for (int32_t t = 0; t < n; ++t) ops::rmsnorm(xb + t * E, x + t * E, ffn_norm, E, hp.rms_eps);
        ops::matmul(l.ffn_gate, xb, n, hb_.data(), work);
        ops::matmul(l.ffn_up, xb, n, hb2_.data(), work);
        ops::silu_mul(hb_.data(), hb_.data(), hb2_.data(), int64_t(n) * F);
        ops::matmul(l.ffn_down, hb_.data(), n, xb, work);
        ops::add(x, xb, int64_t(n) * E);
    }

    kv_->commit(tokens, pos0, n);

    const float * out_norm = static_cast<const float *>(m_.output_norm.data);
    const int64_t V = hp.n_vocab;
    if (on_logits) {
        if (logits_.size() < size_t(n_ubatch_) * size_t(V)) logits_.resize(size_t(n_ubatch_) * size_t(V));
        for (int32_t t = 0; t < n; ++t) ops::rmsnorm(xb + t * E, x + t * E, out_norm, E, hp.rms_eps);
        ops::matmul(m_.output, xb, n, logits_.data(), work);
        for (int32_t t = 0; t < n; ++t) (*on_logits)(pos0 + t, logits_.data() + t * V);
        if (n > 1) std::copy(logits_.begin() + (n - 1) * V, logits_.begin() + n * V, logits_.begin());
        return;
    }
    // Only the last token's logits are needed to continue the sequence.
    ops::rmsnorm(xb, x + int64_t(n - 1) * E, out_norm, E, hp.rms_eps);
    ops::matmul(m_.output, xb, 1, logits_.data(), work);
}

} // namespace gloas
