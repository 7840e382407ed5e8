// Pages of the K/V store and the kernels that read them.
//
// A page holds page_tokens (P) consecutive tokens of one sequence: all layers,
// K and V, all KV heads. Inside a page every (layer, K|V, channel) is one row of
// P values over the page's tokens — channel-major, as KIVI groups keys — so a
// quantized page is made of ordinary Q8_0 / Q4_0 blocks of 32 tokens of one
// channel, whatever the head size (stories260K's head_dim 8 included):
//
//   page  = [layer 0: piece of KV head 0][layer 0: piece of KV head 1] ... [layer 1: ...] ...
//   piece = [K rows d = 0..head_dim-1][V rows d = 0..head_dim-1]
//   row   = P values of one channel, type t (F32, F16, Q8_0 or Q4_0; P % 32 == 0
//           for the block types)
//   channel c = kv_head * head_dim + d
//
// A piece is what attention reads for one layer and KV head: one contiguous
// range (one read when decode copies it out of the page file), laid out as
// the whole page of a geometry of one layer and one KV head.
//
// The page being filled (the open page) has the same layout in F32 or F16
// (page_staging_type); it is quantized once, when full, row by row with the
// type's quantizer.
//
// Q4_KIVI pages (KIVI's split: keys per channel with a minimum, values at 4
// bits) have rows of two block types: K rows are Q4_1 blocks (per channel
// and 32 tokens, the page's tokens when P = 32: x = d * q + m, d = (max -
// min) / 15, so a channel's extremes are kept and an offset channel uses
// all 16 levels), V rows Q4_0 blocks (error-minimizing scale, quant-mse.h).
// A piece is then [D K rows of 20 bytes per block][D V rows of 18]: 38 bytes
// per channel and 32 tokens, as two rows of the table's mean 19, so the
// pieces and pages sit where page_geometry puts them; only rows inside a
// piece move (page_row_offset). Bytes per token: 0.297x F16.
#pragma once

#include "kvcache/kv-shape.h"
#include "quant/types.h"

#include <cstddef>
#include <cstdint>

namespace gloas {

// A page's shape: the model's K/V shape and the tokens per page.
struct page_geometry : kv_shape {
    int32_t page_tokens = 32;  // P

    page_geometry() = default;
    page_geometry(int32_t page_tokens_, const kv_shape & s) : kv_shape(s), page_tokens(page_tokens_) {}
    page_geometry(int32_t page_tokens_, int32_t n_layer_, int32_t n_head_kv_, int32_t head_dim_)
        : kv_shape{n_layer_, n_head_kv_, head_dim_}, page_tokens(page_tokens_) {}

    // Rows per page: layers x {K, V} x channels.
    int64_t n_rows() const { return int64_t(n_layer) * 2 * n_embd_kv(); }
    size_t  row_bytes(type t) const { return row_size(t, page_tokens); }
    size_t  page_bytes(type t) const { return size_t(n_rows()) * row_bytes(t); }
    // Row index of (layer, kind 0 = K / 1 = V, channel).
    int64_t row_index(int32_t layer, int32_t kind, int32_t c) const {
        return ((int64_t(layer) * n_head_kv + c / head_dim) * 2 + kind) * head_dim + c % head_dim;
    }
    bool valid_for(type t) const { return page_tokens > 0 && page_tokens % int32_t(traits(t).blck_size) == 0; }
};

// The block type of the K (kind 0) or V (kind 1) rows of a page of type t:
// Q4_1 / Q4_0 for Q4_KIVI, t for the others.
type page_row_type(type t, int32_t kind);
// Bytes of one such row of P tokens.
size_t page_row_bytes(const page_geometry & g, type t, int32_t kind);
// Byte offset in a page of type t of the row (layer, kind, channel c):
// row_index * row_bytes, except inside a Q4_KIVI piece.
size_t page_row_offset(const page_geometry & g, type t, int32_t layer, int32_t kind, int32_t c);
// The P values of that row as floats (its block type's to_float).
void page_row_to_float(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kind, int32_t c,
                       float * out);

// The type of the open pages of pages of type t: F16 for F16 and Q8_0 pages,
// F32 for the others (kv-sequence.h, "Precision rule").
inline type page_staging_type(type t) { return t == type::F16 || t == type::Q8_0 ? type::F16 : type::F32; }

// Writes the K and V of token `tok` (0 <= tok < P) of `layer` into an F32 open
// page; k and v are (n_embd_kv).
void page_put_token(const page_geometry & g, float * open_page, int32_t layer, int32_t tok,
                    const float * k, const float * v);
// The same into an F16 open page (an F16 page's layout), rounded to nearest.
void page_put_token(const page_geometry & g, uint16_t * open_page, int32_t layer, int32_t tok,
                    const float * k, const float * v);

// Quantizes / converts an F32 open page into a page of type t (page_bytes(t)).
void page_quantize(const page_geometry & g, const float * open_page, type t, void * dst);
// Converts a page of type `from` into type `to` (e.g. Q8_0 -> Q4_0 for the
// COMPRESSED policy) through F32, row by row; values that are not finite
// become 0.
void page_convert(const page_geometry & g, const void * src, type from, type to, void * dst);

// Online-softmax attention state of `group` query heads: running max m and sum
// l per head, and the unnormalized output acc (group, head_dim).
// The caller owns the arrays. After pages with scores s_t and values v_t:
//   m = max_t s_t,  l = sum_t exp(s_t - m),  acc = sum_t exp(s_t - m) v_t.
struct attn_state {
    float * m;    // (group)
    float * l;    // (group)
    float * acc;  // (group, head_dim)
};
// m = -inf, l = 0, acc = 0.
void attn_state_init(attn_state & s, int32_t group, int32_t head_dim);
// out (group, head_dim) = acc / l.
void attn_state_finish(const attn_state & s, int32_t group, int32_t head_dim, float * out);

// Accumulates the attention of `group` query heads q (group, head_dim), already
// multiplied by the softmax scale, over tokens [0, n) of one page of type t
// (page_staging_type for the open page), for KV head `kv_head` of `layer`. K and V are read
// in registers: the page is never expanded in memory.
// Any group >= 1 and head_dim >= 1; 1 <= n <= P. Tokens at or past n are never
// read into the result (an open page's unwritten tail may hold anything).
//
// F32, F16 and BF16 pages run the float algorithm: page_attend differs
// from page_attend_ref by float rounding only (summation order and a
// polynomial exp with relative error about 2e-7).
//
// Q8_0 and Q4_0 pages run an integer algorithm, per window of 32 tokens
// (one block of every K/V row) and query head, with k_c, v_c the block's
// values (Q8_0: int8; Q4_0: nibble - 8) and dk_c, dv_c its scales for
// channel c, and Q, U the integer ranges of the query and the probabilities
// (Q8_0: 127 and 255, 8 bits; Q4_0: 32767 and 32767, int16):
//   query   x_c = q_c * dk_c; sq = max_c |x_c| / Q; qi_c = round(x_c / sq)
//   scores  s_t = sq * sum_c qi_c * k_c[t]           (integers summed exactly)
//   softmax m' = max(m, max_t s_t); e_t = exp(s_t - m'); pm = max_t e_t;
//           u_t = round(U * e_t / pm); l = l * exp(m - m') + pm/U * sum_t u_t
//   output  acc_c = acc_c * exp(m - m') + dv_c * pm/U * sum_t u_t * v_c[t]
// so the query is rounded relative to the head's largest |q_c dk_c| and the
// probabilities relative to the window's largest, on top of the page's own
// quantization. For Q8_0, to 8 bits: an error of the order of Q8_0's
// (tests/test-page.cpp measures it against page_attend_ref). For Q4_0, to
// 16 and 15 bits: 8 bits would add a visible share to Q4_0's own loss
// (mostly the query), 16 are nearly float-exact and still twice the
// products per instruction of float FMAs (vpdpwssd). BENCHMARKS.md
// ("Quality on stories260K") has the perplexities of both.
// Q4_KIVI pages run Q4_0's algorithm with k_c the K rows' Q4_1 nibbles q
// (x = dk_c * q + mk_c), and each head's bias b = sum_c q_c * mk_c (in
// float, the blocks' minima) added to its scores:
//   s_t = sq * sum_c qi_c * k_c[t] + b
// (the AVX-512 kernel is Q4_0's; the AVX2 kernels are page-attend-kivi.cpp).
//
// page_attend_scalar is page_attend's scalar twin, the same algorithm for
// every type in plain C++ (the kernel of the scalar variant of quant/isa.h,
// of the float types in the AVX2 one, and of Q8_0 pages where AVX-512 comes
// without VNNI / VBMI); the two differ by float rounding only (for Q8_0 and Q4_0 the
// integers are equal and, in the variants with FMA, so are the float
// operations and their order).
void page_attend       (const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s);
// page_attend that also streams in the piece (layer, kv_head) of `next`, the
// page (of type t_next, same geometry) the caller attends after this one;
// null: none. The prefetches are spread over the work, the next piece's rows
// as the kernel reads the same rows of this one, so that a chain of
// pages streams from memory while the kernel computes (page_prefetch's one
// burst of 128 prefetches for an F16 piece stalls the core instead;
// BENCHMARKS.md, "Decode at depth"). The result is page_attend's, bit for bit;
// `next` is never read into it and a bad address never faults.
void page_attend       (const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s, const void * next, type t_next);
void page_attend_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s);
// The exact attention: K and V dequantized with the type's to_float, scores
// and sums in double, exp from <cmath>.
void page_attend_ref   (const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s);

// Prefill: n_q query tokens over one page, so a chunk of queries reads each
// page once. Query token i has `group` heads, q (n_q, group, head_dim) (scaled),
// and attends the page's first n_valid[i] tokens (0..P; 0 leaves its state
// as it was; fewer than P gives causality within the chunk's last page).
// s holds the n_q * group heads, token-major: m, l (n_q * group),
// acc (n_q * group, head_dim). Equal to page_attend per query token up to
// float rounding (the same algorithm per type); page_attend_multi_scalar is
// its scalar twin, page_attend_multi_ref the loop over page_attend_ref.
void page_attend_multi       (const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                              int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s);
void page_attend_multi_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                              int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s);
void page_attend_multi_ref   (const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                              int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s);

// Asks the CPU to start loading the K and V rows of KV head `kv_head` of
// `layer`, all at once. Reads nothing into the result; never faults. (To
// stream a chain of pages, page_attend's `next` spreads the prefetches over
// the work instead: gloas-kernel-bench --pages compares the two.)
void page_prefetch(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head);
// Asks the CPU for the first line of the K rows and of the V rows of KV head
// `kv_head` of `layer`: two prefetches into the outer caches, which also
// translate the addresses. Attention issues them for the page 8 ahead of the
// one it attends (kv-sequence.cpp, where a piece's K rows fill an OS page),
// so the address translations of its pieces (each piece starts on new OS
// pages) are under way before page_attend needs them instead of stalling it
// one piece at a time (BENCHMARKS.md, "Decode at depth"). Reads nothing into
// the result; never faults.
void page_prefetch_first(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head);

// Quest summary of a page: kmin/kmax (head_dim) = the element-wise min and max
// over tokens [0, n) (1 <= n <= P) of each key channel of KV head `kv_head` of
// `layer`, read from an F32 open page.
void page_key_bounds(const page_geometry & g, const float * open_page, int32_t layer, int32_t kv_head,
                     int32_t n, float * kmin, float * kmax);
// The same over a page of any type (the bounds of its dequantized keys).
void page_key_bounds(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                     int32_t n, float * kmin, float * kmax);

// Quest's upper bound of q·k over a page for a group of query heads:
//   max over g < group of sum_d max(q[g][d] * kmin[d], q[g][d] * kmax[d])
// with q (group, head_dim) and the page's key bounds kmin, kmax (head_dim).
float page_score_bound_ref(const float * q, int32_t group, int32_t head_dim, const float * kmin, const float * kmax);

// Summaries as sequences keep them: F16, the min rounded down and the max
// rounded up (fp16_floor / fp16_ceil), so the bound stays an upper bound at
// half the RAM (and half the bytes a decode step reads to score every page).
uint16_t fp16_floor(float x);  // the largest F16 <= x (x not NaN)
uint16_t fp16_ceil(float x);   // the smallest F16 >= x
void page_key_bounds_f16(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                         int32_t n, uint16_t * kmin, uint16_t * kmax);
// page_score_bound_ref over F16 bounds, widened to F32: one page's bound as
// page_score_bounds_f16 below computes many.
float page_score_bound_f16_ref(const float * q, int32_t group, int32_t head_dim, const uint16_t * kmin, const uint16_t * kmax);

// The bounds of n pages at once, their F16 summaries stored as sequences keep
// them: in tiles of SUMMARY_TILE pages, each tile (2, head_dim, SUMMARY_TILE)
// = the tile's pages' kmin of channel 0, 1, ..., then their kmax (so a tile is
// one contiguous stream: summary_index). out[c] = max over g < group of
//   sum_d q[g][d] * (q[g][d] >= 0 ? kmax[d] : kmin[d])
// (the same bound: for a min below the max, that term is the larger of the
// two products). A head whose sum is NaN (an infinite bound times a zero
// query value) counts as +inf, so such a page is always a candidate. Pages run
// in the lanes of vectors, each summary vector serving every head of the
// group. The _ref twin computes each page in double; the two differ by float
// rounding only. Columns at or past n are never read.
constexpr int32_t SUMMARY_TILE = 32;
// Index of page c's kmin (kind 0) or kmax (kind 1) of channel d.
inline size_t summary_index(int32_t head_dim, int64_t c, int32_t kind, int32_t d) {
    return ((size_t(c / SUMMARY_TILE) * 2 + size_t(kind)) * size_t(head_dim) + size_t(d)) * SUMMARY_TILE + size_t(c % SUMMARY_TILE);
}
void page_score_bounds_f16    (const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                               float * out);
void page_score_bounds_f16_ref(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                               float * out);

} // namespace gloas
