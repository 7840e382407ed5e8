#include "kvcache/kv-sequence.h"

#include "kvcache/file-reader.h"
#include "quant/fp16.h"
#include "quant/quant-mse.h"
#include "base/error.h"
#include "tensor/ops.h"
#include "tensor/thread-pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

namespace gloas {

namespace {

// Pages whose first K and V lines (and address translations) are asked for
// ahead of the page being attended (page_prefetch_first), where a piece's K
// rows fill an OS page or more (F16 and F32 pages of head_dim 64 and up:
// their K and V rows are on separate OS pages): F16 decode at depth 4000
// measured 8% faster; for Q8_0 / Q4_0 pieces (one or two OS pages for K and
// V together) it cost 2-3%.
constexpr int32_t AHEAD = 8;
constexpr size_t AHEAD_MIN_BYTES = 4096;

} // namespace

kv_sequence::kv_sequence(kv_store & store, const kv_geometry & g, int32_t max_chunk)
    : kv_cache(g), st_(store), pg_(store.geometry()), t_(store.kv_type()), max_chunk_(max_chunk) {
    GLOAS_ASSERT(pg_.n_layer == g.n_layer && pg_.n_head_kv == g.n_head_kv && pg_.head_dim == g.head_dim);
    GLOAS_ASSERT(g.n_head % g.n_head_kv == 0 && max_chunk > 0);
    const int32_t P = pg_.page_tokens;
    pg1_ = pg_;
    pg1_.n_layer = 1;
    // A chunk of max_chunk tokens touches at most (max_chunk + P - 2) / P + 1
    // pages: its first and last are open pages, the others are inside.
    const int32_t n_inside = std::max(0, (max_chunk + P - 2) / P - 1);
    st_t_ = page_staging_type(t_);
    region_ = size_t(pg1_.n_rows()) * pg_.row_bytes(st_t_);
    open_.assign(size_t(g.n_layer + 1) * region_, 0);
    inside_.assign(size_t(n_inside) * region_, 0);
    alloc(size_t(g.n_ctx / P + 1));
    tokens_.reserve(size_t(g.n_ctx));
}

// Buffers for up to max_pages held pages.
void kv_sequence::alloc(size_t max_pages) {
    const size_t group = size_t(g_.n_head / g_.n_head_kv), hd = size_t(g_.head_dim);
    max_pages_ = max_pages;
    // per (query token, KV head) being attended: scaled q, m, l, acc, page scores, scaled sink q, slot scores
    scratch_item_ = group * hd + 2 * group + group * hd + max_pages + group * hd + max_pages;
    summary_tiles_ = (max_pages + SUMMARY_TILE - 1) / SUMMARY_TILE;
    pages_.reserve(max_pages);
    alloc_sparse();
}

void kv_sequence::alloc_sparse() {
    GLOAS_ASSERT(pages_.empty());
    const bool sparse = sparse_.ratio < 1.0f;
    const int32_t dense = std::min(std::max(sparse_.dense_layers, 0), g_.n_layer);
    // Summaries of the layers sparse decode scores.
    first_scored_ = sparse ? dense : g_.n_layer;
    summaries_.assign(size_t(g_.n_layer - first_scored_) * size_t(g_.n_head_kv) * summary_tiles_ * 2 *
                      size_t(g_.head_dim) * SUMMARY_TILE, 0);
    summaries_.shrink_to_fit();
    dense_n_ = sparse && st_.params().read_copy ? dense : 0;
    dense_region_ = size_t(pg1_.n_rows()) * pg_.row_bytes(t_);
    dense_.assign(max_pages_ * size_t(dense_n_) * dense_region_, 0);
    dense_.shrink_to_fit();
}

void kv_sequence::set_sparse(const sparse_params & sp) {
    sparse_ = sp;
    alloc_sparse();
}

// The dense layers' RAM copy of layer il of held page `page`, as stored (in
// the page's type: a reused page may be of a lower tier, never larger).
void kv_sequence::keep_dense(int64_t page, int32_t il) {
    if (il >= dense_n_) return;
    const page_ref & r = pages_[held(page)].ref;
    const size_t bytes = size_t(pg1_.n_rows()) * pg_.row_bytes(r.t);
    GLOAS_ASSERT(bytes <= dense_region_);
    std::memcpy(dense_rows(page, il), r.data + size_t(pg_.row_index(il, 0, 0)) * pg_.row_bytes(r.t), bytes);
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

void kv_sequence::begin_chunk(int32_t pos0, int32_t n_tok) {
    const int32_t P = pg_.page_tokens;
    chunk_first_ = pos0 / P;
    chunk_last_ = (pos0 + n_tok - 1) / P;
    // A page the chunk starts mid-way was the last chunk's last page: its
    // layers are where they were. Any other page before the chunk is sealed.
    int32_t base = 0;
    if (pos0 % P != 0) {
        const int i = open_page_[0] == chunk_first_ ? 0 : 1;
        GLOAS_ASSERT(open_page_[i] == chunk_first_);
        base = open_base_[i];
    }
    // The last page's layer l goes where the first page's layer l - 1 was:
    // sealed, and read by no query, once layer l - 1 is done.
    open_page_[0] = chunk_first_;
    open_base_[0] = base;
    open_page_[1] = chunk_last_ != chunk_first_ ? chunk_last_ : -1;
    open_base_[1] = (base + g_.n_layer) % (g_.n_layer + 1);
}

const uint8_t * kv_sequence::staging(int64_t page, int32_t il) const {
    for (int i = 0; i < 2; ++i)
        if (open_page_[i] == page) return open_.data() + size_t((open_base_[i] + il) % (g_.n_layer + 1)) * region_;
    GLOAS_ASSERT(page > chunk_first_ && page < chunk_last_);
    return inside_.data() + size_t(page - chunk_first_ - 1) * region_;
}

void kv_sequence::staging_row(const uint8_t * region, int64_t r, float * out) const {
    const size_t P = size_t(pg_.page_tokens);
    if (st_t_ == type::F32) std::memcpy(out, region + size_t(r) * P * sizeof(float), P * sizeof(float));
    else fp16_to_fp32_row(reinterpret_cast<const uint16_t *>(region) + size_t(r) * P, out, int64_t(P));
}

void kv_sequence::quantize_layer(int64_t page, int32_t il) {
    const uint8_t * src = staging(page, il);
    uint8_t * dst = const_cast<uint8_t *>(pages_[held(page)].ref.data) + size_t(pg_.row_index(il, 0, 0)) * pg_.row_bytes(t_);
    if (t_ == st_t_) {  // F32 or F16 pages: the staged rows are the page's
        std::memcpy(dst, src, region_);
        return;
    }
    const int32_t P = pg_.page_tokens;
    static thread_local std::vector<float> rows;
    if (t_ == type::Q4_KIVI) {  // rows of two block types (page.h), from a whole F32 layer
        rows.resize(size_t(pg1_.n_rows()) * size_t(P));
        for (int64_t r = 0; r < pg1_.n_rows(); ++r) staging_row(src, r, rows.data() + size_t(r) * size_t(P));
        page_quantize(pg1_, rows.data(), t_, dst);
        return;
    }
    const type_traits & tt = traits(t_);
    const size_t rb = pg_.row_bytes(t_);
    rows.resize(size_t(P));
    for (int64_t r = 0; r < pg1_.n_rows(); ++r) {
        staging_row(src, r, rows.data());
        if (t_ == type::Q4_0) quantize_row_q4_0_mse(rows.data(), reinterpret_cast<block_q4_0 *>(dst + size_t(r) * rb), P);
        else tt.from_float(rows.data(), dst + size_t(r) * rb, P);
    }
}

const uint16_t * kv_sequence::summary_tiles(int32_t layer, int32_t kv_head) const {
    GLOAS_ASSERT(layer >= first_scored_);
    return summaries_.data() + (size_t(layer - first_scored_) * size_t(g_.n_head_kv) + size_t(kv_head)) * summary_tiles_ * 2 *
                               size_t(g_.head_dim) * SUMMARY_TILE;
}

// Bounds of the keys as attention will read them: from the page in its type.
void kv_sequence::summarize(int64_t page, int32_t il) {
    if (il < first_scored_) return;
    const page_ref & r = pages_[held(page)].ref;
    const int32_t hd = g_.head_dim;
    const size_t slot = summary_slot(page);
    std::vector<uint16_t> b(2 * size_t(hd));  // kmin, kmax of one KV head
    for (int32_t h = 0; h < g_.n_head_kv; ++h) {
        page_key_bounds_f16(pg_, r.t, r.data, il, h, pg_.page_tokens, b.data(), b.data() + hd);
        uint16_t * tiles = const_cast<uint16_t *>(summary_tiles(il, h));
        for (int32_t kind = 0; kind < 2; ++kind)
            for (int32_t d = 0; d < hd; ++d) tiles[summary_index(hd, int64_t(slot), kind, d)] = b[size_t(kind * hd + d)];
    }
}

int32_t kv_sequence::select_pages(int32_t il, int32_t h, int64_t cur, int32_t drop, bool decode, const float * qs,
                                  const float * qk, int32_t group, float * score, float * slot_score, int32_t * out) const {
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
    // Upper bound of q·k over each middle page, the largest over the group's
    // heads: all slots at once (page j's summary is column summary_slot(j)).
    const uint16_t * tiles = summary_tiles(il, h);
    if (drop == 0) {
        page_score_bounds_f16(qs, group, hd, tiles, hi, score);  // nothing slid: slot == page == v
    } else {
        page_score_bounds_f16(qs, group, hd, tiles, int32_t(max_pages_), slot_score);
        for (int32_t v = lo; v < hi; ++v) {
            const size_t c = summary_slot(page_of(v));
            if (v < S) {  // a sink, scored with its own query: the tile that holds it
                float tile[SUMMARY_TILE];
                page_score_bounds_f16(qk, group, hd, tiles + summary_index(hd, int64_t(c - c % SUMMARY_TILE), 0, 0),
                                      SUMMARY_TILE, tile);
                score[v] = tile[c % SUMMARY_TILE];
            } else {
                score[v] = slot_score[c];
            }
        }
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
    if (il == 0) begin_chunk(pos0, n_tok);
    GLOAS_ASSERT(chunk_first_ == pos0 / P && chunk_last_ == (pos0 + n_tok - 1) / P);
    for (int32_t t = 0; t < n_tok; ++t) {
        const int32_t p = pos0 + t;
        const int64_t pg = p / P;
        if (il == 0 && pg == int64_t(pages_.size()) + n_dropped_) {
            GLOAS_ASSERT(pages_.size() < max_pages_);
            seq_page sp;
            sp.ref = st_.begin_page();
            pages_.push_back(sp);
        }
        const float * kt = k + size_t(t) * size_t(E);
        const float * vt = v + size_t(t) * size_t(E);
        if (st_t_ == type::F32) page_put_token(pg1_, reinterpret_cast<float *>(staging(pg, il)), 0, p % P, kt, vt);
        else page_put_token(pg1_, reinterpret_cast<uint16_t *>(staging(pg, il)), 0, p % P, kt, vt);
        if (p % P == P - 1) {
            quantize_layer(pg, il);
            summarize(pg, il);
            keep_dense(pg, il);
        }
    }
}

void kv_sequence::attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, const float * q_sink, float * out,
                         float scale) {
    GLOAS_ASSERT(n_tok <= max_chunk_ && pos0 + n_tok <= (int32_t(pages_.size()) + n_dropped_) * pg_.page_tokens);
    GLOAS_ASSERT(drop_pages(pos0) >= n_dropped_);
    const int32_t P = pg_.page_tokens, hd = g_.head_dim, n_head = g_.n_head, hkv = g_.n_head_kv;
    const int32_t group = n_head / hkv;
    const int64_t n_items = int64_t(n_tok) * hkv;
    const bool copy = n_tok == 1 && st_.params().read_copy;  // decode: copies (kv-store.h)
    const int32_t la = size_t(g_.head_dim) * pg_.row_bytes(t_) >= AHEAD_MIN_BYTES ? AHEAD : 0;  // pages translated ahead
    // Work per item grows with the position: interleave items over threads.
    const bool par = n_items > 1 && int64_t(pos0 + n_tok) * n_items * hd > 32768;
    ops::parallel_for(n_items, par ? ops::n_threads() : 1, 1, [&](int64_t it0, int64_t it1) {
    for (int64_t it = it0; it < it1; ++it) {
        const int32_t t = int32_t(it / hkv), h = int32_t(it % hkv);
        const int32_t p = pos0 + t;
        const int64_t cur = p / P;
        // Per-thread scratch: nothing of an item outlives it.
        static thread_local std::vector<float> tl_scratch;
        static thread_local std::vector<int32_t> tl_selected;
        if (tl_scratch.size() < scratch_item_) tl_scratch.resize(scratch_item_);
        if (tl_selected.size() < max_pages_) tl_selected.resize(max_pages_);
        float * qs = tl_scratch.data();
        attn_state s;
        s.m = qs + size_t(group) * size_t(hd);
        s.l = s.m + group;
        s.acc = s.l + group;
        float * score = s.acc + size_t(group) * size_t(hd);
        float * qk = score + max_pages_;
        float * slot_score = qk + size_t(group) * size_t(hd);
        int32_t * sel = tl_selected.data();
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
        const layer_attention la_il = get_layer_attention(il);
        if (la_il.window > 0 || la_il.softcap > 0.0f) {
            GLOAS_ASSERT(drop == 0);
            attend_limited(il, h, p, qs, group, la_il, s);
            attn_state_finish(s, group, hd, out + q_off);
            continue;
        }
        // Prefill stays dense; a decode query may read only a selection.
        const int32_t n_sel = select_pages(il, h, cur, drop, n_tok == 1, qs, qk, group, score, slot_score, sel);
        if (copy && il < dense_n_) {
            // the dense layers' RAM copy: every page, read as a one-layer page
            auto ahead = [&](int32_t j) {
                if (la > 0 && j < n_sel) page_prefetch_first(pg1_, pages_[held(sel[j])].ref.t, dense_rows(sel[j], il), 0, h);
            };
            for (int32_t i = 0; i < la; ++i) ahead(i);
            for (int32_t i = 0; i < n_sel; ++i) {
                ahead(i + la);
                const page_ref & r = pages_[held(sel[i])].ref;
                const bool nx = i + 1 < n_sel;
                page_attend(pg1_, r.t, dense_rows(sel[i], il), 0, h, P, sel[i] < S ? qk : qs, group, s,
                            nx ? dense_rows(sel[i + 1], il) : nullptr, nx ? pages_[held(sel[i + 1])].ref.t : r.t);
            }
            dense_reads_ += uint64_t(n_sel);
        } else if (copy) {
            attend_copied(il, h, sel, n_sel, S, qs, qk, group, s);
        } else {
            auto ahead = [&](int32_t j) {
                if (la > 0 && j < n_sel) page_prefetch_first(pg_, pages_[held(sel[j])].ref.t, pages_[held(sel[j])].ref.data, il, h);
            };
            for (int32_t i = 0; i < la; ++i) ahead(i);
            for (int32_t i = 0; i < n_sel; ++i) {
                ahead(i + la);
                const page_ref & r = pages_[held(sel[i])].ref;
                st_.touch(r.slot);  // recency for the store's RAM budget
                // the next page's piece streams in while this one is attended
                const page_ref * nx = i + 1 < n_sel ? &pages_[held(sel[i + 1])].ref : nullptr;
                page_attend(pg_, r.t, r.data, il, h, P, sel[i] < S ? qk : qs, group, s, nx ? nx->data : nullptr,
                            nx ? nx->t : r.t);
            }
        }
        page_reads_ += uint64_t(n_sel);
        page_attend(pg1_, st_t_, staging(cur, il), 0, h, p % P + 1, qs, group, s);
        attn_state_finish(s, group, hd, out + q_off);
    }
    });
}

void kv_sequence::attend_limited(int32_t il, int32_t h, int32_t p, const float * qs, int32_t group,
                                 const layer_attention & a, attn_state & s) {
    const int32_t P = pg_.page_tokens, hd = g_.head_dim;
    const int64_t cur = p / P;
    const int32_t lo = a.window > 0 ? std::max(0, p - a.window + 1) : 0;
    static thread_local std::vector<float> kv;  // (2 * hd, P): K rows then V rows of one page
    if (kv.size() < size_t(2 * hd) * size_t(P)) kv.resize(size_t(2 * hd) * size_t(P));
    // Tokens [t0, t1) of a page whose K and V rows (channel-major) are k, v.
    auto visit = [&](const float * k, const float * v, int32_t t0, int32_t t1) {
        for (int32_t g = 0; g < group; ++g) {
            const float * qg = qs + size_t(g) * size_t(hd);
            float * acc = s.acc + size_t(g) * size_t(hd);
            for (int32_t t = t0; t < t1; ++t) {
                float sc = 0.0f;
                for (int32_t d = 0; d < hd; ++d) sc += qg[d] * k[size_t(d) * size_t(P) + size_t(t)];
                if (a.softcap > 0.0f) sc = a.softcap * std::tanh(sc / a.softcap);
                if (sc > s.m[g]) {
                    const float r = std::exp(s.m[g] - sc);  // 0 for the first score (m = -inf)
                    s.l[g] *= r;
                    for (int32_t d = 0; d < hd; ++d) acc[d] *= r;
                    s.m[g] = sc;
                }
                const float e = std::exp(sc - s.m[g]);
                s.l[g] += e;
                for (int32_t d = 0; d < hd; ++d) acc[d] += e * v[size_t(d) * size_t(P) + size_t(t)];
            }
        }
    };
    uint64_t reads = 0;
    for (int64_t j = lo / P; j < cur; ++j) {
        const page_ref & r = pages_[held(j)].ref;
        st_.touch(r.slot);
        ++reads;
        if (a.softcap <= 0.0f && j * P >= lo) {  // a whole page inside the window: the page kernel
            page_attend(pg_, r.t, r.data, il, h, P, qs, group, s);
            continue;
        }
        for (int32_t kind = 0; kind < 2; ++kind)
            for (int32_t d = 0; d < hd; ++d)
                page_row_to_float(pg_, r.t, r.data, il, kind, h * hd + d,
                                  kv.data() + (size_t(kind) * size_t(hd) + size_t(d)) * size_t(P));
        visit(kv.data(), kv.data() + size_t(hd) * size_t(P), std::max(0, lo - int32_t(j) * P), P);
    }
    page_reads_ += reads;
    const uint8_t * st = staging(cur, il);  // rows of geometry pg1_ in st_t_
    if (a.softcap <= 0.0f && cur * P >= lo) {
        page_attend(pg1_, st_t_, st, 0, h, p % P + 1, qs, group, s);
        return;
    }
    for (int32_t kind = 0; kind < 2; ++kind)
        for (int32_t d = 0; d < hd; ++d)
            staging_row(st, pg1_.row_index(0, kind, h * hd + d), kv.data() + (size_t(kind) * size_t(hd) + size_t(d)) * size_t(P));
    visit(kv.data(), kv.data() + size_t(hd) * size_t(P), std::max(0, lo - int32_t(cur) * P), p % P + 1);
}

size_t kv_sequence::copy_buffer_bytes() const {
    return size_t(COPY_BATCH) * 2 * size_t(g_.head_dim) * pg_.row_bytes(t_);
}

void kv_sequence::attend_copied(int32_t il, int32_t h, const int32_t * sel, int32_t n_sel, int32_t n_sink,
                                const float * qs, const float * qk, int32_t group, attn_state & s) {
    // A piece: the K rows then the V rows of one layer and KV head, one
    // contiguous range of the page laid out as the page of a one-layer,
    // one-head geometry (page.h): one read each, and page_attend reads it as
    // it reads a page.
    page_geometry one = pg_;
    one.n_layer = 1;
    one.n_head_kv = 1;
    const int32_t D = g_.head_dim, P = pg_.page_tokens;
    struct thread_scratch {
        batch_reader reader;
        std::vector<uint8_t> buf;
        std::vector<read_op> ops;
        std::vector<int32_t> which;  // the selection index of each op
    };
    static thread_local thread_scratch ts;
    const size_t max_piece = 2 * size_t(D) * pg_.row_bytes(t_);  // pages are never larger than the store's type
    if (ts.buf.size() < copy_buffer_bytes()) ts.buf.resize(copy_buffer_bytes());
    ts.ops.resize(size_t(COPY_BATCH));
    ts.which.resize(size_t(COPY_BATCH));
    const int fd = st_.file_fd();
    for (int32_t i0 = 0; i0 < n_sel; i0 += COPY_BATCH) {
        const int32_t n = std::min(COPY_BATCH, n_sel - i0);
        // Pages in the file are read from it in one batch; pages kept in
        // memory (kv-store.h) are copied from there.
        size_t n_ops = 0;
        for (int32_t j = 0; j < n; ++j) {
            const page_ref & r = pages_[held(sel[i0 + j])].ref;
            const size_t rb = pg_.row_bytes(r.t);
            GLOAS_ASSERT(2 * size_t(D) * rb <= max_piece);
            uint8_t * dst = ts.buf.data() + size_t(j) * max_piece;
            const size_t at = size_t(pg_.row_index(il, 0, h * D)) * rb, bytes = 2 * size_t(D) * rb;
            if (!kv_store::in_file(r.slot)) {
                std::memcpy(dst, r.data + at, bytes);
                continue;
            }
            read_op & op = ts.ops[n_ops];
            ts.which[n_ops++] = j;
            op.offset = st_.slot_offset(r.slot) + uint64_t(at);
            op.bytes = uint32_t(bytes);
            op.dst = dst;
        }
        if (n_ops > 0) bytes_copied_ += ts.reader.read(fd, ts.ops.data(), n_ops);
        for (size_t k = 0; k < n_ops; ++k) {
            const read_op & op = ts.ops[k];
            if (op.ok) continue;
            // The file could not be read there: the mapping has the same bytes.
            const page_ref & r = pages_[held(sel[i0 + ts.which[k]])].ref;
            std::memcpy(op.dst, r.data + (op.offset - st_.slot_offset(r.slot)), op.bytes);
            ++copy_fallbacks_;
        }
        for (int32_t j = 0; j < n; ++j) {
            const page_ref & r = pages_[held(sel[i0 + j])].ref;
            page_attend(one, r.t, ts.buf.data() + size_t(j) * max_piece, 0, 0, P, sel[i0 + j] < n_sink ? qk : qs, group, s);
        }
    }
}

void kv_sequence::commit(const int32_t * tokens, int32_t pos0, int32_t n_tok) {
    GLOAS_ASSERT(pos0 == int32_t(tokens_.size()));
    // The last prefill's tail is stored once a decode step follows it;
    // another prefill chunk right after it (the prompt went on) replaces it.
    if (n_tok == 1) store_tail();
    tail_page_ = -1;
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
    // A prefill that ends inside a page leaves that page's tokens so far (its
    // tail: kv-store.h) to store; a decode step does not, nor a page past
    // n_ctx positions.
    const size_t n_tail = tokens_.size() % size_t(P);
    if (n_tok > 1 && n_tail > 0 && n_dropped_ == 0 && tokens_.size() <= size_t(g_.n_ctx) && hashes_.size() == n_full &&
        st_.params().keep_tails) {
        tail_page_ = int64_t(n_full);
        tail_n_ = int32_t(n_tail);
        tail_logits_.clear();
        tail_parent_ = n_full == 0 ? PREFIX_SEED : hashes_[n_full - 1];
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

void kv_sequence::keep_logits(int32_t pos, const float * logits, int32_t n_vocab) {
    if (tail_page_ >= 0 && int64_t(pos) == tail_page_ * pg_.page_tokens + tail_n_ - 1)
        tail_logits_.assign(logits, logits + n_vocab);
}

int32_t kv_sequence::reuse_prefix(const int32_t * tokens, int32_t n_tok) { return reuse(tokens, n_tok, nullptr, 0); }

int32_t kv_sequence::reuse_prompt(const int32_t * tokens, int32_t n_tok, float * logits, int32_t n_vocab) {
    return reuse(tokens, n_tok, logits, n_vocab);
}

int32_t kv_sequence::reuse(const int32_t * tokens, int32_t n_tok, float * logits, int32_t n_vocab) {
    GLOAS_ASSERT(pages_.empty() && tokens_.empty() && n_dropped_ == 0);
    const int32_t P = pg_.page_tokens;
    // Only pages within the first n_ctx positions are in the index.
    const int32_t n_full = n_tok > 0 ? std::min((n_tok - 1) / P, g_.n_ctx / P) : 0;
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
        for (int32_t il = 0; il < g_.n_layer; ++il) {
            summarize(int64_t(j), il);
            keep_dense(int64_t(j), il);
        }
    }
    int32_t reused = int32_t(got) * P;
    // The next page's leading tokens from a stored tail, into the open page
    // (at most P - 1 of them, within n_ctx): never the last token, unless
    // the tail ends there and holds its logits.
    const bool want = logits != nullptr && n_vocab > 0;
    const int32_t left = n_tok - reused;
    const int32_t avail = std::min({P - 1, want ? left : left - 1, g_.n_ctx - reused});
    int32_t from_tail = 0;
    if (avail > 0 && st_.params().keep_tails) {
        bool got_logits = false;
        // Its layers in order from the ring's start, in F32 (the tails' type).
        const size_t n_rows = size_t(pg_.n_rows());
        std::vector<float> widened;
        float * rows = reinterpret_cast<float *>(open_.data());
        if (st_t_ != type::F32) {
            widened.assign(n_rows * size_t(P), 0.0f);
            rows = widened.data();
        }
        from_tail = st_.take_tail(got == 0 ? PREFIX_SEED : hashes[got - 1], tokens + reused, avail, rows, size_t(P),
                                  want ? logits : nullptr, n_vocab, &got_logits);
        if (from_tail > 0 && st_t_ != type::F32)
            fp32_to_fp16_row(rows, reinterpret_cast<uint16_t *>(open_.data()), int64_t(n_rows) * P);
        if (from_tail == left && !got_logits) --from_tail;  // the last token is evaluated after all
        if (from_tail > 0) {
            GLOAS_ASSERT(pages_.size() < max_pages_);
            seq_page sp;
            sp.ref = st_.begin_page();
            pages_.push_back(sp);
            open_page_[0] = int64_t(got);  // its layers in order from the ring's start (take_tail wrote them)
            open_base_[0] = 0;
            open_page_[1] = -1;
            reused += from_tail;
        }
    }
    tokens_.assign(tokens, tokens + reused);
    kv_metrics & m = st_.metrics();
    m.pages_hit += got;
    m.pages_missed += size_t(n_full) - got;
    m.tokens_reused += uint64_t(reused);
    return reused;
}

void kv_sequence::store_tail() {
    if (tail_page_ < 0) return;
    const int64_t pg = tail_page_;
    tail_page_ = -1;
    // Its columns [0, tail_n_) stay as they were in the page's open buffer
    // until the page is done with (the tokens after it only add columns).
    for (int i = 0; i < 2; ++i) {
        if (open_page_[i] != pg) continue;
        try {
            // The tail's rows in layer order, in F32: in place unless the
            // staging type is another or the layers wrap around the ring's end.
            const size_t P = size_t(pg_.page_tokens), n1 = size_t(pg1_.n_rows());
            const float * rows = reinterpret_cast<const float *>(open_.data() + size_t(open_base_[i]) * region_);
            std::vector<float> gathered;
            if (st_t_ != type::F32 || open_base_[i] > 1) {
                gathered.resize(size_t(g_.n_layer) * n1 * P);
                for (int32_t il = 0; il < g_.n_layer; ++il)
                    for (size_t r = 0; r < n1; ++r)
                        staging_row(staging(pg, il), int64_t(r), gathered.data() + (size_t(il) * n1 + r) * P);
                rows = gathered.data();
            }
            st_.put_tail(tail_parent_, tokens_.data() + size_t(pg) * P, tail_n_, rows, P,
                         tail_logits_.empty() ? nullptr : tail_logits_.data(), int32_t(tail_logits_.size()));
        } catch (const std::exception &) {
            // Not stored (no memory): a later prompt computes these tokens again.
        }
    }
}

void kv_sequence::clear() {
    store_tail();
    for (auto & p : pages_) {
        if (p.published) st_.release(p.ref.slot);
        else st_.abandon(p.ref.slot);
    }
    pages_.clear();
    tokens_.clear();
    hashes_.clear();
    n_dropped_ = 0;
    open_page_[0] = open_page_[1] = -1;
    open_base_[0] = open_base_[1] = 0;
    chunk_first_ = chunk_last_ = -1;
}

size_t kv_sequence::ram_bytes() const {
    // the per-thread buffers of attend, one set per thread
    const size_t per_thread = scratch_item_ * sizeof(float) + max_pages_ * sizeof(int32_t) +
                              (st_.params().read_copy ? copy_buffer_bytes() : 0);
    return open_.size() + inside_.size() + summaries_.size() * sizeof(uint16_t) + dense_.size() +
           per_thread * size_t(ops::n_threads());
}

} // namespace gloas
