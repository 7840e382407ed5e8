// The merge loop both tokenizers share (internal to decoder/): symbols are
// runs of bytes linked to their live neighbours; a heap holds candidate
// merges of adjacent symbols, best first by the tokenizer's own order (the
// SentencePiece score, or the BPE merge rank). Each step takes the best
// candidate, skips it if an earlier merge made it stale, joins the right
// symbol into the left one and offers the new symbol's two neighbours.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace gloas::detail {

struct merge_symbol {
    int32_t prev, next;  // -1 at the ends
    uint32_t off;        // start in the text
    uint32_t n;          // length in bytes; 0 once merged into its left neighbour
};

// Bigram: {priority, int32_t left, right, uint32_t size}, `size` being the two
// symbols' combined length when queued (so a stale entry is recognised);
// Order: the heap's comparison (the best candidate on top). heap holds the
// seeded candidates (not yet a heap); try_add(l, r) queues a candidate with
// std::push_heap, or not at all.
template <class Bigram, class Order, class TryAdd>
void merge_bigrams(std::vector<merge_symbol> & sym, std::vector<Bigram> & heap, TryAdd && try_add) {
    std::make_heap(heap.begin(), heap.end(), Order{});
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), Order{});
        const Bigram bg = heap.back();
        heap.pop_back();
        merge_symbol & l = sym[size_t(bg.left)];
        merge_symbol & r = sym[size_t(bg.right)];
        if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size) continue;  // stale
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) sym[size_t(r.next)].prev = bg.left;
        try_add(l.prev, bg.left);
        try_add(bg.left, l.next);
    }
}

} // namespace gloas::detail
