// Eviction policies of the K/V store (see policy.h for what each one does).
//
// Every policy keeps, per resident slot, the statistics it was told about
// (page_info) and one or more ordered sets of its resident slots, front = next
// victim. An ordered set rather than a list lets a page re-enter its order at
// the right place (a compressed page, a rebuilt page) in O(log n); choose()
// walks a set from the front and skips the slots that are not evictable without
// moving them, so its cost is O(log n) plus the number of pages in use ahead of
// the victim.
//
// Orders are keyed on the store's logical clock with an internal sequence
// number as tie-break, so an order rebuilt from persisted page_stats is the
// order the live policy had (the store's clock increases on every access).
#include "kvcache/policy.h"

#include "base/error.h"
#include "base/names.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <set>
#include <tuple>
#include <unordered_map>

namespace gloas {

namespace {
constexpr enum_name<evict_policy> POLICY_NAMES[] = {
    {evict_policy::LRU, "lru"},           {evict_policy::LFU, "lfu"},
    {evict_policy::FIFO, "fifo"},         {evict_policy::ADAPTIVE, "adaptive"},
    {evict_policy::COMPRESSED, "compressed"},
};
} // namespace

const char * evict_policy_name(evict_policy p) { return name_of(POLICY_NAMES, p); }
bool evict_policy_from_name(const char * name, evict_policy * out) { return value_of(POLICY_NAMES, name, out); }

namespace {

// What a policy knows about one resident page.
struct page_info {
    uint64_t hash = 0;
    size_t   bytes = 0;
    uint64_t last_access = 0;
    uint64_t n_access = 1;
    uint64_t inserted = 0;
    uint64_t seq = 0;       // tie-break of last_access: order of the last insert/access
    uint64_t ins_seq = 0;   // tie-break of inserted: order of insertion
    bool     compressed = false;
    bool     frequent = false;  // ADAPTIVE: in T2 (seen twice or more), else T1
};

// A slot's place in an order: (a, b, c) compared lexicographically, then slot.
struct order_key {
    uint64_t a = 0, b = 0, c = 0;
    int64_t  slot = -1;
    bool operator<(const order_key & o) const {
        return std::tie(a, b, c, slot) < std::tie(o.a, o.b, o.c, o.slot);
    }
};
using order_set = std::set<order_key>;

order_key recency_key(int64_t slot, const page_info & p) { return {p.last_access, p.seq, 0, slot}; }
order_key frequency_key(int64_t slot, const page_info & p) { return {p.n_access, p.last_access, p.seq, slot}; }
order_key insertion_key(int64_t slot, const page_info & p) { return {p.inserted, p.ins_seq, 0, slot}; }

// The first slot of `s` (front = next victim) that is evictable, or -1.
int64_t first_evictable(const order_set & s, const std::function<bool(int64_t)> & evictable) {
    for (const order_key & k : s) {
        if (!evictable || evictable(k.slot)) return k.slot;
    }
    return -1;
}

// Bookkeeping shared by all policies: the page_info of each resident slot and
// the event flow; a policy places slots in its orders with link() / unlink().
// Events for slots the policy does not know are ignored (the store may report
// pages it found invalid before the policy learned them).
class policy_base : public eviction_policy {
public:
    void on_insert(const page_stats & p, uint64_t now) final {
        GLOAS_ASSERT(p.slot >= 0);
        auto it = pages_.find(p.slot);
        if (it != pages_.end()) {  // re-used slot without on_remove: forget the old page
            unlink(p.slot, it->second);
            pages_.erase(it);
        }
        page_info info;
        info.hash = p.hash;
        info.bytes = p.bytes;
        info.last_access = now;
        info.n_access = std::max<uint64_t>(p.n_access, 1);
        info.inserted = now;
        info.seq = ++seq_;
        info.ins_seq = info.seq;
        info.compressed = p.compressed;
        info.frequent = info.n_access >= 2;
        inserting(info);
        page_info & stored = pages_[p.slot];
        stored = info;
        link(p.slot, stored);
    }

    void on_access(int64_t slot, uint64_t now) final {
        auto it = pages_.find(slot);
        if (it == pages_.end()) return;
        page_info & info = it->second;
        unlink(slot, info);
        info.last_access = std::max(info.last_access, now);
        info.n_access += 1;
        info.seq = ++seq_;
        info.frequent = true;
        link(slot, info);
    }

    void on_remove(int64_t slot) final {
        auto it = pages_.find(slot);
        if (it == pages_.end()) return;
        unlink(slot, it->second);
        removed(it->second);
        pages_.erase(it);
    }

    void on_compress(int64_t slot, size_t bytes) final {
        auto it = pages_.find(slot);
        if (it == pages_.end()) return;
        page_info & info = it->second;
        unlink(slot, info);
        compressing(info, bytes);
        info.bytes = bytes;
        info.compressed = true;
        link(slot, info);
    }

    void rebuild(const std::vector<page_stats> & pages) final {
        clear();
        pages_.clear();
        std::vector<const page_stats *> order;
        order.reserve(pages.size());
        for (const page_stats & p : pages) {
            if (p.slot >= 0) order.push_back(&p);
        }
        // Insertion order, then recency order: each gets its own tie-break sequence.
        std::sort(order.begin(), order.end(), [](const page_stats * x, const page_stats * y) {
            return std::tie(x->inserted, x->slot) < std::tie(y->inserted, y->slot);
        });
        seq_ = 0;
        for (const page_stats * p : order) {
            page_info & info = pages_[p->slot];  // a duplicate slot keeps its last entry
            info.hash = p->hash;
            info.bytes = p->bytes;
            info.last_access = p->last_access;
            info.n_access = std::max<uint64_t>(p->n_access, 1);
            info.inserted = p->inserted;
            info.ins_seq = ++seq_;
            info.compressed = p->compressed;
            info.frequent = info.n_access >= 2;
        }
        std::stable_sort(order.begin(), order.end(), [](const page_stats * x, const page_stats * y) {
            return x->last_access < y->last_access;
        });
        for (const page_stats * p : order) pages_[p->slot].seq = ++seq_;
        for (auto & [slot, info] : pages_) link(slot, info);
    }

protected:
    // Adds / removes a resident slot to / from the policy's orders.
    virtual void link(int64_t slot, const page_info & info) = 0;
    virtual void unlink(int64_t slot, const page_info & info) = 0;
    // Drops every order (rebuild).
    virtual void clear() = 0;
    // Hooks: a page is about to be inserted (ghost hits), a resident page left
    // (ghosts), a page is about to be compressed to `bytes`.
    virtual void inserting(page_info &) {}
    virtual void removed(const page_info &) {}
    virtual void compressing(const page_info &, size_t) {}

    std::unordered_map<int64_t, page_info> pages_;
    uint64_t seq_ = 0;
};

// LRU, LFU and FIFO: one order each.
class single_order_policy final : public policy_base {
public:
    explicit single_order_policy(evict_policy kind) : kind_(kind) {}
    evict_policy kind() const override { return kind_; }

    eviction choose(const std::function<bool(int64_t)> & evictable) override {
        return {first_evictable(order_, evictable), evict_action::DROP};
    }

protected:
    order_key key(int64_t slot, const page_info & info) const {
        switch (kind_) {
            case evict_policy::LFU:  return frequency_key(slot, info);
            case evict_policy::FIFO: return insertion_key(slot, info);
            default:                 return recency_key(slot, info);
        }
    }
    void link(int64_t slot, const page_info & info) override { order_.insert(key(slot, info)); }
    void unlink(int64_t slot, const page_info & info) override { order_.erase(key(slot, info)); }
    void clear() override { order_.clear(); }

private:
    evict_policy kind_;
    order_set order_;
};

// ADAPTIVE: ARC (Megiddo & Modha, FAST 2003) with sizes in bytes.
//
//   T1  resident pages seen once, LRU order      B1  ghosts evicted from T1
//   T2  resident pages seen twice or more        B2  ghosts evicted from T2
//   p   target bytes of T1, 0 <= p <= c (c = capacity)
//
// A ghost is (hash, bytes) of a page that left the store; re-inserting the same
// hash is a ghost hit: in B1 it grows p by the page's size (recency would have
// kept it), in B2 it shrinks p by it (frequency would have kept it), and the
// page enters T2. choose() takes the LRU of T1 when T1 holds more than p
// bytes (or T2 has nothing evictable), else the LRU of T2. Ghost lists are
// bounded as in ARC: |T1| + |B1| <= c and |T1| + |T2| + |B1| + |B2| <= 2c, in
// bytes, dropping the oldest ghost of B1 for the first bound and of B2 for the
// second.
//
// ARC adapts p on a miss before it picks a victim: a store that reports the
// miss with on_miss() gets that; otherwise p adapts in on_insert, after the
// victims for that page were chosen.
class adaptive_policy final : public policy_base {
public:
    explicit adaptive_policy(size_t capacity) : c_(double(capacity)) {}
    evict_policy kind() const override { return evict_policy::ADAPTIVE; }

    void on_miss(uint64_t hash) override {
        auto it = ghosts_.find(hash);
        pending_b2_ = false;
        if (it == ghosts_.end()) return;
        if (!it->second.adapted) adapt(it->second, it->second.bytes);
        it->second.adapted = true;
        pending_b2_ = it->second.in_b2;
    }

    eviction choose(const std::function<bool(int64_t)> & evictable) override {
        // ARC's REPLACE: T1 when it is over target (or at target and the page
        // coming in is a B2 ghost), or when T2 is empty.
        const double t1 = double(t1_bytes_);
        const bool t1_first = t1_bytes_ > 0 && (t1 > p_ || (pending_b2_ && t1 >= p_) || t2_.empty());
        const order_set & a = t1_first ? t1_ : t2_;
        const order_set & b = t1_first ? t2_ : t1_;
        int64_t s = first_evictable(a, evictable);
        if (s < 0) s = first_evictable(b, evictable);
        return {s, evict_action::DROP};
    }

protected:
    void link(int64_t slot, const page_info & info) override {
        (info.frequent ? t2_ : t1_).insert(recency_key(slot, info));
        (info.frequent ? t2_bytes_ : t1_bytes_) += info.bytes;
    }
    void unlink(int64_t slot, const page_info & info) override {
        (info.frequent ? t2_ : t1_).erase(recency_key(slot, info));
        size_t & total = info.frequent ? t2_bytes_ : t1_bytes_;
        GLOAS_ASSERT(total >= info.bytes);
        total -= info.bytes;
    }
    void clear() override {
        t1_.clear();
        t2_.clear();
        t1_bytes_ = t2_bytes_ = 0;
        b1_.clear();
        b2_.clear();
        ghosts_.clear();
        b1_bytes_ = b2_bytes_ = 0;
        p_ = 0.0;
        pending_b2_ = false;
    }

    void inserting(page_info & info) override {
        pending_b2_ = false;
        auto it = ghosts_.find(info.hash);
        if (it != ghosts_.end()) {
            if (!it->second.adapted) adapt(it->second, info.bytes);
            forget_ghost(it);
            info.frequent = true;
        }
        trim_ghosts(info.frequent ? 0 : info.bytes, info.bytes);
    }

    void removed(const page_info & info) override {
        auto old = ghosts_.find(info.hash);
        if (old != ghosts_.end()) forget_ghost(old);
        std::list<uint64_t> & list = info.frequent ? b2_ : b1_;
        list.push_back(info.hash);
        ghosts_[info.hash] = ghost{std::prev(list.end()), info.bytes, info.frequent};
        (info.frequent ? b2_bytes_ : b1_bytes_) += info.bytes;
        trim_ghosts(0, 0);
    }

private:
    struct ghost {
        std::list<uint64_t>::iterator at;
        size_t bytes = 0;
        bool in_b2 = false;
        bool adapted = false;  // on_miss already moved p for this hit
    };

    // A ghost hit of a page of `bytes`: in B1 p grows by the page's size, in
    // B2 it shrinks by it. (ARC scales the step by max(1, |B2| / |B1|) and
    // max(1, |B1| / |B2|); on the gloas-kv-trace workload, where |T1| + |B1|
    // <= c keeps B1 much smaller than B2, that overweights B1 hits and loses
    // 0.3-0.9 points of hit rate to LRU at large capacities, which unit steps
    // do not.)
    void adapt(const ghost & g, size_t bytes) {
        const double size = double(std::max<size_t>(bytes, 1));
        p_ = g.in_b2 ? std::max(0.0, p_ - size) : std::min(c_, p_ + size);
    }

    void forget_ghost(std::unordered_map<uint64_t, ghost>::iterator it) {
        const ghost & g = it->second;
        (g.in_b2 ? b2_ : b1_).erase(g.at);
        size_t & total = g.in_b2 ? b2_bytes_ : b1_bytes_;
        total -= std::min(total, g.bytes);
        ghosts_.erase(it);
    }
    void pop_ghost(bool from_b2) {
        std::list<uint64_t> & list = from_b2 ? b2_ : b1_;
        forget_ghost(ghosts_.find(list.front()));
    }
    // Keeps |T1| + |B1| <= c and |T1| + |T2| + |B1| + |B2| <= 2c (in bytes),
    // counting the bytes of a page about to enter T1 (in_t1) or either list (in).
    void trim_ghosts(size_t in_t1, size_t in) {
        while (!b1_.empty() && double(t1_bytes_ + b1_bytes_ + in_t1) > c_) pop_ghost(false);
        while (!(b1_.empty() && b2_.empty()) &&
               double(t1_bytes_ + t2_bytes_ + b1_bytes_ + b2_bytes_ + in) > 2.0 * c_) {
            pop_ghost(!b2_.empty());
        }
    }

    double c_;
    double p_ = 0.0;
    bool pending_b2_ = false;  // the page being made room for is a B2 ghost
    order_set t1_, t2_;
    size_t t1_bytes_ = 0, t2_bytes_ = 0;
    std::list<uint64_t> b1_, b2_;  // front = least recently evicted
    size_t b1_bytes_ = 0, b2_bytes_ = 0;
    std::unordered_map<uint64_t, ghost> ghosts_;
};

// COMPRESSED: full-precision pages and compressed pages in two LRU orders.
//
// choose():
//   1. compressed pages hold more than share * capacity: DROP the LRU compressed page;
//   2. else the LRU full-precision page: COMPRESS it if its compressed size
//      (estimated from the last compression's ratio, Q8_0 -> Q4_0 until then)
//      still fits in the share; if not, DROP the LRU compressed page, or, if
//      there is none to drop, DROP the full-precision page itself;
//   3. no full-precision page evictable: DROP the LRU compressed page.
class compressed_policy final : public policy_base {
public:
    compressed_policy(size_t capacity, double share)
        : limit_(std::max(0.0, std::min(1.0, share)) * double(capacity)) {}
    evict_policy kind() const override { return evict_policy::COMPRESSED; }

    eviction choose(const std::function<bool(int64_t)> & evictable) override {
        const int64_t c = first_evictable(compressed_, evictable);
        if (c >= 0 && double(compressed_bytes_) > limit_) return {c, evict_action::DROP};
        const int64_t f = first_evictable(full_, evictable);
        if (f >= 0) {
            const double est = double(pages_.at(f).bytes) * ratio_;
            if (double(compressed_bytes_) + est <= limit_) return {f, evict_action::COMPRESS};
            if (c >= 0) return {c, evict_action::DROP};
            return {f, evict_action::DROP};
        }
        return {c, evict_action::DROP};
    }

protected:
    void link(int64_t slot, const page_info & info) override {
        (info.compressed ? compressed_ : full_).insert(recency_key(slot, info));
        if (info.compressed) compressed_bytes_ += info.bytes;
    }
    void unlink(int64_t slot, const page_info & info) override {
        (info.compressed ? compressed_ : full_).erase(recency_key(slot, info));
        if (info.compressed) {
            GLOAS_ASSERT(compressed_bytes_ >= info.bytes);
            compressed_bytes_ -= info.bytes;
        }
    }
    void clear() override {
        full_.clear();
        compressed_.clear();
        compressed_bytes_ = 0;
    }
    void compressing(const page_info & info, size_t bytes) override {
        if (!info.compressed && info.bytes > 0 && bytes > 0 && bytes <= info.bytes) {
            ratio_ = double(bytes) / double(info.bytes);
        }
    }

private:
    double limit_;
    double ratio_ = 18.0 / 34.0;  // Q4_0 / Q8_0 block bytes
    order_set full_, compressed_;
    size_t compressed_bytes_ = 0;
};

} // namespace

std::unique_ptr<eviction_policy> make_eviction_policy(evict_policy p, size_t capacity_bytes,
                                                      double compressed_share) {
    switch (p) {
        case evict_policy::LRU:
        case evict_policy::LFU:
        case evict_policy::FIFO:
            return std::make_unique<single_order_policy>(p);
        case evict_policy::ADAPTIVE:
            return std::make_unique<adaptive_policy>(capacity_bytes);
        case evict_policy::COMPRESSED:
            return std::make_unique<compressed_policy>(capacity_bytes, compressed_share);
    }
    throw error(format("kvcache/policy.cpp: unknown eviction policy %d", int(p)));
}

} // namespace gloas
