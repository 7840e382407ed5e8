#include "kvcache/kv-store.h"

#include "kvcache/kv-folder.h"
#include "base/error.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

namespace gloas {

namespace {

// Slots in a new page file's table: enough for the capacity, at least 64Ki
// (the table is sparse, so unused entries cost address space only).
uint64_t table_slots(size_t capacity_bytes, size_t page_bytes) {
    const uint64_t pages = capacity_bytes / std::max<size_t>(page_bytes, 1) + 1;
    return std::max<uint64_t>(pages, uint64_t(1) << 16);
}

double steady_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace

uint64_t page_hash(uint64_t prev, const int32_t * tokens, int32_t n) {
    return XXH64(tokens, size_t(n) * sizeof(int32_t), prev);
}

uint64_t tail_hash(uint64_t parent, const int32_t * tokens, int32_t n) {
    constexpr uint64_t TAIL_SALT = 0x676c6f6173746c31ull;  // "gloastl1"
    return XXH64(tokens, size_t(n) * sizeof(int32_t), parent ^ TAIL_SALT);
}

kv_store::kv_store(const kv_store_params & p, const page_geometry & g, uint64_t model_fingerprint)
    : p_(p), geom_(g) {
    if (!g.valid_for(p.kv_type))
        throw error(format("page size %d tokens is not a multiple of the %s block size %lld",
                           g.page_tokens, type_name(p.kv_type), (long long) traits(p.kv_type).blck_size));
    if (p.policy == evict_policy::COMPRESSED && !g.valid_for(type::Q4_0))
        throw error(format("page size %d tokens is not a multiple of the q4_0 block size %lld, which the compressed "
                           "policy re-quantizes evicted pages to", g.page_tokens, (long long) traits(type::Q4_0).blck_size));
    page_file::options o;
    o.dir = p.dir;
    o.fingerprint = model_fingerprint;
    o.kv_type = p.kv_type;
    o.geom = g;
    o.max_slots = table_slots(p.capacity_bytes, g.page_bytes(p.kv_type));
    o.model_name = p.model_name;
    o.model_file = p.model_file;
    std::string opened;
    try {
        file_ = page_file::open(o, &opened);
    } catch (const error & e) {
        // Whatever stops the folder from being used (it cannot be created,
        // written, locked or mapped, or it is full) leaves the pages in memory.
        if (o.dir.empty()) throw;
        const auto * u = dynamic_cast<const page_file_unusable *>(&e);
        if (p.dir_required && !(u && u->no_space))
            throw error(format("%s (--kv-dir none keeps the K/V pages in memory only)", e.what()));
        opened += format("%s; the K/V pages are kept in memory for this run\n", e.what());
        o.dir.clear();
        file_ = page_file::open(o, &opened);
    }
    for (size_t i = 0; i < opened.size();) {
        const size_t e = opened.find('\n', i);
        note(opened.substr(i, e == std::string::npos ? std::string::npos : e - i));
        i = e == std::string::npos ? opened.size() : e + 1;
    }
    if (file_->read_only())
        note(format("%s: the page file is read-only: its pages are reused, new pages are kept in memory",
                    file_->path().c_str()));
    policy_ = make_eviction_policy(p.policy, p.capacity_bytes, p.compressed_share);
    if (p.ram_bytes > 0) {
        // Recency of every slot, for the budget's trims only.
        n_stamps_ = file_->max_slots();
        stamps_.reset(new std::atomic<uint32_t>[size_t(n_stamps_)]);
        for (uint64_t i = 0; i < n_stamps_; ++i) stamps_[size_t(i)].store(0, std::memory_order_relaxed);
    }
    if (p.ram_bytes > 0 && !file_->persistent())
        note(format("K/V RAM budget %.1f MiB: the pages are in memory only (no page file), so the budget "
                    "bounds this process's mapping of them while the in-memory file still holds them all",
                    double(p.ram_bytes) / 1048576.0));
    {
        std::lock_guard<std::mutex> lk(mu_);
        file_->lock_table();
        sync_locked();
        file_->unlock_table();
    }
    writer_ = std::thread([this] { writer_loop(); });
}

kv_store::~kv_store() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    // Locks and mappings go with the file descriptor; pages stay in the file.
}

void kv_store::note(const std::string & line) {
    if (line.empty()) return;
    if (p_.on_notice) p_.on_notice(line);
    else notices_ += line + "\n";
}

std::string kv_store::take_notices() {
    std::lock_guard<std::mutex> lk(mu_);
    std::string s;
    s.swap(notices_);
    return s;
}

size_t kv_store::entry_bytes(const slot_entry & e) const { return slot_data_bytes(geom_, p_.kv_type, e); }

int32_t kv_store::tail_pieces(int32_t n, int32_t n_logits) const {
    const size_t bytes = sizeof(uint32_t) + size_t(n) * sizeof(float) * (1 + size_t(geom_.n_rows())) +
                         size_t(n_logits) * sizeof(float);
    return int32_t((bytes + page_bytes() - 1) / page_bytes());
}

void kv_store::changed_locked() {
    page_file_header & h = file_->header();
    h.generation++;
    seen_generation_ = h.generation;
}

bool kv_store::held_locked(int64_t slot) const {
    auto it = local_.find(slot);
    return it != local_.end() && it->second.refs > 0;
}

// Rebuilds the index, the free list, the byte count and the policy from the
// slot table when any process (this one included) changed it since we last looked.
void kv_store::sync_locked() {
    page_file_header & h = file_->header();
    if (h.generation == seen_generation_) return;
    index_.clear();
    tails_.clear();
    free_.clear();
    used_bytes_ = 0;
    std::vector<page_stats> pages;
    bool changed = false;
    const bool ro = file_->read_only();
    if (h.slots_used > file_->max_slots()) {
        note(format("%s: slot count %llu is past the table; clamped", file_->path().c_str(), (unsigned long long) h.slots_used));
        if (!ro) {
            h.slots_used = file_->max_slots();
            changed = true;
        }
    }
    const uint64_t n = std::min<uint64_t>(h.slots_used, file_->max_slots());
    uint64_t damaged = 0;
    for (uint64_t s = 0; s < n; ++s) {
        slot_entry & e = file_->entry(s);
        const bool ours = held_locked(int64_t(s));
        if (e.state == uint32_t(slot_state::FREE)) {
            // A slot this process still references is never handed out again
            // here, whatever the table says.
            if (!ours) free_.push_back(int64_t(s));
            continue;
        }
        if (e.state == uint32_t(slot_state::WRITING)) {
            // A writer that died leaves its slot WRITING with no lock on it.
            if (!ours && !ro && file_->try_lock_slot_exclusive(s)) {
                file_->unlock_slot(s);
                e.state = uint32_t(slot_state::FREE);
                free_.push_back(int64_t(s));
                changed = true;
                continue;
            }
            used_bytes_ += page_bytes();
            continue;
        }
        bool entry_ok;
        if (e.n_pieces > 0)  // a tail piece
            entry_ok = e.type == uint32_t(type::F32) && e.piece < e.n_pieces && e.n_tokens >= 1 &&
                       e.n_tokens < uint32_t(geom_.page_tokens) && e.n_pieces >= uint32_t(tail_pieces(int32_t(e.n_tokens)));
        else
            entry_ok = e.type < TYPE_ID_LIMIT && type_known(e.type) && geom_.valid_for(type(e.type)) &&
                       (e.type == uint32_t(p_.kv_type) || e.type == uint32_t(type::Q4_0)) &&
                       e.n_tokens == uint32_t(geom_.page_tokens);
        if (e.state != uint32_t(slot_state::READY) || !entry_ok || !file_->slot_in_file(s, entry_bytes(e)) ||
            index_.count(e.hash)) {
            // Not a state we wrote, or data past the end of a truncated file.
            damaged++;
            if (!ours && !ro) {
                e.state = uint32_t(slot_state::FREE);
                free_.push_back(int64_t(s));
                changed = true;
            }
            continue;
        }
        index_[e.hash] = int64_t(s);
        used_bytes_ += entry_bytes(e);
        page_stats ps;
        ps.slot = int64_t(s);
        ps.hash = e.hash;
        ps.bytes = entry_bytes(e);
        ps.last_access = e.last_access;
        ps.n_access = e.n_access;
        ps.inserted = e.inserted;
        ps.compressed = e.n_pieces == 0 && e.type != uint32_t(p_.kv_type);
        pages.push_back(ps);
    }
    // Tails: complete ones are listed; the pieces of an incomplete one (its
    // writer died between two pieces, a sibling was evicted) are freed.
    std::vector<int64_t> tail;
    uint64_t orphans = 0;
    for (size_t i = 0; i < pages.size();) {
        const int64_t s = pages[i].slot;
        const slot_entry & e = file_->entry(uint64_t(s));
        if (e.n_pieces == 0) { ++i; continue; }
        auto p0 = index_.find(e.hash - e.piece);
        if (p0 != index_.end() && tail_slots_locked(p0->second, tail)) {
            if (e.piece == 0) tails_.emplace(e.parent, s);
            ++i;
            continue;
        }
        orphans++;
        index_.erase(e.hash);
        used_bytes_ -= std::min(used_bytes_, entry_bytes(e));
        if (!ro && !held_locked(s)) {
            file_->entry(uint64_t(s)).state = uint32_t(slot_state::FREE);
            free_.push_back(s);
            changed = true;
        }
        pages[i] = pages.back();
        pages.pop_back();
    }
    (void) orphans;
    if (damaged > 0)
        note(format("page file %s: %llu of %llu slots damaged, dropped", file_->path().c_str(),
                    (unsigned long long) damaged, (unsigned long long) n));
    if (ro) free_.clear();  // nothing is written to a read-only file
    // Lowest slots first, so a growing store stays dense.
    std::reverse(free_.begin(), free_.end());
    policy_->rebuild(pages);
    if (changed) h.generation++;
    seen_generation_ = h.generation;
}

bool kv_store::verify(int64_t slot) {
    local_slot & ls = local_[slot];
    const slot_entry & e = file_->entry(uint64_t(slot));
    if (ls.verified && ls.verified_hash == e.hash && ls.verified_sum == e.checksum) return true;
    const uint64_t sum = page_checksum(file_->data(uint64_t(slot)), entry_bytes(e), e.hash);
    if (sum != e.checksum) return false;
    ls.verified = true;
    ls.verified_hash = e.hash;
    ls.verified_sum = e.checksum;
    return true;
}

bool kv_store::acquire(uint64_t hash, page_ref * out) { return acquire_chain(&hash, 1, out) == 1; }

size_t kv_store::acquire_chain(const uint64_t * hashes, size_t n, page_ref * out) {
    std::lock_guard<std::mutex> lk(mu_);
    file_->lock_table();
    sync_locked();
    page_file_header & h = file_->header();
    size_t got = 0;
    for (; got < n; ++got) {
        auto it = index_.find(hashes[got]);
        if (it == index_.end()) break;
        const int64_t s = it->second;
        slot_entry & e = file_->entry(uint64_t(s));
        if (e.n_pieces != 0 || e.state != uint32_t(slot_state::READY) || e.hash != hashes[got]) break;
        local_slot & ls = local_[s];
        if (ls.refs++ == 0) file_->lock_slot_shared(uint64_t(s));
        if (!file_->read_only()) {
            e.last_access = ++h.clock;
            e.n_access++;
        }
        policy_->on_access(s, e.last_access);
        out[got] = page_ref{s, file_->data(uint64_t(s)), type(e.type)};
    }
    // Read the chain ahead; verification below then finds most of it resident.
    for (size_t i = 0; i < got; ++i) file_->will_need(uint64_t(out[i].slot), geom_.page_bytes(out[i].t));
    size_t good = got;
    for (size_t i = 0; i < got; ++i) {
        const int64_t s = out[i].slot;
        if (i < good) {
            unsigned char vec[1] = {0};
            const uintptr_t a = reinterpret_cast<uintptr_t>(out[i].data) & ~uintptr_t(4095);
            if (::mincore(reinterpret_cast<void *>(a), 1, vec) == 0 && (vec[0] & 1)) m_.prefetch_resident++;
            if (!verify(s)) {
                note(format("%s: page in slot %lld failed its checksum; recomputing it", file_->path().c_str(), (long long) s));
                m_.pages_corrupt++;
                good = i;
                // Drop it for everyone: nobody may use it (a read-only file:
                // this process only).
                slot_entry & e = file_->entry(uint64_t(s));
                index_.erase(e.hash);
                policy_->on_remove(s);
                used_bytes_ -= std::min(used_bytes_, entry_bytes(e));
                if (!file_->read_only()) {
                    e.state = uint32_t(slot_state::FREE);
                    changed_locked();
                }
                local_[s].verified = false;
            }
        }
        if (i >= good) {
            local_slot & ls = local_[s];
            if (--ls.refs == 0) {
                file_->unlock_slot(uint64_t(s));
                if (file_->entry(uint64_t(s)).state == uint32_t(slot_state::FREE)) free_.push_back(s);
            }
        }
    }
    file_->unlock_table();
    return good;
}

void kv_store::release(int64_t slot) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!in_file(slot)) {
        auto m = memory_.find(slot);
        GLOAS_ASSERT(m != memory_.end() && m->second.refs > 0);
        if (--m->second.refs == 0) memory_.erase(m);
        return;
    }
    // A queued publish of this page must land before the page can be let go.
    cv_done_.wait(lk, [&] { return jobs_.empty() && busy_ == 0; });
    auto it = local_.find(slot);
    GLOAS_ASSERT(it != local_.end() && it->second.refs > 0);
    if (--it->second.refs > 0) return;
    file_->lock_table();
    slot_entry & e = file_->entry(uint64_t(slot));
    if (e.state == uint32_t(slot_state::WRITING)) {
        // A page never published (a duplicate of one published first): free it.
        e.state = uint32_t(slot_state::FREE);
        used_bytes_ -= std::min(used_bytes_, page_bytes());
        free_.push_back(slot);
        local_.erase(it);
        file_->dont_need(uint64_t(slot), page_bytes());
        changed_locked();
    }
    file_->unlock_slot(uint64_t(slot));
    file_->unlock_table();
}

void kv_store::drop_locked(int64_t slot, bool evicted) {
    slot_entry & e = file_->entry(uint64_t(slot));
    const size_t bytes = entry_bytes(e);
    index_.erase(e.hash);
    if (e.n_pieces > 0 && e.piece == 0) {
        for (auto r = tails_.equal_range(e.parent); r.first != r.second; ++r.first)
            if (r.first->second == slot) {
                tails_.erase(r.first);
                break;
            }
    }
    policy_->on_remove(slot);
    used_bytes_ -= std::min(used_bytes_, bytes);
    e.state = uint32_t(slot_state::FREE);
    free_.push_back(slot);
    local_.erase(slot);
    // Give the memory and the disk blocks back.
    file_->dont_need(uint64_t(slot), bytes);
    changed_locked();
    if (evicted) m_.pages_evicted++;
}

bool kv_store::tail_slots_locked(int64_t slot0, std::vector<int64_t> & out) {
    out.clear();
    const slot_entry e0 = file_->entry(uint64_t(slot0));
    if (e0.state != uint32_t(slot_state::READY) || e0.n_pieces == 0 || e0.piece != 0) return false;
    for (uint32_t i = 0; i < e0.n_pieces; ++i) {
        auto it = index_.find(e0.hash + i);
        if (it == index_.end()) return false;
        const slot_entry & e = file_->entry(uint64_t(it->second));
        if (e.state != uint32_t(slot_state::READY) || e.n_pieces != e0.n_pieces || e.piece != i ||
            e.n_tokens != e0.n_tokens || e.parent != e0.parent)
            return false;
        out.push_back(it->second);
    }
    return true;
}

void kv_store::drop_tail_locked(int64_t slot, const std::function<bool(int64_t)> & may, bool evicted) {
    const slot_entry e = file_->entry(uint64_t(slot));
    const uint64_t th = e.hash - e.piece;
    for (uint32_t i = 0; i < e.n_pieces; ++i) {
        auto it = index_.find(th + i);
        if (it == index_.end()) continue;
        const int64_t s = it->second;
        const slot_entry & x = file_->entry(uint64_t(s));
        if (x.n_pieces == e.n_pieces && x.piece == i && (s == slot || may(s))) drop_locked(s, evicted);
    }
}

void kv_store::free_claimed_locked(int64_t slot) {
    slot_entry & e = file_->entry(uint64_t(slot));
    e.state = uint32_t(slot_state::FREE);
    used_bytes_ -= std::min(used_bytes_, page_bytes());
    free_.push_back(slot);
    local_.erase(slot);
    file_->unlock_slot(uint64_t(slot));
    file_->dont_need(uint64_t(slot), page_bytes());
    changed_locked();
}

void kv_store::compress_locked(int64_t slot) {
    slot_entry & e = file_->entry(uint64_t(slot));
    const type from = type(e.type);
    const size_t before = entry_bytes(e);
    if (!file_->ensure_slot(uint64_t(slot))) {  // a page left sparse (a copied file) on a full disk
        drop_locked(slot);
        return;
    }
    std::vector<uint8_t> tmp(geom_.page_bytes(type::Q4_0));
    page_convert(geom_, file_->data(uint64_t(slot)), from, type::Q4_0, tmp.data());
    // The entry is not READY while its data changes, so a crash leaves no torn page.
    e.state = uint32_t(slot_state::WRITING);
    std::memcpy(file_->data(uint64_t(slot)), tmp.data(), tmp.size());
    e.type = uint32_t(type::Q4_0);
    e.checksum = page_checksum(tmp.data(), tmp.size(), e.hash);
    e.state = uint32_t(slot_state::READY);
    local_.erase(slot);
    file_->dont_need(uint64_t(slot), before);
    used_bytes_ -= before - tmp.size();
    policy_->on_compress(slot, tmp.size());
    changed_locked();
    m_.pages_compressed++;
}

// Keeps the folder within capacity: measures the rest of it (once a second),
// and when this store's pages and the rest would pass the bound, removes
// set-aside files and page files nobody has open.
void kv_store::fit_folder_locked(size_t need_bytes) {
    if (!file_->persistent() || file_->read_only()) return;
    const double now = steady_seconds();
    if (now - others_measured_ >= 1.0) {
        others_bytes_ = kv_folder_bytes(p_.dir, file_->path());
        others_measured_ = now;
    }
    if (used_bytes_ + need_bytes + others_bytes_ <= p_.capacity_bytes || now - others_stuck_ < 1.0) return;
    const uint64_t want = used_bytes_ + need_bytes + others_bytes_ - p_.capacity_bytes;
    if (kv_folder_make_room(p_.dir, file_->path(), want) > 0) others_bytes_ = kv_folder_bytes(p_.dir, file_->path());
    else others_stuck_ = now;  // nothing could go: try again in a second, meanwhile evict our own
}

// Evicts until a page of need_bytes fits the capacity and the table has a
// slot for it. False when that cannot be: the pages left are in use.
bool kv_store::make_room_locked(size_t need_bytes) {
    auto evictable = [&](int64_t s) {
        if (held_locked(s)) return false;
        // Another process using it holds a shared lock on its entry.
        if (!file_->try_lock_slot_exclusive(uint64_t(s))) return false;
        file_->unlock_slot(uint64_t(s));
        return true;
    };
    fit_folder_locked(need_bytes);
    const bool table_full = file_->header().slots_used >= file_->max_slots();
    while (used_bytes_ + need_bytes + others_bytes_ > p_.capacity_bytes || (table_full && free_.empty())) {
        const eviction ev = policy_->choose(evictable);
        if (ev.slot < 0) return false;  // nothing can go: pages in use are never evicted
        const slot_entry & e = file_->entry(uint64_t(ev.slot));
        if (e.n_pieces > 0)  // a tail goes whole (never compressed)
            drop_tail_locked(ev.slot, evictable, true);
        else if (ev.action == evict_action::COMPRESS && e.type != uint32_t(type::Q4_0))
            compress_locked(ev.slot);
        else
            drop_locked(ev.slot);
    }
    return true;
}

// A new page in memory, for when the page file cannot take it (`why`: the
// first time, the notice says so).
page_ref kv_store::memory_page_locked(const std::string & why) {
    if (!warned_memory_ && !why.empty()) note(why);
    warned_memory_ = true;
    const size_t bytes = (page_bytes() + 63) / 64 * 64;
    memory_page mp;
    mp.data.reset(static_cast<uint8_t *>(std::aligned_alloc(64, bytes)));
    if (!mp.data) throw error(format("cannot allocate %zu bytes for a K/V page", bytes));
    mp.refs = 1;
    const int64_t s = next_memory_++;
    uint8_t * d = mp.data.get();
    memory_.emplace(s, std::move(mp));
    m_.pages_in_memory++;
    return page_ref{s, d, p_.kv_type};
}

page_ref kv_store::begin_page() {
    std::lock_guard<std::mutex> lk(mu_);
    if (file_->read_only()) return memory_page_locked("");  // said when the file was opened
    file_->lock_table();
    try {
        sync_locked();
        if (!make_room_locked(page_bytes())) {
            const bool table_full = file_->header().slots_used >= file_->max_slots() && free_.empty();
            file_->unlock_table();
            if (table_full)
                return memory_page_locked(format("%s: every one of its %llu slots is in use; new K/V pages are kept "
                                                 "in memory for the rest of this run", file_->path().c_str(),
                                                 (unsigned long long) file_->max_slots()));
            const double mib = 1048576.0;
            if (!file_->persistent())
                return memory_page_locked(format("the K/V store is at its capacity (%.1f MiB) with every page in use; "
                                                 "new pages are kept apart for the rest of this run",
                                                 double(p_.capacity_bytes) / mib));
            return memory_page_locked(format("%s: the K/V folder is at its capacity (%.1f MiB: %.1f MiB of pages in "
                                             "use here, %.1f MiB of other page files); new pages are kept in memory "
                                             "for the rest of this run", file_->path().c_str(),
                                             double(p_.capacity_bytes) / mib, double(used_bytes_) / mib,
                                             double(others_bytes_) / mib));
        }
        // A slot another process claimed since our last sync is not FREE any more.
        int64_t s = -1;
        bool grown = false;
        page_file_header & h = file_->header();
        while (!free_.empty()) {
            const int64_t c = free_.back();
            free_.pop_back();
            // The slot lock is the open file's: one this process holds
            // already would be granted again, so its own slots are skipped.
            if (file_->entry(uint64_t(c)).state == uint32_t(slot_state::FREE) && !held_locked(c) &&
                file_->try_lock_slot_exclusive(uint64_t(c))) {
                s = c;
                break;
            }
        }
        if (s < 0 && h.slots_used < file_->max_slots() && file_->try_lock_slot_exclusive(h.slots_used)) {
            s = int64_t(h.slots_used);
            grown = true;
        }
        if (s < 0) {
            file_->unlock_table();
            return memory_page_locked(format("%s: no free slot in the page file; new K/V pages are kept in memory "
                                             "for the rest of this run", file_->path().c_str()));
        }
        // Blocks first: writing an unreserved page of a full disk through the
        // mapping would kill the process.
        if (!file_->ensure_slot(uint64_t(s))) {
            const int e = errno;
            if (!grown) free_.push_back(s);
            file_->unlock_slot(uint64_t(s));
            file_->unlock_table();
            return memory_page_locked(format("%s: cannot store more K/V pages (%s); new pages are kept in memory for "
                                             "the rest of this run, the stored ones stay valid", file_->path().c_str(),
                                             std::strerror(e)));
        }
        if (grown) h.slots_used++;
        slot_entry & e = file_->entry(uint64_t(s));
        std::memset(&e, 0, sizeof e);
        e.state = uint32_t(slot_state::WRITING);
        e.type = uint32_t(p_.kv_type);
        used_bytes_ += page_bytes();
        local_slot & ls = local_[s];
        ls.refs = 1;
        ls.verified = false;  // until it is published: this process's checksum then
        changed_locked();
        file_->unlock_table();
        return page_ref{s, file_->data(uint64_t(s)), p_.kv_type};
    } catch (...) {
        file_->unlock_table();
        throw;
    }
}

void kv_store::abandon(int64_t slot) {
    flush();
    std::lock_guard<std::mutex> lk(mu_);
    if (!in_file(slot)) {
        GLOAS_ASSERT(memory_.count(slot) == 1);
        memory_.erase(slot);
        return;
    }
    file_->lock_table();
    slot_entry & e = file_->entry(uint64_t(slot));
    GLOAS_ASSERT(e.state == uint32_t(slot_state::WRITING));
    free_claimed_locked(slot);
    file_->unlock_table();
}

void kv_store::publish(int64_t slot, uint64_t hash, uint64_t parent, int32_t n_tokens) {
    if (!in_file(slot)) return;  // a page kept in memory stays private to its sequence
    {
        std::lock_guard<std::mutex> lk(mu_);
        jobs_.push_back(job{slot, hash, parent, n_tokens});
    }
    cv_.notify_one();
}

void kv_store::flush() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_done_.wait(lk, [&] { return jobs_.empty() && busy_ == 0; });
}

void kv_store::writer_loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) {
            if (stop_) return;
            continue;
        }
        job j = jobs_.front();
        jobs_.pop_front();
        busy_++;
        lk.unlock();
        // The checksum reads the whole page: do it without the lock.
        const uint64_t sum = page_checksum(file_->data(uint64_t(j.slot)), page_bytes(), j.hash);
        lk.lock();
        file_->lock_table();
        sync_locked();
        slot_entry & e = file_->entry(uint64_t(j.slot));
        page_file_header & h = file_->header();
        auto dup = index_.find(j.hash);
        if (dup != index_.end() && dup->second != j.slot) {
            // Another sequence or process published the same page first: ours
            // stays private to the sequence that made it and is freed when released.
            e.hash = j.hash;
            e.parent = j.parent;
            e.n_tokens = uint32_t(j.n_tokens);
        } else {
            e.hash = j.hash;
            e.parent = j.parent;
            e.n_tokens = uint32_t(j.n_tokens);
            e.checksum = sum;
            e.inserted = e.last_access = ++h.clock;
            e.n_access = 1;
            e.state = uint32_t(slot_state::READY);  // last: the page is complete
            index_[j.hash] = j.slot;
            page_stats ps;
            ps.slot = j.slot;
            ps.hash = j.hash;
            ps.bytes = page_bytes();
            ps.last_access = ps.inserted = e.inserted;
            ps.n_access = 1;
            policy_->on_insert(ps, e.inserted);
            m_.pages_written++;
            // Our exclusive writer lock becomes a shared use lock.
            file_->lock_slot_shared(uint64_t(j.slot));
            local_slot & ls = local_[j.slot];
            ls.verified = true;  // written here
            ls.verified_hash = j.hash;
            ls.verified_sum = sum;
        }
        changed_locked();
        file_->unlock_table();
        if (p_.ram_bytes > 0 && file_->persistent()) {
            // Clean pages in the page cache are the warm tier the kernel may reclaim.
            lk.unlock();
            file_->start_writeback(uint64_t(j.slot), page_bytes());
            lk.lock();
        }
        busy_--;
        if (jobs_.empty() && busy_ == 0) cv_done_.notify_all();
    }
}

void kv_store::add_fixed_ram(size_t bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    fixed_ram_ += bytes;
}

size_t kv_store::resident_bytes() {
    std::lock_guard<std::mutex> lk(mu_);
    bool exact = false;
    size_t first = 0;
    const size_t n = resident_locked(&exact, &first);
    return exact ? n : file_->mapped_rss_bytes();
}

// Resident bytes of the header and the used part of the slot table, and of
// the used slots' data, each with the 64 KiB around it that the kernel's
// fault-around may map; present_ is left holding the flags of the second
// range, from OS page *first on. *exact: false when pagemap could not be read.
size_t kv_store::resident_locked(bool * exact, size_t * first) {
    const size_t os = page_file::os_page_bytes();
    const uint64_t n_slots = std::min<uint64_t>(file_->header().slots_used, file_->max_slots());
    const size_t data0 = file_->data_offset();
    const size_t table_end = std::min(data0, (size_t(file_->header().table_offset) + size_t(n_slots) * sizeof(slot_entry) +
                                              2 * 65536) / 65536 * 65536);
    const size_t begin = std::max(table_end, data0 > 65536 ? data0 - 65536 : size_t(0));
    size_t n = 0;
    *exact = file_->resident_pages(0, table_end, present_);
    for (uint8_t b : present_) n += b;
    *first = begin / os;
    *exact = file_->resident_pages(begin, data0 + size_t(n_slots) * file_->slot_stride(), present_) && *exact;
    for (uint8_t b : present_) n += b;
    return n * os;
}

void kv_store::trim() {
    if (p_.ram_bytes == 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    // Touches from here on belong to the next pass.
    epoch_.fetch_add(1, std::memory_order_relaxed);
    const size_t os = page_file::os_page_bytes();
    const size_t stride = file_->slot_stride();
    const size_t data0 = file_->data_offset();
    const uint64_t n_slots = std::min<uint64_t>(file_->header().slots_used, file_->max_slots());
    bool exact = false;
    size_t first = 0;  // OS page of present_[0]
    size_t resident = resident_locked(&exact, &first);
    if (!exact) resident = file_->mapped_rss_bytes();
    m_.resident_peak = std::max(m_.resident_peak, resident);
    const size_t budget = p_.ram_bytes;
    if (resident <= budget) return;

    // Slots being written (ours claimed and unpublished, or another
    // process's) keep their mapping, and so do the OS pages they share.
    auto writing = [&](uint64_t s) { return s < n_slots && file_->entry(s).state == uint32_t(slot_state::WRITING); };
    // OS pages [lo, hi) a slot's data overlaps.
    auto pages_of = [&](uint64_t s, size_t & lo, size_t & hi) {
        lo = (data0 + size_t(s) * stride) / os;
        hi = (data0 + size_t(s + 1) * stride + os - 1) / os;
    };
    candidates_.clear();
    for (uint64_t s = 0; s < n_slots; ++s) {
        if (writing(s)) continue;
        size_t lo, hi;
        pages_of(s, lo, hi);
        bool any = !exact;
        for (size_t i = lo; i < hi && i - first < present_.size() && !any; ++i) any = present_[i - first] != 0;
        if (any) candidates_.push_back({stamps_[size_t(s)].load(std::memory_order_relaxed), int64_t(s)});
    }
    // Least recently touched first; this pass's own pages last.
    std::sort(candidates_.begin(), candidates_.end(), [](const trim_candidate & a, const trim_candidate & b) {
        return a.stamp != b.stamp ? a.stamp < b.stamp : a.slot < b.slot;
    });
    size_t over = resident - budget;
    {
        // Slot-table pages past the used entries (mapped by fault-around
        // next to the first slots' data) hold nothing yet.
        const size_t unused = (size_t(file_->header().table_offset) + size_t(n_slots) * sizeof(slot_entry) + os - 1) / os * os;
        if (unused < data0) {
            file_->unmap_bytes(unused, data0 - unused);
            for (size_t i = std::max(first, unused / os); i < data0 / os && i - first < present_.size(); ++i) {
                over -= std::min(over, present_[i - first] * os);
                present_[i - first] = 0;
            }
        }
    }
    for (const trim_candidate & c : candidates_) {
        if (over == 0) break;
        const uint64_t s = uint64_t(c.slot);
        const bool keep_before = s > 0 && writing(s - 1);
        const bool keep_after = writing(s + 1);
        size_t lo, hi;
        pages_of(s, lo, hi);
        // Pages the unmapping covers: shared edge pages only when the neighbour allows.
        if (keep_before && (data0 + size_t(s) * stride) % os != 0) ++lo;
        if (keep_after && (data0 + size_t(s + 1) * stride) % os != 0) --hi;
        size_t freed = 0;
        if (exact) {
            for (size_t i = lo; i < hi && i - first < present_.size(); ++i) {
                freed += present_[i - first];
                present_[i - first] = 0;
            }
        } else {
            freed = hi > lo ? hi - lo : 0;
        }
        chosen_.push_back(c.slot);
        over -= std::min(over, freed * os);
    }
    // One madvise per run of adjacent slots: each call flushes the TLBs of
    // every thread of the process.
    std::sort(chosen_.begin(), chosen_.end());
    for (size_t i = 0; i < chosen_.size();) {
        size_t j = i + 1;
        while (j < chosen_.size() && chosen_[j] == chosen_[j - 1] + 1) ++j;
        const uint64_t a = uint64_t(chosen_[i]), n = uint64_t(j - i);
        file_->unmap_slots(a, n, a > 0 && writing(a - 1), writing(a + n));
        i = j;
    }
    m_.slots_unmapped += chosen_.size();
    chosen_.clear();
    m_.ram_trims++;
}

size_t kv_store::stored_bytes() {
    std::lock_guard<std::mutex> lk(mu_);
    return used_bytes_;
}

size_t kv_store::stored_pages() {
    std::lock_guard<std::mutex> lk(mu_);
    size_t n = 0;
    for (const auto & kv : index_) n += file_->entry(uint64_t(kv.second)).n_pieces == 0;
    return n;
}

size_t kv_store::stored_tails() {
    std::lock_guard<std::mutex> lk(mu_);
    return tails_.size();
}

bool kv_store::put_tail(uint64_t parent, const int32_t * tokens, int32_t n, const float * rows, size_t row_stride,
                        const float * logits, int32_t n_logits) {
    if (!p_.keep_tails || n <= 0 || n >= geom_.page_tokens || file_->read_only()) return false;
    if (!logits) n_logits = 0;
    const uint64_t th = tail_hash(parent, tokens, n);
    {
        std::lock_guard<std::mutex> lk(mu_);
        file_->lock_table();
        sync_locked();
        const bool have = index_.count(th) != 0;
        file_->unlock_table();
        if (have) return true;
    }
    const int32_t k = tail_pieces(n, n_logits);
    const size_t pb = page_bytes(), n_rows = size_t(geom_.n_rows());
    // Its bytes: the logits count, the token ids, each row's n values, the logits.
    std::vector<uint8_t> bytes(size_t(k) * pb, 0);
    const uint32_t nl = uint32_t(n_logits);
    std::memcpy(bytes.data(), &nl, sizeof nl);
    std::memcpy(bytes.data() + sizeof nl, tokens, size_t(n) * sizeof(int32_t));
    float * dst = reinterpret_cast<float *>(bytes.data() + sizeof nl + size_t(n) * sizeof(int32_t));
    for (size_t r = 0; r < n_rows; ++r) std::memcpy(dst + r * size_t(n), rows + r * row_stride, size_t(n) * sizeof(float));
    if (n_logits > 0) std::memcpy(dst + n_rows * size_t(n), logits, size_t(n_logits) * sizeof(float));
    // Slots for every piece, in the page file (a tail is never kept in memory).
    std::vector<page_ref> claimed;
    for (int32_t i = 0; i < k; ++i) {
        claimed.push_back(begin_page());
        if (!in_file(claimed.back().slot)) {
            for (const page_ref & c : claimed) abandon(c.slot);
            return false;
        }
    }
    // A tail's pieces go through the file, not the mapping: they never count
    // against this process's resident K/V (the RAM budget), and a full disk
    // is an error here, not a SIGBUS.
    std::vector<uint64_t> sums(static_cast<size_t>(k));
    for (int32_t i = 0; i < k; ++i) {
        const uint8_t * piece = bytes.data() + size_t(i) * pb;
        if (!pwrite_full(file_->fd(), piece, pb, slot_offset(claimed[size_t(i)].slot))) {
            for (const page_ref & c : claimed) abandon(c.slot);
            return false;
        }
        sums[size_t(i)] = page_checksum(piece, pb, th + uint64_t(i));
        if (p_.on_tail_step) p_.on_tail_step(i);
    }
    std::lock_guard<std::mutex> lk(mu_);
    file_->lock_table();
    sync_locked();
    page_file_header & h = file_->header();
    if (index_.count(th)) {
        // Another sequence or process stored it meanwhile.
        for (const page_ref & c : claimed) free_claimed_locked(c.slot);
    } else {
        // Tails of the same parent that this one extends serve nothing it
        // cannot, unless they hold the logits of their last token.
        std::vector<int64_t> extended, tail;
        std::vector<uint8_t> head;
        for (auto r = tails_.equal_range(parent); r.first != r.second; ++r.first) {
            const int64_t s0 = r.first->second;
            const slot_entry & e = file_->entry(uint64_t(s0));
            head.resize(sizeof(uint32_t) + size_t(e.n_tokens) * sizeof(int32_t));
            uint32_t has_logits = 1;
            if (e.n_tokens <= uint32_t(n) && tail_slots_locked(s0, tail) &&
                pread_full(file_->fd(), head.data(), head.size(), slot_offset(s0)) &&
                (std::memcpy(&has_logits, head.data(), sizeof has_logits), has_logits == 0) &&
                std::memcmp(head.data() + sizeof(uint32_t), tokens, size_t(e.n_tokens) * sizeof(int32_t)) == 0)
                extended.push_back(s0);
        }
        // Piece 0 last: a tail whose piece 0 is READY has every piece READY.
        for (int32_t i = k - 1; i >= 0; --i) {
            const int64_t s = claimed[size_t(i)].slot;
            slot_entry & e = file_->entry(uint64_t(s));
            e.hash = th + uint64_t(i);
            e.parent = parent;
            e.n_tokens = uint32_t(n);
            e.type = uint32_t(type::F32);
            e.piece = uint16_t(i);
            e.n_pieces = uint16_t(k);
            e.checksum = sums[size_t(i)];
            e.inserted = e.last_access = ++h.clock;
            e.n_access = 1;
            e.state = uint32_t(slot_state::READY);
            index_[e.hash] = s;
            page_stats ps;
            ps.slot = s;
            ps.hash = e.hash;
            ps.bytes = pb;
            ps.last_access = ps.inserted = e.inserted;
            ps.n_access = 1;
            policy_->on_insert(ps, e.inserted);
            if (p_.on_tail_step) p_.on_tail_step(2 * k - 1 - i);
        }
        for (const page_ref & c : claimed) {
            local_.erase(c.slot);
            file_->unlock_slot(uint64_t(c.slot));
        }
        tails_.emplace(parent, claimed[0].slot);
        auto unused = [&](int64_t s) {
            if (held_locked(s) || !file_->try_lock_slot_exclusive(uint64_t(s))) return false;
            file_->unlock_slot(uint64_t(s));
            return true;
        };
        for (const int64_t s0 : extended) drop_tail_locked(s0, unused, false);
        m_.tails_written++;
    }
    changed_locked();
    file_->unlock_table();
    if (p_.ram_bytes > 0 && file_->persistent())
        for (const page_ref & c : claimed) file_->start_writeback(uint64_t(c.slot), pb);
    return true;
}

int32_t kv_store::take_tail(uint64_t parent, const int32_t * tokens, int32_t n, float * rows, size_t row_stride,
                           float * logits, int32_t n_logits, bool * got_logits) {
    if (got_logits) *got_logits = false;
    if (!p_.keep_tails || n <= 0) return 0;
    std::lock_guard<std::mutex> lk(mu_);
    file_->lock_table();
    sync_locked();
    const size_t pb = page_bytes(), n_rows = size_t(geom_.n_rows());
    // The tail sharing the most leading tokens.
    std::vector<int64_t> slots;
    std::vector<int32_t> stored;
    int64_t best = -1;
    int32_t take = 0;
    for (auto r = tails_.equal_range(parent); r.first != r.second; ++r.first) {
        const int64_t s0 = r.first->second;
        if (!tail_slots_locked(s0, slots)) continue;
        const int32_t m = std::min(n, int32_t(file_->entry(uint64_t(s0)).n_tokens));
        stored.resize(size_t(m) + 1);
        if (!pread_full(file_->fd(), reinterpret_cast<uint8_t *>(stored.data()), (size_t(m) + 1) * sizeof(int32_t),
                      slot_offset(s0)))
            continue;
        int32_t same = 0;
        while (same < m && stored[size_t(same) + 1] == tokens[same]) ++same;
        // Ties: the tail ending there (its logits may be those wanted).
        const bool ends = same == int32_t(file_->entry(uint64_t(s0)).n_tokens);
        if (same > take || (same == take && same > 0 && ends)) {
            take = same;
            best = s0;
        }
    }
    if (best < 0) {
        file_->unlock_table();
        return 0;
    }
    tail_slots_locked(best, slots);
    const slot_entry e0 = file_->entry(uint64_t(best));
    // Every piece is verified; the copy verified is the copy used.
    std::vector<uint8_t> bytes(slots.size() * pb);
    bool good = true;
    for (size_t i = 0; i < slots.size() && good; ++i) {
        const slot_entry & e = file_->entry(uint64_t(slots[i]));
        good = pread_full(file_->fd(), bytes.data() + i * pb, pb, slot_offset(slots[i])) &&
               page_checksum(bytes.data() + i * pb, pb, e.hash) == e.checksum;
    }
    page_file_header & h = file_->header();
    if (!good) {
        note(format("%s: a stored partial page (slot %lld) failed its checksum; recomputing it", file_->path().c_str(),
                    (long long) best));
        m_.pages_corrupt++;
        // Nobody may use it (a read-only file: this process only).
        if (file_->read_only()) {
            for (const int64_t s : slots) index_.erase(file_->entry(uint64_t(s)).hash);
            for (auto r = tails_.equal_range(parent); r.first != r.second; ++r.first)
                if (r.first->second == best) {
                    tails_.erase(r.first);
                    break;
                }
        } else {
            drop_tail_locked(best, [](int64_t) { return true; }, false);
        }
        file_->unlock_table();
        return 0;
    }
    for (const int64_t s : slots) {
        slot_entry & e = file_->entry(uint64_t(s));
        if (!file_->read_only()) {
            e.last_access = ++h.clock;
            e.n_access++;
        }
        policy_->on_access(s, e.last_access);
    }
    file_->unlock_table();
    const size_t nt = e0.n_tokens;
    uint32_t nl = 0;
    std::memcpy(&nl, bytes.data(), sizeof nl);
    const float * src = reinterpret_cast<const float *>(bytes.data() + sizeof nl + nt * sizeof(int32_t));
    for (size_t r = 0; r < n_rows; ++r) std::memcpy(rows + r * row_stride, src + r * nt, size_t(take) * sizeof(float));
    // The logits of its last token, when that is the last wanted and they fit the pieces.
    if (logits && n_logits > 0 && take == n && size_t(take) == nt && nl == uint32_t(n_logits) &&
        int32_t(slots.size()) >= tail_pieces(int32_t(nt), n_logits)) {
        std::memcpy(logits, src + n_rows * nt, size_t(n_logits) * sizeof(float));
        if (got_logits) *got_logits = true;
    }
    m_.tails_hit++;
    return take;
}

} // namespace gloas
