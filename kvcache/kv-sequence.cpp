#include "kvcache/kv-sequence.h"

#include "quant/quant-mse.h"
#include "tensor/error.h"
#include "tensor/ops.h"

#include <algorithm>
#include <cmath>

namespace gloas {

kv_sequence::kv_sequence(kv_store & store, const kv_geometry & g, int32_t max_chunk)
    : kv_cache(g), st_(store), pg_(store.geometry()), t_(store.kv_type()), max_chunk_(max_chunk) {
    GLOAS_ASSERT(pg_.n_layer == g.n_layer && pg_.n_head_kv == g.n_head_kv && pg_.head_dim == g.head_dim);
    GLOAS_ASSERT(g.n_head % g.n_head_kv == 0 && max_chunk > 0);
    const int32_t P = pg_.page_tokens;
    n_staging_ = (max_chunk + P - 1) / P + 2;
    staging_.assign(size_t(n_staging_) * size_t(pg_.n_rows()) * size_t(P), 0.0f);
    staging_page_.assign(size_t(n_staging_), -1);
    alloc(size_t(g.n_ctx / P + 1));
    tokens_.reserve(size_t(g.n_ctx));
}

// Buffers for up to max_pages held pages.
void kv_sequence::alloc(size_t max_pages) {
    const size_t group = size_t(g_.n_head / g_.n_head_kv), hd = size_t(g_.head_dim);
    max_pages_ = max_pages;
    // per item: scaled q, m, l, acc, page scores, scaled sink q
    scratch_item_ = group * hd + 2 * group + group * hd + max_pages + group * hd;
    scratch_.assign(size_t(max_chunk_) * size_t(g_.n_head_kv) * scratch_item_, 0.0f);
    selected_.assign(size_t(max_chunk_) * size_t(g_.n_head_kv) * max_pages, 0);
    summaries_.assign(max_pages * size_t(g_.n_layer) * size_t(g_.n_head_kv) * 2 * hd, 0.0f);
    pages_.reserve(max_pages);
}

void kv_sequence::set_slide(const slide_params & sl) {
    GLOAS_ASSERT(pages_.empty() && tokens_.empty());
    const int32_t P = pg_.page_tokens;
    if (sl.on && (sl.sink_pages < 0 || int64_t(g_.n_ctx) < (int64_t(sl.sink_pages) + 2) * P))
        throw error(format("sliding window: a context of %d positions cannot hold %d sink page(s) and two pages of "
                           "%d tokens (raise the context to %lld)", g_.n_ctx, sl.sink_pages, P,
                           (long long) (int64_t(std::max(sl.sink_pages, 0)) + 2) * P));
    slide_ = sl;
    // Within a chunk the pages of the window it slides past are still held.
    if (sl.on) alloc(size_t(g_.n_ctx / P + 2 + (max_chunk_ + P - 1) / P + 1));
}

int32_t kv_sequence::drop_pages(int64_t p) const {
    const int64_t over = p + 1 - g_.n_ctx;
    if (!slide_.on || over <= 0) return 0;
    const int32_t P = pg_.page_tokens;
    return int32_t((over + P - 1) / P);
}

int32_t kv_sequence::slide_shift(int32_t pos) const { return drop_pages(pos) * pg_.page_tokens; }

int32_t kv_sequence::n_held() const {
    return int32_t(tokens_.size()) - n_dropped_ * pg_.page_tokens;
}

// Summary slot of held absolute page a: the sinks, then a ring over the window.
size_t kv_sequence::summary_slot(int64_t a) const {
    if (!slide_.on) return size_t(a);
    const int64_t S = slide_.sink_pages;
    return size_t(a < S ? a : S + (a - S) % (int64_t(max_pages_) - S));
}

kv_sequence::~kv_sequence() { clear(); }

float * kv_sequence::staging(int64_t page) {
    const size_t i = size_t(page % n_staging_);
    GLOAS_ASSERT(staging_page_[i] == page);
    return staging_.data() + i * size_t(pg_.n_rows()) * size_t(pg_.page_tokens);
}

void kv_sequence::quantize_layer(int64_t page, int32_t il) {
    const float * src = staging(page);
    uint8_t * dst = const_cast<uint8_t *>(pages_[held(page)].ref.data);
    const type_traits & tt = traits(t_);
    const int32_t P = pg_.page_tokens;
    const size_t rb = pg_.row_bytes(t_);
    const int64_t r0 = pg_.row_index(il, 0, 0), r1 = r0 + 2 * pg_.n_embd_kv();
    for (int64_t r = r0; r < r1; ++r) {
        if (t_ == type::Q4_0) quantize_row_q4_0_mse(src + r * P, reinterpret_cast<block_q4_0 *>(dst + size_t(r) * rb), P);
        else tt.from_float(src + r * P, dst + size_t(r) * rb, P);
    }
}

const float * kv_sequence::key_min(int32_t j, int32_t layer, int32_t kv_head) const {
    const size_t per_page = size_t(g_.n_layer) * size_t(g_.n_head_kv) * 2 * size_t(g_.head_dim);
    return summaries_.data() + summary_slot(j) * per_page + (size_t(layer) * size_t(g_.n_head_kv) + size_t(kv_head)) * 2 * size_t(g_.head_dim);
}

// Bounds of the keys as attention will read them: from the page in its type.
void kv_sequence::summarize(int64_t page, int32_t il) {
    const page_ref & r = pages_[held(page)].ref;
    for (int32_t h = 0; h < g_.n_head_kv; ++h) {
        float * mn = const_cast<float *>(key_min(int32_t(page), il, h));
        page_key_bounds(pg_, r.t, r.data, il, h, pg_.page_tokens, mn, mn + g_.head_dim);
    }
}

int32_t kv_sequence::select_pages(int32_t il, int32_t h, int64_t cur, int32_t drop, bool decode, const float * qs,
                                  const float * qk, int32_t group, float * score, int32_t * out) const {
    // Candidates v in [0, n): the sinks, then the window past the dropped pages.
    const int32_t S = drop > 0 ? slide_.sink_pages : 0;
    const auto page_of = [&](int32_t v) { return v < S ? v : v + drop; };
    const int32_t n = int32_t(cur) - drop;
    const int32_t k = int32_t(std::ceil(double(sparse_.ratio) * double(n)));
    const bool dense = !decode || sparse_.ratio >= 1.0f || il < sparse_.dense_layers ||
                       k + sparse_.sink_pages + sparse_.recent_pages >= n;
    if (dense) {
        for (int32_t v = 0; v < n; ++v) out[v] = page_of(v);
        return n;
    }
    const int32_t hd = g_.head_dim;
    const int32_t lo = std::min(n, sparse_.sink_pages), hi = std::max(lo, n - sparse_.recent_pages);
    // Upper bound of q·k over each middle page, the largest over the group's heads.
    for (int32_t v = lo; v < hi; ++v) {
        const float * mn = key_min(page_of(v), il, h);
        const float * mx = mn + hd;
        score[v] = page_score_bound(v < S ? qk : qs, group, hd, mn, mx);
    }
    int32_t m = 0;
    for (int32_t v = lo; v < hi; ++v) out[m++] = v;
    const int32_t take = std::min(k, m);
    std::nth_element(out, out + take, out + m, [&](int32_t a, int32_t b) {
        return score[a] != score[b] ? score[a] > score[b] : a < b;
    });
    std::sort(out, out + take);
    // sinks first, then the chosen middle pages, then the recent ones: increasing order
    int32_t c = take;
    std::move_backward(out, out + c, out + c + lo);
    for (int32_t v = 0; v < lo; ++v) out[v] = v;
    c += lo;
    for (int32_t v = hi; v < n; ++v) out[c++] = v;
    for (int32_t i = 0; i < c; ++i) out[i] = page_of(out[i]);
    return c;
}

void kv_sequence::store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) {
    GLOAS_ASSERT(il >= 0 && il < g_.n_layer && n_tok <= max_chunk_ && (slide_.on || pos0 + n_tok <= g_.n_ctx));
    GLOAS_ASSERT(pos0 == int32_t(tokens_.size()));
    const int32_t P = pg_.page_tokens, E = g_.n_embd_kv();
    for (int32_t t = 0; t < n_tok; ++t) {
        const int32_t p = pos0 + t;
        const int64_t pg = p / P;
        if (il == 0 && pg == int64_t(pages_.size()) + n_dropped_) {
            GLOAS_ASSERT(pages_.size() < max_pages_);
            seq_page sp;
            sp.ref = st_.begin_page();
            pages_.push_back(sp);
            staging_page_[size_t(pg % n_staging_)] = pg;
        }
        page_put_token(pg_, staging(pg), il, p % P, k + size_t(t) * size_t(E), v + size_t(t) * size_t(E));
        if (p % P == P - 1) {
            quantize_layer(pg, il);
            summarize(pg, il);
        }
    }
}

void kv_sequence::attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, float * out, float scale) {
    attend(il, pos0, n_tok, q, nullptr, out, scale);
}

void kv_sequence::attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, const float * q_sink, float * out,
                         float scale) {
    GLOAS_ASSERT(n_tok <= max_chunk_ && pos0 + n_tok <= (int32_t(pages_.size()) + n_dropped_) * pg_.page_tokens);
    GLOAS_ASSERT(drop_pages(pos0) >= n_dropped_);
    const int32_t P = pg_.page_tokens, hd = g_.head_dim, n_head = g_.n_head, hkv = g_.n_head_kv;
    const int32_t group = n_head / hkv;
    const int64_t n_items = int64_t(n_tok) * hkv;
    // Work per item grows with the position: interleave items over threads.
#pragma omp parallel for num_threads(ops::n_threads()) schedule(dynamic, 1) if (n_items > 1 && int64_t(pos0 + n_tok) * n_items * hd > 32768)
    for (int64_t it = 0; it < n_items; ++it) {
        const int32_t t = int32_t(it / hkv), h = int32_t(it % hkv);
        const int32_t p = pos0 + t;
        const int64_t cur = p / P;
        float * qs = scratch_.data() + size_t(it) * scratch_item_;
        attn_state s;
        s.m = qs + size_t(group) * size_t(hd);
        s.l = s.m + group;
        s.acc = s.l + group;
        float * score = s.acc + size_t(group) * size_t(hd);
        float * qk = score + max_pages_;
        int32_t * sel = selected_.data() + size_t(it) * max_pages_;
        const size_t q_off = (size_t(t) * size_t(n_head) + size_t(h) * size_t(group)) * size_t(hd);
        const float * qh = q + q_off;
        for (int32_t i = 0; i < group * hd; ++i) qs[i] = qh[i] * scale;
        // Past a slide, the sinks are read by the query at its logical position.
        const int32_t drop = drop_pages(p);
        const int32_t S = drop > 0 ? slide_.sink_pages : 0;
        if (S > 0) {
            GLOAS_ASSERT(q_sink != nullptr);
            for (int32_t i = 0; i < group * hd; ++i) qk[i] = q_sink[q_off + size_t(i)] * scale;
        }
        attn_state_init(s, group, hd);
        // Prefill stays dense; a decode query may read only a selection.
        const int32_t n_sel = select_pages(il, h, cur, drop, n_tok == 1, qs, qk, group, score, sel);
        for (int32_t i = 0; i < n_sel; ++i) {
            const page_ref & r = pages_[held(sel[i])].ref;
            st_.touch(r.slot);  // recency for the store's RAM budget
            if (i + 1 < n_sel) {
                const page_ref & nx = pages_[held(sel[i + 1])].ref;
                page_prefetch(pg_, nx.t, nx.data, il, h);
            }
            page_attend(pg_, r.t, r.data, il, h, P, sel[i] < S ? qk : qs, group, s);
        }
        page_reads_ += uint64_t(n_sel);
        const float * open = staging_.data() + size_t(cur % n_staging_) * size_t(pg_.n_rows()) * size_t(P);
        page_attend(pg_, type::F32, open, il, h, p % P + 1, qs, group, s);
        attn_state_finish(s, group, hd, out + q_off);
    }
}

void kv_sequence::commit(const int32_t * tokens, int32_t pos0, int32_t n_tok) {
    GLOAS_ASSERT(pos0 == int32_t(tokens_.size()));
    tokens_.insert(tokens_.end(), tokens, tokens + n_tok);
    const int32_t P = pg_.page_tokens;
    const size_t n_full = tokens_.size() / size_t(P);
    // Pages past n_ctx positions come from a slid window: never published.
    for (size_t j = hashes_.size(); j < n_full && (j + 1) * size_t(P) <= size_t(g_.n_ctx); ++j) {
        const uint64_t prev = j == 0 ? PREFIX_SEED : hashes_[j - 1];
        const uint64_t h = page_hash(prev, tokens_.data() + j * size_t(P), P);
        hashes_.push_back(h);
        seq_page & sp = pages_[held(int64_t(j))];
        st_.publish(sp.ref.slot, h, prev, P);
        sp.published = true;
    }
    // Drop the pages the last position no longer sees (the next chunk's
    // tokens see no more of them: d grows with the position).
    const int32_t S = slide_.sink_pages;
    for (const int32_t want = drop_pages(int64_t(tokens_.size()) - 1); n_dropped_ < want; ++n_dropped_) {
        GLOAS_ASSERT(size_t(S + n_dropped_) < n_full);
        seq_page & sp = pages_[size_t(S)];
        if (sp.published) st_.release(sp.ref.slot);
        else st_.abandon(sp.ref.slot);
        pages_.erase(pages_.begin() + S);
    }
    st_.trim();  // the pass is done: keep the store's resident pages within its RAM budget
}

int32_t kv_sequence::reuse_prefix(const int32_t * tokens, int32_t n_tok) {
    GLOAS_ASSERT(pages_.empty() && tokens_.empty() && n_dropped_ == 0);
    const int32_t P = pg_.page_tokens;
    // Only pages within the first n_ctx positions are in the index.
    const int32_t n_full = n_tok > 0 ? std::min((n_tok - 1) / P, g_.n_ctx / P) : 0;
    if (n_full == 0) return 0;
    std::vector<uint64_t> hashes(static_cast<size_t>(n_full));
    uint64_t prev = PREFIX_SEED;
    for (int32_t j = 0; j < n_full; ++j) prev = hashes[size_t(j)] = page_hash(prev, tokens + size_t(j) * size_t(P), P);
    std::vector<page_ref> refs(static_cast<size_t>(n_full));
    const size_t got = st_.acquire_chain(hashes.data(), hashes.size(), refs.data());
    for (size_t j = 0; j < got; ++j) {
        seq_page sp;
        sp.ref = refs[j];
        sp.published = true;
        pages_.push_back(sp);
        hashes_.push_back(hashes[j]);
        for (int32_t il = 0; il < g_.n_layer; ++il) summarize(int64_t(j), il);
    }
    const int32_t reused = int32_t(got) * P;
    tokens_.assign(tokens, tokens + reused);
    kv_metrics & m = st_.metrics();
    m.pages_hit += got;
    m.pages_missed += size_t(n_full) - got;
    m.tokens_reused += uint64_t(reused);
    return reused;
}

void kv_sequence::clear() {
    for (auto & p : pages_) {
        if (p.published) st_.release(p.ref.slot);
        else st_.abandon(p.ref.slot);
    }
    pages_.clear();
    tokens_.clear();
    hashes_.clear();
    n_dropped_ = 0;
    std::fill(staging_page_.begin(), staging_page_.end(), -1);
}

size_t kv_sequence::ram_bytes() const {
    return (staging_.size() + scratch_.size() + summaries_.size()) * sizeof(float) + selected_.size() * sizeof(int32_t);
}

} // namespace gloas
