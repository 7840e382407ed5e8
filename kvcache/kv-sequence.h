// One sequence's K/V in the store's pages (the kv_cache the decoder uses).
//
// Positions [j*P, (j+1)*P) live in page j. A page is claimed in the store when
// its first token arrives; each layer's rows are quantized into it as soon as
// the page is full for that layer, and the whole page is published (hashed,
// checksummed, listed) when the chunk that filled it is committed.
//
// Precision rule, which makes results independent of chunking and of reuse: a
// query at position p reads the pages before p's page in the store's type, and
// p's own page from a staging buffer. Decoding token by token, a long
// prefill, and a prefill that starts after reused pages therefore see exactly
// the same K/V values. Staging is F16 for F16 and Q8_0 pages (half the bytes
// of F32 per sequence) and F32 for F32 and the 4-bit types: with Q4_0 pages,
// an F16 own page cost stories260K 0.25% perplexity, against 0.02% with Q8_0
// pages and 0.007% with F16 ones (BENCHMARKS.md, "Staging in F16").
//
// Tails (kv-store.h): a prefill chunk (more than one token) that ends inside
// a page stores that open page's tokens so far in F32, the staging values
// widened (when the first decode step follows it, off the time to first
// token, or when the sequence is cleared; not when another prefill chunk
// follows), and reuse_prefix, after
// the full pages, takes the longest stored tail sharing the prompt's next
// tokens into the open page (claiming the page's slot as the page's first
// token would): the open page then holds exactly the values a prefill would
// have put there, so the rule above still holds. The logits of the prefill's
// last token go with its tail (keep_logits), and a prompt that ends where a
// stored tail ends takes them too (reuse_prompt): the same prompt again needs
// no forward pass, and its results are bit for bit those of the first run.
//
// Sparse decode (Quest): every sealed page keeps, per KV head of each layer
// past the dense ones, the element-wise min and max of its keys (its summary,
// in RAM, in F16 rounded outward so the bound below still holds; none when
// the ratio is 1). A decode query
// scores each page by the upper bound sum_d max(q_d*min_d, q_d*max_d) of q·k
// over the page (the largest over the query heads of a KV head's group),
// and attends only to the top `ratio` of pages plus the first pages
// (attention sinks) and the most recent ones. The first `dense_layers`
// layers and all prefill stay dense; ratio 1 is exactly dense.
//
// With copy reads (kv_store_params::read_copy) and sparse decode, the dense
// layers' K/V of every held page is also kept in RAM (a copy made as the page
// is sealed or reused, of the order of the summaries' size): every decode
// step reads all of it, so copying it out of the page file each step would
// copy about as many pieces again as the sparse layers' selection (the
// figures are in BENCHMARKS.md, "Long-context decode per memory strategy").
// Like the summaries it is a fixed buffer sized by the context (ram_bytes),
// not by what is stored.
//
// Sliding window (StreamingLLM), opt-in: past n_ctx positions the sequence
// keeps its first `sink_pages` pages (attention sinks) and a window of the
// most recent pages, dropping whole pages in between. A query at absolute
// position p sees the d(p) pages after the sinks dropped, where
//   d(p) = max(0, ceil((p + 1 - n_ctx) / P)),
// so it sees at most n_ctx positions, and so does the sequence between
// evaluations (within one chunk it holds up to n_ctx + chunk positions: each
// token of a chunk attends its own window, which makes the results
// independent of chunking, as above). Keys stay as stored, rotated at their
// absolute positions: the window keeps its relative distances, and the sinks
// are read with a second query rotated at the logical position p - D(p),
// D(p) = d(p) * P (slide_shift), as if the dropped tokens had never been.
// Layers with a window or soft-capped scores (kv_cache::set_layer_attention,
// Gemma) attend densely (attend_limited): a query reads only the sealed pages
// its window reaches; such layers cannot slide.
// Pages that hold a position past n_ctx (built from a slid window) are never
// published to the prefix index: a later prompt cannot take them for the
// unslid K/V of their tokens. Dropped pages are released to the store.
#pragma once

#include "kvcache/kv-cache.h"
#include "kvcache/kv-store.h"

#include <atomic>
#include <cstdint>
#include <vector>

namespace gloas {

struct sparse_params {
    float   ratio = 1.0f;        // share of pages attended in decode; 1: dense
    int32_t sink_pages = 1;      // leading pages always attended
    int32_t recent_pages = 1;    // latest sealed pages always attended
    int32_t dense_layers = 2;    // layers kept dense
};

struct slide_params {
    bool on = false;             // past n_ctx: slide a window (off: the sequence is full)
    int32_t sink_pages = 1;      // leading pages kept as attention sinks (0: a plain window)
};

class kv_sequence final : public kv_cache {
public:
    // max_chunk: the most tokens a single store/attend call carries.
    kv_sequence(kv_store & store, const kv_geometry & g, int32_t max_chunk);
    ~kv_sequence() override;
    kv_sequence(const kv_sequence &) = delete;
    kv_sequence & operator=(const kv_sequence &) = delete;

    void store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) override;
    void attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, const float * q_sink, float * out,
                float scale) override;
    int32_t slide_shift(int32_t pos) const override;
    void commit(const int32_t * tokens, int32_t pos0, int32_t n_tok) override;
    int32_t reuse_prefix(const int32_t * tokens, int32_t n_tok) override;
    int32_t reuse_prompt(const int32_t * tokens, int32_t n_tok, float * logits, int32_t n_vocab) override;
    void keep_logits(int32_t pos, const float * logits, int32_t n_vocab) override;
    void clear() override;
    size_t ram_bytes() const override;

    // Set before the first token (it sizes the dense layers' RAM copy).
    void set_sparse(const sparse_params & sp);
    const sparse_params & sparse() const { return sparse_; }
    // Throws gloas::error if the window cannot hold the sinks and two pages
    // (n_ctx < (sink_pages + 2) * P). Set before the first token.
    void set_slide(const slide_params & sl);
    const slide_params & slide() const { return slide_; }
    // Pages dropped so far between the sinks and the window.
    int32_t n_dropped() const { return n_dropped_; }
    // Positions the held pages cover (at most n_ctx between evaluations).
    int32_t n_held() const;
    // Sealed-page reads by attention (one per page, layer and KV head) since creation.
    uint64_t page_reads() const { return page_reads_.load(); }
    // Bytes decode copied out of the page file (kv_store_params::read_copy),
    // as the kernel counted them, and pieces it had to read through the
    // mapping instead (a failed read).
    uint64_t bytes_copied() const { return bytes_copied_.load(); }
    // Sealed-page reads served by the dense layers' RAM copy (counted in page_reads too).
    uint64_t dense_reads() const { return dense_reads_.load(); }
    uint64_t copy_fallbacks() const { return copy_fallbacks_.load(); }
    // Pages per batch of copy reads, and the per-thread buffer it takes.
    static constexpr int32_t COPY_BATCH = 64;
    size_t copy_buffer_bytes() const;

    // Pages held, in increasing position order: the sinks, then the window
    // (page j holds positions [j*P, (j+1)*P) until a slide drops some).
    int32_t n_pages() const { return int32_t(pages_.size()); }
    const page_ref & page(int32_t j) const { return pages_[size_t(j)].ref; }

private:
    struct seq_page {
        page_ref ref;
        bool published = false;  // handed to the store (or reused from it)
    };
    // Pages dropped as seen by a query at position p: d(p) above.
    int32_t drop_pages(int64_t p) const;
    // Index in pages_ of held absolute page a.
    size_t held(int64_t a) const { return size_t(a < slide_.sink_pages ? a : a - n_dropped_); }
    // Summary slot of held absolute page a.
    size_t summary_slot(int64_t a) const;
    // Key bounds of `layer` (>= first_scored_), `kv_head` for every slot, in
    // F16 rounded outward, in the tiles of page_score_bounds_f16 (page.h):
    // page j's are column summary_slot(j).
    const uint16_t * summary_tiles(int32_t layer, int32_t kv_head) const;
    void alloc(size_t max_pages);
    // Sizes the summaries and the dense layers' RAM copy for the sparse
    // settings and max_pages_.
    void alloc_sparse();
    // The dense layers' copy of `layer` of held absolute page a: its rows as a
    // page of geometry pg1_.
    uint8_t * dense_rows(int64_t a, int32_t layer) {
        return dense_.data() + (summary_slot(a) * size_t(dense_n_) + size_t(layer)) * dense_region_;
    }
    void keep_dense(int64_t page, int32_t il);
    // Staging (the rows of pages being filled, in st_t_; see the comment of open_).
    void begin_chunk(int32_t pos0, int32_t n_tok);
    // Rows of `layer` of a page of the current chunk: (2 * n_embd_kv, P), laid
    // out as a page of type st_t_ and geometry pg1_.
    const uint8_t * staging(int64_t page, int32_t layer) const;
    uint8_t * staging(int64_t page, int32_t layer) {
        return const_cast<uint8_t *>(static_cast<const kv_sequence &>(*this).staging(page, layer));
    }
    // Row r of a staging region as floats (P of them).
    void staging_row(const uint8_t * region, int64_t r, float * out) const;
    void quantize_layer(int64_t page, int32_t il);
    // Stores the pending tail (tail_page_), if any, in the store.
    void store_tail();
    int32_t reuse(const int32_t * tokens, int32_t n_tok, float * logits, int32_t n_vocab);
    void summarize(int64_t page, int32_t il);
    // Sealed pages to attend for one query of KV head h, as absolute page
    // numbers in increasing order: pages [0, cur) less the `drop` after the
    // sinks, all of them or in decode the sparse selection. qs scores the
    // window pages, qk the slide's sink pages. Returns the count.
    // score: (cur) scratch by candidate, slot_score: (max_pages_) by summary slot.
    int32_t select_pages(int32_t il, int32_t h, int64_t cur, int32_t drop, bool decode, const float * qs,
                         const float * qk, int32_t group, float * score, float * slot_score, int32_t * out) const;
    // Attends KV head h of layer il over the sealed pages sel[0, n_sel),
    // copying each one's K and V rows out of the page file first; pages
    // before `n_sink` are read with qk, the others with qs.
    void attend_copied(int32_t il, int32_t h, const int32_t * sel, int32_t n_sel, int32_t n_sink, const float * qs,
                       const float * qk, int32_t group, attn_state & s);

    // Attention of `group` query heads qs (scaled) of KV head h of layer il at
    // position p (no slide) limited by `a` (kv_cache::set_layer_attention):
    // the sealed pages the window reaches, then the current page from
    // staging, the precision rule kept. Pages wholly inside the window go
    // through page_attend unless scores are capped; the others (the page the
    // window starts in, every page of a capped layer) are dequantized row by
    // row and attended with plain loops.
    void attend_limited(int32_t il, int32_t h, int32_t p, const float * qs, int32_t group, const layer_attention & a,
                        attn_state & s);

    kv_store & st_;
    page_geometry pg_;
    type t_;
    int32_t max_chunk_;
    std::vector<seq_page> pages_;
    std::vector<int32_t> tokens_;        // committed token ids
    std::vector<uint64_t> hashes_;       // prefix hash of each full page
    int64_t tail_page_ = -1;             // the last prefill ended tail_n_ tokens into this page: its tail is pending
    int32_t tail_n_ = 0;
    uint64_t tail_parent_ = 0;           // prefix hash of the pages before it
    std::vector<float> tail_logits_;     // the logits of its last token, when computed
    // Staging. A chunk of tokens (one store per layer, then its attend)
    // starts and ends in open pages; the last one keeps all its layers in
    // staging until the next chunk. The pages after the first are filled
    // within the chunk and sealed layer by layer as they fill; a sealed
    // layer's staged rows are read only by the chunk's own queries of that
    // layer. So the
    // pages strictly inside share one layer's rows, and the two open pages
    // share a ring of n_layer + 1 layer regions: layer l of open page i is
    // region (open_base_[i] + l) mod (n_layer + 1), the last page's base one
    // below the first's, so that its layer l takes the region of the first
    // page's layer l - 1, done with by then. The ring holds a page and one
    // layer, not two pages.
    page_geometry pg1_;                  // pg_ with one layer: the rows of one layer of a page
    type st_t_ = type::F32;              // the staging type: F16 for F16 and Q8_0 pages, else F32
    size_t region_ = 0;                  // bytes of one layer of a page in st_t_
    std::vector<uint8_t> open_;          // (n_layer + 1) regions: the ring of the open pages' layers
    int64_t open_page_[2] = {-1, -1};    // the chunk's first page, and its last when another
    int32_t open_base_[2] = {0, 0};
    std::vector<uint8_t> inside_;        // (pages inside a chunk) regions: the current layer's rows
    int64_t chunk_first_ = -1, chunk_last_ = -1;  // pages of the chunk being stored
    size_t scratch_item_ = 0;            // floats of attend's per-thread scratch
    size_t max_pages_ = 0;               // pages a sequence can hold
    std::vector<uint16_t> summaries_;    // (layers from first_scored_, n_head_kv, summary_tiles_, 2, head_dim, SUMMARY_TILE) key min/max (F16)
    int32_t first_scored_ = 0;           // first layer sparse decode scores (n_layer: dense, no summaries)
    size_t summary_tiles_ = 0;           // tiles of SUMMARY_TILE slots: max_pages_ rounded up
    sparse_params sparse_;
    slide_params slide_;
    int32_t n_dropped_ = 0;              // pages dropped after the sinks (absolute page = index + n_dropped_ past them)
    std::atomic<uint64_t> page_reads_{0};
    std::atomic<uint64_t> bytes_copied_{0};
    std::atomic<uint64_t> copy_fallbacks_{0};
    std::atomic<uint64_t> dense_reads_{0};
    // The dense layers' RAM copy: (max_pages_ by summary_slot, dense_n_) regions of
    // dense_region_ bytes (one layer of a page in the store's type); empty
    // unless copy reads and sparse decode.
    std::vector<uint8_t> dense_;
    int32_t dense_n_ = 0;
    size_t dense_region_ = 0;
};

} // namespace gloas
