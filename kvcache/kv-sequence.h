// One sequence's K/V in the store's pages (the kv_cache the decoder uses).
//
// Positions [j*P, (j+1)*P) live in page j. A page is claimed in the store when
// its first token arrives; each layer's rows are quantized into it as soon as
// the page is full for that layer, and the whole page is published (hashed,
// checksummed, listed) when the chunk that filled it is committed.
//
// Precision rule, which makes results independent of chunking and of reuse: a
// query at position p reads the pages before p's page in the store's type, and
// p's own page in F32 from a staging buffer. Decoding token by token, a long
// prefill, and a prefill that starts after reused pages therefore see exactly
// the same K/V values.
//
// Sparse decode (Quest): every sealed page keeps, per layer and KV head, the
// element-wise min and max of its keys (its summary, in RAM). A decode query
// scores each page by the upper bound sum_d max(q_d*min_d, q_d*max_d) of q·k
// over the page (the largest over the query heads of a KV head's group),
// and attends only to the top `ratio` of pages plus the first pages
// (attention sinks) and the most recent ones. The first `dense_layers`
// layers and all prefill stay dense; ratio 1 is exactly dense.
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

class kv_sequence final : public kv_cache {
public:
    // max_chunk: the most tokens a single store/attend call carries.
    kv_sequence(kv_store & store, const kv_geometry & g, int32_t max_chunk);
    ~kv_sequence() override;
    kv_sequence(const kv_sequence &) = delete;
    kv_sequence & operator=(const kv_sequence &) = delete;

    void store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) override;
    void attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, float * out, float scale) override;
    void commit(const int32_t * tokens, int32_t pos0, int32_t n_tok) override;
    int32_t reuse_prefix(const int32_t * tokens, int32_t n_tok) override;
    void clear() override;
    size_t ram_bytes() const override;

    void set_sparse(const sparse_params & sp) { sparse_ = sp; }
    const sparse_params & sparse() const { return sparse_; }
    // Sealed-page reads by attention (one per page, layer and KV head) since creation.
    uint64_t page_reads() const { return page_reads_.load(); }
    // Key bounds of page j: kmin, kmax (head_dim) of `layer`, `kv_head`.
    const float * key_min(int32_t j, int32_t layer, int32_t kv_head) const;
    const float * key_max(int32_t j, int32_t layer, int32_t kv_head) const { return key_min(j, layer, kv_head) + g_.head_dim; }

    int32_t n_pages() const { return int32_t(pages_.size()); }
    const page_ref & page(int32_t j) const { return pages_[size_t(j)].ref; }

private:
    struct seq_page {
        page_ref ref;
        bool published = false;  // handed to the store (or reused from it)
    };
    float * staging(int64_t page);
    void quantize_layer(int64_t page, int32_t il);
    void summarize(int64_t page, int32_t il);
    // Pages [0, cur) to attend for one query of KV head h: all of them, or in
    // decode the sparse selection; in increasing order. Returns the count.
    int32_t select_pages(int32_t il, int32_t h, int64_t cur, bool decode, const float * qs, int32_t group,
                         float * score, int32_t * out) const;

    kv_store & st_;
    page_geometry pg_;
    type t_;
    int32_t max_chunk_;
    std::vector<seq_page> pages_;
    std::vector<int32_t> tokens_;        // committed token ids
    std::vector<uint64_t> hashes_;       // prefix hash of each full page
    int32_t n_staging_ = 0;
    std::vector<float> staging_;         // (n_staging, n_rows, P) F32 open pages
    std::vector<int64_t> staging_page_;  // page held by each staging buffer, -1: none
    std::vector<float> scratch_;         // per (token, kv head): scaled q, m, l, acc, page scores
    size_t scratch_item_ = 0;            // floats per item
    size_t max_pages_ = 0;               // pages a sequence can hold
    std::vector<int32_t> selected_;      // per (token, kv head): selected pages
    std::vector<float> summaries_;       // (pages, n_layer, n_head_kv, 2, head_dim) key min/max
    sparse_params sparse_;
    std::atomic<uint64_t> page_reads_{0};
};

} // namespace gloas
