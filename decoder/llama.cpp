#include "decoder/llama.h"

#include "tensor/cpu-backend.h"
#include "base/error.h"
#include "tensor/cuda/cuda-backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gloas {

namespace {
// The decoder's op types in the profile (tensor/profile.h): a kv_cache's store
// and attend, which are not backend ops.
profile::op op_kv_store() {
    static const profile::op o = profile::add_op("kv_store");
    return o;
}
profile::op op_attention() {
    static const profile::op o = profile::add_op("attention");
    return o;
}
} // namespace

context::context(const model & m, const context_params & p) : m_(m) {
    const hparams & hp = m.hp;
    n_ctx_ = p.n_ctx > 0 ? p.n_ctx : hp.n_ctx_train;
    if (p.n_ctx < 0) throw error(format("context size %d must be positive", p.n_ctx));
    n_ubatch_ = std::max(1, std::min(p.n_ubatch > 0 ? p.n_ubatch : 512, n_ctx_));

    const kv_geometry g(hp, hp.n_head, n_ctx_);
    const page_geometry pg(p.kv.page_tokens, hp);
    if (pg.page_tokens <= 0 || !pg.valid_for(p.kv.kv_type))
        throw error(format("page size %d tokens must be a positive multiple of %lld for K/V type %s", pg.page_tokens,
                           (long long) traits(p.kv.kv_type).blck_size, type_name(p.kv.kv_type)));
    if (p.n_seq_max < 1 || p.n_seq_max > 4096)
        throw error(format("context: %d sequences asked for, expected 1 to 4096", p.n_seq_max));
    if (!(p.sparse.ratio > 0.0f && p.sparse.ratio <= 1.0f))
        throw error(format("sparse attention ratio %g must be in (0, 1]", double(p.sparse.ratio)));
    kv_store_params kp = p.kv;  // the page file's label names the model
    if (kp.model_name.empty()) kp.model_name = m.name;
    if (kp.model_file.empty()) kp.model_file = m.path.substr(m.path.find_last_of('/') + 1);
    // Phi-3's long and short rope factors give different keys for the same
    // tokens: a context on the long ones keeps its pages apart.
    uint64_t fp = m.fingerprint;
    if (!m.rope_long.empty() && n_ctx_ > hp.n_ctx_orig) fp ^= 0x9E3779B97F4A7C15ull;
    store_ = std::make_unique<kv_store>(kp, pg, fp);
    seqs_.resize(size_t(p.n_seq_max));
    for (sequence & sq : seqs_) {
        auto kv = std::make_unique<kv_sequence>(*store_, g, n_ubatch_);
        kv->set_sparse(p.sparse);
        kv->set_slide(p.slide);
        store_->add_fixed_ram(kv->ram_bytes());  // counted against the store's RAM budget
        sq.kv = std::move(kv);
    }
    slides_ = p.slide.on;
    // Per-layer attention limits (Gemma's windows and soft-capped scores).
    bool limited = false;
    for (int32_t il = 0; il < hp.n_layer; ++il) {
        kv_cache::layer_attention la;
        la.window = hp.is_swa(il) ? hp.n_swa : 0;
        la.softcap = hp.attn_softcap;
        if (la.window <= 0 && la.softcap <= 0.0f) continue;
        limited = true;
        for (sequence & sq : seqs_) sq.kv->set_layer_attention(il, la);
    }
    if (limited && slides_)
        throw error(format("architecture '%s' has sliding-window or soft-capped attention layers, which cannot slide past "
                           "the context: leave the sliding context off",
                           m.arch.c_str()));

    // The backend: the GPU when layers were asked for it and it can hold them.
    if (p.n_gpu_layers != 0) {
        try {
            be_ = make_cuda_backend(n_ubatch_, p.gpu_device);
            place(p);
        } catch (const error & e) {
            unplace();
            be_.reset();
            if (p.gpu_required)
                throw error(format("GPU layers were asked for (-ngl %d), but the CUDA backend cannot run: %s",
                                   p.n_gpu_layers, e.what()));
            std::fprintf(stderr, "gloas: the CUDA backend cannot run (%s); running on the CPU\n", e.what());
        }
    }
    if (!be_) {
        be_ = std::make_unique<cpu_backend>(n_ubatch_, p.n_threads);
        place(p);
    }
}

void context::unplace() {
    w_ = weights();
    rope_.clear();
    for (buffer * b : {&ids_, &pos_, &x_, &xb_, &q_, &q_sink_, &k_, &v_, &att_, &hb_, &hb2_, &out_}) *b = buffer();
}

void context::place(const context_params & p) {
    const hparams & hp = m_.hp;
    const model & m = m_;
    backend & be = *be_;
    w_.tok_embd = be.weight(m.tok_embd);
    w_.output_norm = be.weight(m.output_norm);
    w_.output = be.weight(m.output);
    w_.rope_freqs = be.weight(m.rope_freqs);
    w_.rope_long = be.weight(m.rope_long);
    w_.rope_short = be.weight(m.rope_short);
    static_assert(sizeof(layer_weights) == 17 * sizeof(tensor), "every tensor of layer_weights is listed below");
    for (const layer_weights & l : m.layers) {
        layer_weights b;
        for (auto t : {&layer_weights::attn_norm, &layer_weights::wq, &layer_weights::wk, &layer_weights::wv,
                       &layer_weights::wo, &layer_weights::ffn_norm, &layer_weights::ffn_gate, &layer_weights::ffn_down,
                       &layer_weights::ffn_up, &layer_weights::bq, &layer_weights::bk, &layer_weights::bv,
                       &layer_weights::bo, &layer_weights::q_norm, &layer_weights::k_norm,
                       &layer_weights::attn_post_norm, &layer_weights::ffn_post_norm})
            b.*t = be.weight(l.*t);
        w_.layers.push_back(b);
    }
    // Each layer's rope, its factors the backend's copies of the model's.
    for (int32_t il = 0; il < hp.n_layer; ++il) {
        ops::rope_params r = m.rope(n_ctx_, il);
        const std::pair<const tensor *, const tensor *> fs[] = {
            {&m.rope_freqs, &w_.rope_freqs}, {&m.rope_long, &w_.rope_long}, {&m.rope_short, &w_.rope_short}};
        for (const auto & f : fs)
            if (r.factors && r.factors == f.first->data) r.factors = static_cast<const float *>(f.second->data);
        rope_.push_back(r);
    }

    const size_t U = size_t(n_ubatch_), F32 = sizeof(float);
    h_pos_.resize(2 * U);
    ids_ = be.alloc(U * sizeof(int32_t));
    pos_ = be.alloc(2 * U * sizeof(int32_t));
    x_ = be.alloc(U * size_t(hp.n_embd) * F32);
    xb_ = be.alloc(U * size_t(hp.n_embd) * F32);
    q_ = be.alloc(U * size_t(hp.n_embd_q()) * F32);
    if (p.slide.on) q_sink_ = be.alloc(U * size_t(hp.n_embd_q()) * F32);
    k_ = be.alloc(U * size_t(hp.n_embd_kv()) * F32);
    v_ = be.alloc(U * size_t(hp.n_embd_kv()) * F32);
    att_ = be.alloc(U * size_t(hp.n_embd_q()) * F32);
    hb_ = be.alloc(U * size_t(hp.n_ff) * F32);
    hb2_ = be.alloc(U * size_t(hp.n_ff) * F32);
    out_ = be.alloc(size_t(hp.n_vocab) * F32);
    logits_.resize(size_t(hp.n_vocab));
    if (!be.host_addressable()) {
        h_k_.assign(U * size_t(hp.n_embd_kv()), 0.0f);
        h_v_.assign(U * size_t(hp.n_embd_kv()), 0.0f);
        h_q_.assign(U * size_t(hp.n_embd_q()), 0.0f);
        h_att_.assign(U * size_t(hp.n_embd_q()), 0.0f);
        if (p.slide.on) h_qs_.assign(U * size_t(hp.n_embd_q()), 0.0f);
    }
}

context::~context() = default;

void context::reset() {
    n_reused_ = 0;
    for (size_t s = 0; s < seqs_.size(); ++s) seq_clear(int32_t(s));
}

void context::seq_clear(int32_t s) {
    GLOAS_ASSERT(s >= 0 && size_t(s) < seqs_.size());
    sequence & sq = seqs_[size_t(s)];
    sq.kv->clear();
    sq.n_past = 0;
    sq.tokens.clear();
}

void context::check_tokens(const int32_t * tokens, int32_t n) const {
    for (int32_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m_.hp.n_vocab)
            throw error(format("token id %d is out of range (vocabulary has %d tokens)", tokens[i], m_.hp.n_vocab));
}

const float * context::eval_prompt(const int32_t * tokens, int32_t n) {
    if (n <= 0) throw error("eval: no tokens");
    sequence & sq = seqs_[0];
    if (sq.n_past != 0) throw error("eval_prompt: the context is not empty");
    if (n > n_ctx_ && !slides())
        throw context_full_error(format("the prompt is %d tokens but the context holds %d", n, n_ctx_));
    check_tokens(tokens, n);
    store_->flush();  // pages published by earlier evaluations become findable
    n_reused_ = sq.kv->reuse_prompt(tokens, n, logits_.data(), int32_t(m_.hp.n_vocab));
    sq.n_past = n_reused_;
    sq.tokens.assign(tokens, tokens + n_reused_);
    if (n_reused_ == n) return logits_.data();  // the store had the last token's logits too
    return eval(tokens + n_reused_, n - n_reused_);
}

const float * context::eval(const int32_t * tokens, int32_t n) { return eval(tokens, n, logits_fn()); }

const float * context::eval(const int32_t * tokens, int32_t n, const logits_fn & on_logits) {
    if (n <= 0) throw error("eval: no tokens");
    sequence & sq = seqs_[0];
    if (sq.n_past + int64_t(n) > (slides() ? int64_t(INT32_MAX) : int64_t(n_ctx_)))
        throw context_full_error(format("context full: %d positions used, %d more requested, context size is %d",
                                        sq.n_past, n, n_ctx_));
    check_tokens(tokens, n);
    const int64_t V = m_.hp.n_vocab;
    if (on_logits && logits_.size() < size_t(n_ubatch_) * size_t(V)) logits_.resize(size_t(n_ubatch_) * size_t(V));
    for (int32_t done = 0; done < n;) {
        const int32_t chunk = std::min(n_ubatch_, n - done);
        run r;
        r.n = chunk;
        r.pos0 = sq.n_past;
        b_rows_.clear();
        if (on_logits)
            for (int32_t t = 0; t < chunk; ++t) b_rows_.push_back(t);
        else if (done + chunk == n)
            b_rows_.push_back(chunk - 1);
        forward(tokens + done, chunk, &r, 1, b_rows_.data(), int32_t(b_rows_.size()), logits_.data());
        if (on_logits) {
            for (int32_t t = 0; t < chunk; ++t) on_logits(r.pos0 + t, logits_.data() + t * V);
            if (chunk > 1) std::copy(logits_.begin() + (chunk - 1) * V, logits_.begin() + chunk * V, logits_.begin());
        }
        done += chunk;
    }
    return logits_.data();
}

void context::decode(const batch & b) {
    if (b.n_tokens <= 0) throw error("decode: the batch has no tokens");
    if (!b.token) throw error("decode: the batch has no token array");
    const int32_t n = b.n_tokens;
    const int32_t S = int32_t(seqs_.size());
    check_tokens(b.token, n);
    auto seq_of = [&](int32_t i) { return b.seq ? b.seq[i] : 0; };
    auto wanted = [&](int32_t i) { return b.logits ? b.logits[i] != 0 : i == n - 1; };

    // Validate everything before changing anything.
    b_next_.resize(size_t(S));
    b_first_.assign(size_t(S), -1);
    for (int32_t s = 0; s < S; ++s) b_next_[size_t(s)] = seqs_[size_t(s)].n_past;
    for (int32_t i = 0, prev = -1; i < n; ++i) {
        const int32_t s = seq_of(i);
        if (s < 0 || s >= S)
            throw error(format("decode: token %d has sequence id %d, outside [0, %d)", i, s, S));
        if (s != prev && b_first_[size_t(s)] >= 0)
            throw error(format("decode: the tokens of sequence %d are not contiguous in the batch", s));
        if (b_first_[size_t(s)] < 0) b_first_[size_t(s)] = i;
        const int32_t expect = b_next_[size_t(s)];
        if (b.pos && b.pos[i] != expect)
            throw error(format("decode: token %d of sequence %d is at position %d; the sequence continues at %d",
                               i, s, b.pos[i], expect));
        if (expect >= (slides() ? INT32_MAX : n_ctx_))
            throw context_full_error(format("context full: sequence %d would reach position %d, context size is %d",
                                            s, expect, n_ctx_));
        b_next_[size_t(s)] = expect + 1;
        prev = s;
    }

    // Empty sequences first take their stored prefix, then the rest is compacted.
    n_batch_reused_ = 0;
    bool flushed = false;
    b_tok_.clear();
    b_seq_.clear();
    b_pos_.clear();
    b_row_.clear();
    b_logit_row_.assign(size_t(n), -1);
    int32_t n_kept = 0;
    for (int32_t i = 0; i < n;) {
        const int32_t s = seq_of(i);
        int32_t j = i;
        while (j < n && seq_of(j) == s) ++j;
        sequence & sq = seqs_[size_t(s)];
        const int32_t base = sq.n_past;
        int32_t skip = 0;
        if (base == 0 && j - i > 1) {
            int32_t lim = j - i;
            for (int32_t k = i; k < j; ++k)
                if (wanted(k)) { lim = k - i + 1; break; }
            if (lim > 1) {
                if (!flushed) store_->flush();
                flushed = true;
                skip = sq.kv->reuse_prefix(b.token + i, lim);
                sq.n_past = skip;
                sq.tokens.assign(b.token + i, b.token + i + skip);
                n_batch_reused_ += skip;
            }
        }
        for (int32_t k = i + skip; k < j; ++k) {
            b_tok_.push_back(b.token[k]);
            b_seq_.push_back(s);
            b_pos_.push_back(base + (k - i));
            b_row_.push_back(k);
            if (wanted(k)) b_logit_row_[size_t(k)] = n_kept++;
        }
        i = j;
    }

    const int64_t V = m_.hp.n_vocab;
    if (batch_logits_.size() < size_t(n_kept) * size_t(V)) batch_logits_.resize(size_t(n_kept) * size_t(V));
    const int32_t N = int32_t(b_tok_.size());
    int32_t row_base = 0;
    for (int32_t done = 0; done < N;) {
        const int32_t chunk = std::min(n_ubatch_, N - done);
        b_runs_.clear();
        b_rows_.clear();
        for (int32_t t = 0; t < chunk; ++t) {
            const int32_t k = done + t;
            if (t == 0 || b_seq_[size_t(k)] != b_seq_[size_t(k - 1)]) {
                run r;
                r.seq = b_seq_[size_t(k)];
                r.start = t;
                r.pos0 = b_pos_[size_t(k)];
                b_runs_.push_back(r);
            }
            ++b_runs_.back().n;
            if (b_logit_row_[size_t(b_row_[size_t(k)])] >= 0) b_rows_.push_back(t);
        }
        forward(b_tok_.data() + done, chunk, b_runs_.data(), int32_t(b_runs_.size()), b_rows_.data(),
                int32_t(b_rows_.size()), batch_logits_.data() + size_t(row_base) * size_t(V));
        row_base += int32_t(b_rows_.size());
        done += chunk;
    }
}

const kv_sequence & context::seq_kv(int32_t s) const {
    GLOAS_ASSERT(s >= 0 && size_t(s) < seqs_.size());
    const auto * kv = dynamic_cast<const kv_sequence *>(seqs_[size_t(s)].kv.get());
    GLOAS_ASSERT(kv != nullptr);
    return *kv;
}

const float * context::batch_logits(int32_t i) const {
    if (i < 0 || size_t(i) >= b_logit_row_.size() || b_logit_row_[size_t(i)] < 0) return nullptr;
    return batch_logits_.data() + size_t(b_logit_row_[size_t(i)]) * size_t(m_.hp.n_vocab);
}

const float * context::seq_restore(int32_t s, const int32_t * tokens, int32_t n) {
    GLOAS_ASSERT(s >= 0 && size_t(s) < seqs_.size());
    if (n > n_ctx_ && !slides())
        throw context_full_error(format("the sequence is %d tokens but the context holds %d", n, n_ctx_));
    check_tokens(tokens, n);
    seq_clear(s);
    if (n <= 0) return nullptr;
    std::vector<int32_t> seq(size_t(n), s);
    batch b;
    b.n_tokens = n;
    b.token = tokens;
    b.seq = seq.data();
    decode(b);
    return batch_logits(n - 1);
}

int32_t context::seq_reuse_prefix(int32_t s, const int32_t * tokens, int32_t n) {
    GLOAS_ASSERT(s >= 0 && size_t(s) < seqs_.size());
    check_tokens(tokens, n);
    seq_clear(s);
    if (n <= 1) return 0;
    store_->flush();  // pages published by earlier evaluations become findable
    sequence & sq = seqs_[size_t(s)];
    const int32_t skip = sq.kv->reuse_prefix(tokens, n);
    sq.n_past = skip;
    sq.tokens.assign(tokens, tokens + skip);
    return skip;
}

const float * context::seq_fork(int32_t src, int32_t dst) {
    GLOAS_ASSERT(src >= 0 && size_t(src) < seqs_.size() && dst >= 0 && size_t(dst) < seqs_.size());
    if (src == dst) throw error(format("seq_fork: source and destination are both sequence %d", src));
    const std::vector<int32_t> toks = seqs_[size_t(src)].tokens;
    return seq_restore(dst, toks.data(), int32_t(toks.size()));
}

int32_t context::seq_n_shared_pages(int32_t s) const {
    GLOAS_ASSERT(s >= 0 && size_t(s) < seqs_.size());
    const kv_sequence & a = seq_kv(s);
    int32_t shared = 0;
    for (int32_t j = 0; j < a.n_pages(); ++j) {
        const int64_t slot = a.page(j).slot;
        bool found = false;
        for (size_t t = 0; t < seqs_.size() && !found; ++t) {
            if (int32_t(t) == s) continue;
            const kv_sequence & o = seq_kv(int32_t(t));
            for (int32_t k = 0; k < o.n_pages() && !found; ++k) found = o.page(k).slot == slot;
        }
        shared += found;
    }
    return shared;
}

void context::forward(const int32_t * tokens, int32_t n, const run * runs, int32_t n_runs, const int32_t * rows,
                      int32_t n_rows, float * out) {
    const hparams & hp = m_.hp;
    const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
    const float scale = hp.query_scale();
    backend & be = *be_;
    const bool staged = !be.host_addressable();
    float * x = x_.f32();
    float * xb = xb_.f32();
    float * q = q_.f32();
    float * k = k_.f32();
    float * v = v_.f32();
    float * att = att_.f32();
    float * hb = hb_.f32();
    float * hb2 = hb2_.f32();
    using profile::op;  // backend::group g(be, op) times its scope as one op when --profile is on

    // Each token's position; past a slide, the attention sinks are read by a
    // copy of q rotated at the logical position pos - shift (kv-sequence.h).
    int32_t * pos = h_pos_.data();
    int32_t * lpos = pos + n_ubatch_;
    bool slid = false;
    for (int32_t r = 0; r < n_runs; ++r) {
        const run & ru = runs[r];
        const kv_cache & kv = *seqs_[size_t(ru.seq)].kv;
        for (int32_t t = ru.start; t < ru.start + ru.n; ++t) {
            pos[t] = ru.pos0 + (t - ru.start);
            const int32_t shift = kv.slide_shift(pos[t]);
            lpos[t] = pos[t] - shift;
            slid = slid || shift > 0;
        }
    }
    int32_t * d_pos = pos_.i32();
    int32_t * d_lpos = d_pos + n_ubatch_;
    be.upload(ids_.data(), tokens, size_t(n) * sizeof(int32_t));
    be.upload(d_pos, pos, size_t(n) * sizeof(int32_t));
    if (slid) be.upload(d_lpos, lpos, size_t(n) * sizeof(int32_t));

    be.set_layer(-1);
    be.get_rows(w_.tok_embd, ids_.i32(), n, x);
    if (hp.embd_scale > 0.0f) be.scale(x, n, E, E, hp.embd_scale);

    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const layer_weights & l = w_.layers[size_t(il)];
        be.set_layer(il);

        // attention: the projections and rope take every token; the K/V
        // store and attention go to each token's sequence.
        be.rmsnorm(xb, x, static_cast<const float *>(l.attn_norm.data), n, E, hp.rms_eps);
        {
            // one parallel region for the three (one for each type in K-quant mixes)
            const tensor * w[3] = {&l.wq, &l.wk, &l.wv};
            float * y[3] = {q, k, v};
            be.matmul_n(w, y, 3, xb, n);
        }
        if (!l.bq.empty() || !l.bk.empty() || !l.bv.empty()) {
            backend::group g(be, op::BIAS);
            if (!l.bq.empty()) be.bias(q, static_cast<const float *>(l.bq.data), n, Q);
            if (!l.bk.empty()) be.bias(k, static_cast<const float *>(l.bk.data), n, KV);
            if (!l.bv.empty()) be.bias(v, static_cast<const float *>(l.bv.data), n, KV);
        }
        if (!l.q_norm.empty()) {  // per head
            be.rmsnorm(q, q, static_cast<const float *>(l.q_norm.data), int64_t(n) * hp.n_head, hp.head_dim, hp.rms_eps);
            be.rmsnorm(k, k, static_cast<const float *>(l.k_norm.data), int64_t(n) * hp.n_head_kv, hp.head_dim, hp.rms_eps);
        }
        {
            backend::group g(be, op::ROPE);
            const ops::rope_params & rp = rope_[size_t(il)];
            if (hp.rope_attn_factor != 1.0f) {  // rope's magnitude scaling: the rotated dims of q and k
                be.scale(q, int64_t(n) * hp.n_head, hp.head_dim, hp.n_rot, hp.rope_attn_factor);
                be.scale(k, int64_t(n) * hp.n_head_kv, hp.head_dim, hp.n_rot, hp.rope_attn_factor);
            }
            if (slid) be.rope(q_sink_.f32(), q, n, hp.n_head, hp.head_dim, hp.n_rot, d_lpos, rp);
            be.rope(q, q, n, hp.n_head, hp.head_dim, hp.n_rot, d_pos, rp);
            be.rope(k, k, n, hp.n_head_kv, hp.head_dim, hp.n_rot, d_pos, rp);
        }
        // The kv_caches read and write host memory: a GPU backend's K, V and
        // Q come over for them, and the attention output goes back.
        const float * kk = k, * vv = v, * qq = q, * qs = q_sink_.f32();
        float * aa = att;
        if (staged) {
            be.to_host(h_k_.data(), k, size_t(n) * size_t(KV) * sizeof(float));
            be.to_host(h_v_.data(), v, size_t(n) * size_t(KV) * sizeof(float));
            be.to_host(h_q_.data(), q, size_t(n) * size_t(Q) * sizeof(float));
            if (slid) be.to_host(h_qs_.data(), q_sink_.f32(), size_t(n) * size_t(Q) * sizeof(float));
            kk = h_k_.data();
            vv = h_v_.data();
            qq = h_q_.data();
            qs = h_qs_.data();
            aa = h_att_.data();
        }
        for (int32_t r = 0; r < n_runs; ++r) {
            const run & ru = runs[r];
            kv_cache & kv = *seqs_[size_t(ru.seq)].kv;
            const bool run_slid = kv.slide_shift(ru.pos0 + ru.n - 1) > 0;
            {
                backend::group g(be, op_kv_store());
                kv.store(il, ru.pos0, ru.n, kk + ru.start * KV, vv + ru.start * KV);
            }
            {
                backend::group g(be, op_attention());
                kv.attend(il, ru.pos0, ru.n, qq + ru.start * Q, run_slid ? qs + ru.start * Q : nullptr,
                          aa + ru.start * Q, scale);
            }
        }
        if (staged) be.upload(att, h_att_.data(), size_t(n) * size_t(Q) * sizeof(float));
        be.matmul(l.wo, att, n, xb);
        if (!l.bo.empty()) be.bias(xb, static_cast<const float *>(l.bo.data), n, E);
        if (!l.attn_post_norm.empty()) be.rmsnorm(xb, xb, static_cast<const float *>(l.attn_post_norm.data), n, E, hp.rms_eps);
        be.add(x, xb, int64_t(n) * E);

        // feed-forward
        be.rmsnorm(xb, x, static_cast<const float *>(l.ffn_norm.data), n, E, hp.rms_eps);
        {
            const tensor * w[2] = {&l.ffn_gate, &l.ffn_up};
            float * y[2] = {hb, hb2};
            be.matmul_n(w, y, 2, xb, n);
        }
        if (hp.gelu_ffn) be.gelu_mul(hb, hb, hb2, int64_t(n) * F);
        else be.silu_mul(hb, hb, hb2, int64_t(n) * F);
        be.matmul(l.ffn_down, hb, n, xb);
        if (!l.ffn_post_norm.empty()) be.rmsnorm(xb, xb, static_cast<const float *>(l.ffn_post_norm.data), n, E, hp.rms_eps);
        be.add(x, xb, int64_t(n) * E);
    }
    be.set_layer(-1);

    for (int32_t r = 0; r < n_runs; ++r) {
        const run & ru = runs[r];
        sequence & sq = seqs_[size_t(ru.seq)];
        sq.kv->commit(tokens + ru.start, ru.pos0, ru.n);
        sq.tokens.insert(sq.tokens.end(), tokens + ru.start, tokens + ru.start + ru.n);
        sq.n_past = ru.pos0 + ru.n;
    }

    // Only the rows asked for go through the output projection.
    if (n_rows == 0) return;
    const size_t out_bytes = size_t(n_rows) * size_t(V) * sizeof(float);
    if (out_.bytes() < out_bytes) out_ = be.alloc(out_bytes);
    backend::group g(be, op::OUTPUT);
    const float * out_norm = static_cast<const float *>(w_.output_norm.data);
    for (int32_t i = 0; i < n_rows; ++i) be.rmsnorm(xb + i * E, x + int64_t(rows[i]) * E, out_norm, 1, E, hp.rms_eps);
    be.matmul(w_.output, xb, n_rows, out_.f32());
    if (hp.final_softcap > 0.0f) be.softcap(out_.f32(), int64_t(n_rows) * V, hp.final_softcap);
    be.to_host(out, out_.f32(), out_bytes);
    // Each sequence may keep its last token's logits (with a stored tail: kv-cache.h).
    for (int32_t r = 0; r < n_runs; ++r) {
        const int32_t last = runs[r].start + runs[r].n - 1;
        for (int32_t i = 0; i < n_rows; ++i)
            if (rows[i] == last)
                seqs_[size_t(runs[r].seq)].kv->keep_logits(runs[r].pos0 + runs[r].n - 1, out + size_t(i) * size_t(V),
                                                            int32_t(V));
    }
}

} // namespace gloas
