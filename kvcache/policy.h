// Eviction policies of the K/V store.
//
// The store keeps pages in slots; when the bytes of its pages would exceed its
// capacity it asks the policy for victims among the pages no sequence is using.
// Policies see slots, page sizes and accesses, nothing else:
//
//   LRU        least recently used first
//   LFU        least frequently used first (ties: least recently used)
//   FIFO       oldest inserted first
//   ADAPTIVE   ARC-like: a recency list (seen once) and a frequency list (seen
//              twice or more), with ghost lists of recently evicted pages whose
//              hits move the balance between the two
//   COMPRESSED LRU order, but a full-precision page is first compressed (the
//              store re-quantizes it, Q8_0 -> Q4_0) and only a compressed page
//              is dropped; compressed pages hold at most `compressed_share` of
//              the capacity
//
// Statistics (last access, access count, insertion order) are persisted by the
// store in its slot table, so a policy can be rebuilt when a store is reopened
// or another process changed it (rebuild()).
//
// A policy is not thread-safe: the store serializes its calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace gloas {

enum class evict_policy { LRU, LFU, FIFO, ADAPTIVE, COMPRESSED };
const char * evict_policy_name(evict_policy p);
bool evict_policy_from_name(const char * name, evict_policy * out);  // "lru", "lfu", ...

struct page_stats {
    int64_t  slot = -1;
    uint64_t hash = 0;          // prefix hash of the page (ghost lists key on it)
    size_t   bytes = 0;         // bytes the page occupies now
    uint64_t last_access = 0;   // logical clock of the last access
    uint64_t n_access = 0;      // accesses since insertion (insertion counts as 1)
    uint64_t inserted = 0;      // logical clock at insertion
    bool     compressed = false;
};

// What to do with a victim.
enum class evict_action { DROP, COMPRESS };
struct eviction {
    int64_t slot = -1;          // -1: nothing evictable
    evict_action action = evict_action::DROP;
};

class eviction_policy {
public:
    virtual ~eviction_policy() = default;
    virtual evict_policy kind() const = 0;

    // `now` is the store's logical clock (it increases on every access).
    // Optional, before the choose() calls that make room for a missing page:
    // the hash of the page about to be inserted. ADAPTIVE adapts its balance
    // here, as ARC does before it picks a victim (without the call it adapts
    // in on_insert, one insertion later); the other policies ignore it.
    virtual void on_miss(uint64_t hash) {}
    virtual void on_insert(const page_stats & p, uint64_t now) = 0;
    virtual void on_access(int64_t slot, uint64_t now) = 0;
    // The page was dropped (evicted here or elsewhere, or found invalid).
    virtual void on_remove(int64_t slot) = 0;
    // The store compressed the page to `bytes`.
    virtual void on_compress(int64_t slot, size_t bytes) = 0;
    // Forgets everything and re-learns the resident pages from persisted stats.
    virtual void rebuild(const std::vector<page_stats> & pages) = 0;

    // The next victim among resident pages for which evictable(slot) is true
    // (pages in use are not). The caller applies the action and then reports it
    // with on_remove / on_compress.
    virtual eviction choose(const std::function<bool(int64_t)> & evictable) = 0;
};

// capacity_bytes: the store's capacity (ADAPTIVE sizes its ghost lists from it,
// COMPRESSED its compressed share).
std::unique_ptr<eviction_policy> make_eviction_policy(evict_policy p, size_t capacity_bytes,
                                                      double compressed_share = 0.3);

} // namespace gloas
