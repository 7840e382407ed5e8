// The K/V store: the pages of every sequence of one model, in one page file,
// indexed by prefix hash, reference counted while sequences use them, and
// evicted by policy when the store reaches its capacity.
//
// The store never takes a run down. A folder that cannot be used (it cannot
// be created, written, locked or mapped, or its filesystem is full) leaves
// the store in memory, with a notice; a page file that can only be read is reused
// read-only. A page whose blocks cannot be reserved in the page file (a full
// disk) is kept in memory: private to the sequence that made it, never
// published, freed when released; the first such page brings one notice.
// Nothing published is lost or damaged. Only a folder the user named
// (kv_store_params::dir_required) that cannot be used is an error.
//
// Capacity bounds the folder: this store's pages plus the bytes on disk of
// every other page file and set-aside file in it. When a new page would pass
// it, set-aside files and then page files no process has open (least
// recently used first) are removed, and then the policy evicts this store's
// own pages.
//
// Prefix hashes chain: h(0) = xxh64(token ids of page 0, seed = PREFIX_SEED),
// h(i) = xxh64(token ids of page i, seed = h(i-1)). Two sequences whose first i
// pages hold the same tokens have the same h(i-1), so a new prompt reuses
// every leading page already in the store, across sequences and runs.
//
// Tails: the partial last page of a prompt (n < page_tokens tokens, the
// sequence's open page) is stored too, at full precision, as the open page
// holds it (F32), so that a sequence taking it reads exactly what it would
// have computed. It is keyed by the prefix hash of the full pages before it
// (its parent, PREFIX_SEED for page 0) and its exact tokens:
// tail_hash(parent, tokens, n). With it may go the logits of its last token
// (the prompt ended there), so that the same prompt again needs no forward
// pass at all. Its bytes (the logits count, the n token ids, the n values of
// each row of the page, F32, the logits) are cut into pieces of page_bytes() bytes, one
// slot each (slot_entry::piece, n_pieces), piece i under the hash tail + i:
// pieces are slots like any page for capacity, eviction (dropping one drops
// its evictable siblings; a tail is never compressed) and checksums. Every
// piece is written and checksummed before any is published, and they are
// published together under the table lock, piece 0 last; a tail is served
// only when all its pieces are READY and verify, and pieces whose tail is
// incomplete (a writer killed between two of them, an evicted sibling) are
// freed. A lookup takes the tail after `parent` that shares the most leading
// tokens with the new prompt's page: any leading part of a tail is valid K/V
// for a prompt sharing those tokens. Storing a tail drops the tails of the
// same parent whose tokens it extends and that hold no logits (they can serve
// nothing it cannot).
// Pieces are written and read through the file (pwrite, pread), not the
// mapping: a tail never adds to this process's resident K/V.
//
// Thread safety: one thread drives the store (the decoder's); a background
// writer thread publishes full pages (checksum + slot table) off the decode
// path, and its queue is drained by flush(). touch() may be called from any
// thread (the workers of the decoder's thread pool).
//
// RAM budget (kv_store_params::ram_bytes, --kv-ram). Tiers: hot = page-file
// pages mapped in this process; warm = the OS page cache; cold = the file on
// disk. "Resident" is the hot tier: OS pages of the page-file mapping present
// in this process's page tables (its Rss in /proc/self/smaps, read exactly
// from /proc/self/pagemap). The sequences' fixed buffers (open pages in F32 or F16,
// scratch, page summaries: sized by the context and the prefill chunk, not by
// what is stored) are registered with add_fixed_ram and reported beside it,
// not counted against the budget. After each forward pass
// (kv_sequence::commit) trim() unmaps (MADV_DONTNEED) whole slots, least
// recently touched first, until the resident bytes are within the budget; between trims a pass maps what it reads
// (and the kernel's fault-around maps up to 64 KiB around each read), so the
// budget holds at pass boundaries and resident_peak records how far a pass
// went. A budget below what one pass maps makes every pass unmap and fault
// in again what it reads: bounded, but slower (gloas-bench shows by how much).
// Unmapping a MAP_SHARED page loses nothing (a dirty page stays dirty in the
// page cache and reaches the file), but slots being written (claimed, not yet
// published) are never unmapped, nor the OS pages they share with a
// neighbour. Published pages of a persistent file are written back right
// away when a budget is set, so the page cache holds them clean and the
// kernel can reclaim them (no POSIX_FADV_DONTNEED: a dropped page would turn
// each later sparse read of it into a disk read). An in-memory store (no
// folder) keeps every page in RAM whatever the budget: only its mapping shrinks.
//
// Copy reads (kv_store_params::read_copy, --kv-read copy): a sparse decode
// step reads a piece (one layer and KV head) of a tenth of the pages, but
// through the mapping the kernel maps at least 64 KiB around each piece, so
// the mapping, and with it the resident set, grows to nearly the whole file
// between trims. With copy reads, decode attention copies exactly the pieces
// it selected out of the file into a small per-thread buffer
// (kvcache/file-reader.h: batched io_uring reads, pread where unavailable);
// the rest stays in the OS page cache or on disk, and resident K/V is what
// the budget allows the writes and prefill to leave mapped. Prefill still reads
// through the mapping (a chunk of queries reads every page).
#pragma once

#include "kvcache/page-file.h"
#include "kvcache/page.h"
#include "kvcache/policy.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace gloas {

constexpr uint64_t PREFIX_SEED = 0x676c6f61736b7631ull;  // "gloaskv1"

// Prefix hash of a page of `n` token ids following a page whose hash is `prev`
// (PREFIX_SEED for the first page).
uint64_t page_hash(uint64_t prev, const int32_t * tokens, int32_t n);
// Hash of a tail of `n` token ids after the full pages whose prefix hash is
// `parent` (see "Tails" above); distinct from page_hash of the same tokens.
uint64_t tail_hash(uint64_t parent, const int32_t * tokens, int32_t n);

struct kv_store_params {
    std::string dir;                // page-file folder; empty: in memory, nothing persists
    type kv_type = type::F16;
    int32_t page_tokens = 32;
    size_t capacity_bytes = size_t(4) << 30;  // bound on the folder's bytes (see above)
    evict_policy policy = evict_policy::LRU;
    double compressed_share = 0.3;  // COMPRESSED: share of capacity for compressed pages
    size_t ram_bytes = 0;           // bound on resident K/V bytes (see above); 0: unbounded
    bool read_copy = false;         // decode copies the pieces it reads out of the file (see below)
    bool dir_required = false;      // an unusable `dir` is an error, not a store in memory
    bool keep_tails = true;         // store and reuse prompts' partial last pages (see "Tails")
    std::string model_name;         // the page file's label (gloas-kv lists it)
    std::string model_file;
    // Receives each notice (one line, no newline) as it happens; unset, they
    // are kept for take_notices().
    std::function<void(const std::string &)> on_notice;
    // Tests only: called while a tail of k pieces is stored, with step i < k
    // once piece i's data is written, and k + j once j + 1 pieces are
    // published (under the table lock; piece 0 last), where a test kills the
    // process.
    std::function<void(int32_t step)> on_tail_step;
};

struct kv_metrics {
    uint64_t pages_hit = 0;         // prompt pages found in the store
    uint64_t pages_missed = 0;      // full prompt pages that had to be computed
    uint64_t tokens_reused = 0;     // prefill tokens skipped thanks to hits
    uint64_t pages_written = 0;     // pages published
    uint64_t pages_evicted = 0;     // dropped by the policy
    uint64_t pages_compressed = 0;  // re-quantized to Q4_0 by the COMPRESSED policy
    uint64_t pages_corrupt = 0;     // failed their checksum: recomputed
    uint64_t tails_hit = 0;         // tails taken by prompts (their tokens count in tokens_reused)
    uint64_t tails_written = 0;     // tails stored
    uint64_t pages_in_memory = 0;   // new pages kept in memory: no space in the page file, or it is read-only
    uint64_t prefetch_resident = 0; // reused pages already in memory when verified
    uint64_t ram_trims = 0;         // trims that unmapped pages to stay within ram_bytes
    uint64_t slots_unmapped = 0;    // page slots those trims unmapped
    size_t resident_peak = 0;       // most mapped page-file bytes a trim found (before unmapping)

    double hit_rate() const {
        const uint64_t n = pages_hit + pages_missed;
        return n ? double(pages_hit) / double(n) : 0.0;
    }
};

// A page a sequence holds: its slot, data and current type.
struct page_ref {
    int64_t slot = -1;
    const uint8_t * data = nullptr;
    type t = type::F32;
};

class kv_store {
public:
    // Opens or creates the page file (see above for what happens when it
    // cannot). A damaged file is set aside and reported through the notices.
    kv_store(const kv_store_params & p, const page_geometry & g, uint64_t model_fingerprint);
    ~kv_store();
    kv_store(const kv_store &) = delete;
    kv_store & operator=(const kv_store &) = delete;

    const page_geometry & geometry() const { return geom_; }
    type kv_type() const { return p_.kv_type; }
    const kv_store_params & params() const { return p_; }
    const std::string & path() const { return file_->path(); }
    bool persistent() const { return file_->persistent(); }
    // True when the page file is opened read-only (new pages stay in memory).
    bool read_only() const { return file_->read_only(); }
    // Messages about damage found and repaired (set-aside files, bad pages)
    // and about what could not be stored, one per line, unless
    // kv_store_params::on_notice takes them.
    std::string take_notices();

    // Looks up a published page by prefix hash; on success the page is
    // referenced (release() when done) and its checksum has been verified.
    bool acquire(uint64_t hash, page_ref * out);
    // Looks up a chain of pages (hashes[0..n)), stopping at the first miss or
    // bad page; returns how many were acquired into out. The pages are read
    // ahead in the background while they are verified in order.
    size_t acquire_chain(const uint64_t * hashes, size_t n, page_ref * out);
    void release(int64_t slot);

    // Claims a slot for a new page (evicting if the store is full) and returns
    // its data (page_bytes(kv_type) writable bytes), referenced once.
    page_ref begin_page();
    // Publishes a filled page under its prefix hash, off the calling thread.
    void publish(int64_t slot, uint64_t hash, uint64_t parent, int32_t n_tokens);
    // Gives up a claimed page that was never filled.
    void abandon(int64_t slot);
    // Waits until every queued publish is done.
    void flush();

    // Tails (see above). rows: the page's n_rows() rows, row r at
    // rows + r * row_stride floats, columns = token positions in the page.
    // Stores the tail of tokens[0, n) (0 < n < page_tokens) after `parent`
    // from the first n columns of rows, with the logits (n_logits) of its
    // last token if `logits` is not null, unless it is stored already; false
    // when it could not be (no room, a read-only file, tails off).
    bool put_tail(uint64_t parent, const int32_t * tokens, int32_t n, const float * rows, size_t row_stride,
                  const float * logits = nullptr, int32_t n_logits = 0);
    // Finds the stored tail after `parent` sharing the most leading tokens
    // with tokens[0, n), L of them (at most n; of two, the one ending there),
    // and copies its first L columns into rows; returns L, 0 when no tail
    // shares a token (or tails are off). When L == n is the whole tail and it
    // holds n_logits logits, they are copied into `logits` and *got_logits set.
    int32_t take_tail(uint64_t parent, const int32_t * tokens, int32_t n, float * rows, size_t row_stride,
                      float * logits = nullptr, int32_t n_logits = 0, bool * got_logits = nullptr);
    // Slots a tail of n tokens (and n_logits logits) takes.
    int32_t tail_pieces(int32_t n, int32_t n_logits = 0) const;
    // Tails in the store (complete ones).
    size_t stored_tails();

    // Marks a slot as read by the current pass (for the RAM budget's LRU
    // order). Cheap and thread-safe; slot < 0 is ignored.
    void touch(int64_t slot) {
        if (slot < 0 || uint64_t(slot) >= n_stamps_) return;
        std::atomic<uint32_t> & a = stamps_[size_t(slot)];
        const uint32_t e = epoch_.load(std::memory_order_relaxed);
        if (a.load(std::memory_order_relaxed) != e) a.store(e, std::memory_order_relaxed);
    }
    // After a forward pass: unmaps least recently touched slots until the
    // resident bytes are within ram_bytes (nothing when ram_bytes is 0), and
    // starts the next pass's recency epoch.
    void trim();
    // Bytes of the page-file mapping resident in this process now (header and
    // slot table included), from /proc/self/pagemap (smaps if unreadable).
    size_t resident_bytes();
    // The same from /proc/self/smaps (an independent reading; slow).
    size_t resident_bytes_smaps() const { return file_->mapped_rss_bytes(); }
    // The sequences' fixed K/V buffers, counted against ram_bytes.
    void add_fixed_ram(size_t bytes);
    size_t fixed_ram_bytes() const { return fixed_ram_; }

    const kv_metrics & metrics() const { return m_; }
    kv_metrics & metrics() { return m_; }
    size_t stored_bytes();          // bytes of the pages in the store
    size_t stored_pages();
    size_t file_bytes() const { return file_->disk_bytes(); }
    size_t page_bytes() const { return geom_.page_bytes(p_.kv_type); }
    // Where copy reads find a slot's data: the file and the data's offset in
    // it, for slots in the file (in_file); a page kept in memory is read
    // through its data pointer.
    static bool in_file(int64_t slot) { return slot >= 0 && slot < MEMORY_SLOT0; }
    int file_fd() const { return file_->fd(); }
    uint64_t slot_offset(int64_t slot) const { return file_->data_offset() + uint64_t(slot) * file_->slot_stride(); }
    const eviction_policy & policy() const { return *policy_; }

private:
    // Slot numbers of pages kept in memory start here.
    static constexpr int64_t MEMORY_SLOT0 = int64_t(1) << 40;
    struct memory_page {
        std::unique_ptr<uint8_t, void (*)(void *)> data{nullptr, std::free};
        uint32_t refs = 0;
    };
    struct local_slot {
        uint32_t refs = 0;
        // The page this process last checked (or wrote) in the slot: a slot
        // freed and filled again by another process is checked again.
        bool verified = false;
        uint64_t verified_hash = 0, verified_sum = 0;
    };

    void sync_locked();             // re-reads the table if another process changed it
    // After any change to the slot table: tells the other processes (and
    // this one's index stays current, having made the change itself).
    void changed_locked();
    bool held_locked(int64_t slot) const;  // this process references the slot
    void note(const std::string & line);  // a notice (see on_notice)
    page_ref memory_page_locked(const std::string & why);
    void fit_folder_locked(size_t need_bytes);
    size_t resident_locked(bool * exact, size_t * first);
    bool make_room_locked(size_t need_bytes);
    void drop_locked(int64_t slot, bool evicted = true);
    // Drops the tail of which `slot` is a piece: that piece, and the others
    // that `may` allows.
    void drop_tail_locked(int64_t slot, const std::function<bool(int64_t)> & may, bool evicted);
    // Slots of the complete tail whose piece 0 is slot0, or false.
    bool tail_slots_locked(int64_t slot0, std::vector<int64_t> & out);
    void free_claimed_locked(int64_t slot);
    void compress_locked(int64_t slot);
    bool verify(int64_t slot);
    size_t entry_bytes(const slot_entry & e) const;
    void writer_loop();

    kv_store_params p_;
    page_geometry geom_;
    std::unique_ptr<page_file> file_;
    std::unique_ptr<eviction_policy> policy_;
    std::string notices_;
    std::mutex mu_;                                  // guards everything below against the writer
    std::unordered_map<uint64_t, int64_t> index_;    // prefix hash -> READY slot
    std::unordered_map<int64_t, local_slot> local_;  // slots this process references
    std::unordered_multimap<uint64_t, int64_t> tails_;  // parent hash -> piece 0 of each READY tail
    std::vector<int64_t> free_;                      // FREE slots (as of the last sync)
    size_t used_bytes_ = 0;                          // bytes of READY + WRITING slots
    uint64_t seen_generation_ = ~uint64_t(0);
    kv_metrics m_;
    std::unordered_map<int64_t, memory_page> memory_;  // pages kept in memory, by slot
    int64_t next_memory_ = MEMORY_SLOT0;
    bool warned_memory_ = false;
    uint64_t others_bytes_ = 0;                      // the rest of the folder on disk
    double others_measured_ = -1e9;                  // when others_bytes_ was measured (steady seconds)
    double others_stuck_ = -1e9;                     // when nothing else in the folder could be removed

    // writer thread
    struct job { int64_t slot; uint64_t hash, parent; int32_t n_tokens; };
    std::deque<job> jobs_;
    std::condition_variable cv_;
    std::condition_variable cv_done_;
    bool stop_ = false;
    size_t busy_ = 0;
    std::thread writer_;

    // RAM budget
    uint64_t n_stamps_ = 0;
    std::unique_ptr<std::atomic<uint32_t>[]> stamps_;  // (max_slots) epoch of each slot's last touch
    std::atomic<uint32_t> epoch_{1};
    size_t fixed_ram_ = 0;
    std::vector<uint8_t> present_;                    // trim scratch: OS pages present
    struct trim_candidate { uint32_t stamp; int64_t slot; };
    std::vector<trim_candidate> candidates_;
    std::vector<int64_t> chosen_;                     // trim scratch: slots to unmap
};

} // namespace gloas
