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
#pragma once

#include "kvcache/kv-cache.h"
#include "kvcache/kv-store.h"

#include <cstdint>
#include <vector>

namespace gloas {

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

    int32_t n_pages() const { return int32_t(pages_.size()); }
    const page_ref & page(int32_t j) const { return pages_[size_t(j)].ref; }

private:
    struct seq_page {
        page_ref ref;
        bool published = false;  // handed to the store (or reused from it)
    };
    float * staging(int64_t page);
    void quantize_layer(int64_t page, int32_t il);

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
    std::vector<float> scratch_;         // per (token, kv head): scaled q, m, l, acc
    size_t scratch_item_ = 0;            // floats per item
};

} // namespace gloas
