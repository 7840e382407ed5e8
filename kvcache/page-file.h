// The page file: K/V pages of one model, KV type and page geometry in a file
// mapped MAP_SHARED, so pages outlive the process and are shared by every
// process that opens the same file.
//
// Layout (little-endian):
//   [0, 4096)                 header (page_file_header), immutable after creation
//                             except `clock`, `generation` and `slots_used`
//   [table_offset, +64 x max_slots)   slot table (slot_entry), one per slot
//   [data_offset + i x slot_stride)   page data of slot i, slot_stride a multiple of 64
// [1024, 1024 + 384)          label (page_file_label): the model's name and file
//                             name, for people listing the folder (zero in files
//                             written before it existed; not checksummed)
// The file is sparse: it grows as slots are first used, and the table is only
// touched where slots are. Blocks are reserved (fallocate) for a slot's data
// and for the table page holding its entry before either is written through
// the mapping: a write to an unreserved page of a full filesystem would kill
// the process with SIGBUS. A slot that cannot be reserved is not used. (On a
// filesystem without fallocate the file only grows, unreserved.)
//
// Publishing: a slot is claimed (state WRITING) under the table lock, its data
// is written and checksummed (xxh64 seeded with the page hash) outside it, and
// only then is the entry set READY under the table lock. A crash at any point
// leaves either a READY slot whose checksum matches or a slot that is not
// READY; readers verify the checksum before first use, so torn or flipped data
// is detected and the page recomputed, never used.
//
// Concurrency between processes uses open-file-description locks (fcntl
// F_OFD_SETLK), which the kernel drops when a process dies:
//   - byte 0: the table lock, held briefly for every table change;
//   - byte 1: a shared lock by every process that has the file open, so that
//     a file nobody uses can be told apart and removed (kv-folder.h);
//   - the 64 bytes of a slot's entry: a shared lock by each process using the
//     page, an exclusive one while a writer fills it. A slot whose entry another
//     process has locked is never evicted or overwritten; a WRITING slot whose
//     lock is free belonged to a writer that died and is free again.
#pragma once

#include "kvcache/page.h"
#include "quant/types.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace gloas {

constexpr char     PAGE_FILE_MAGIC[8] = {'G', 'L', 'O', 'A', 'S', 'K', 'V', '\0'};
// 2: a page's rows grouped by (layer, KV head) (page.h); 3: tails (slot_entry::n_pieces);
// 4: Q4_KIVI pages, whose K and V rows differ in size (page.h)
constexpr uint32_t PAGE_FILE_VERSION = 4;
constexpr size_t   PAGE_FILE_HEADER_BYTES = 4096;

struct page_file_header {
    char     magic[8];
    uint32_t version;
    uint32_t header_bytes;
    uint64_t fingerprint;      // of the model (weights and shape)
    uint32_t kv_type;          // type of full-precision pages
    uint32_t page_tokens;
    uint32_t n_layer;
    uint32_t n_head_kv;
    uint32_t head_dim;
    uint32_t reserved0;
    uint64_t slot_stride;      // bytes between slots' data
    uint64_t max_slots;
    uint64_t table_offset;
    uint64_t data_offset;
    uint64_t checksum;         // xxh64 of the bytes above
    // mutable, under the table lock:
    uint64_t clock;            // logical access clock shared by all users
    uint64_t generation;       // bumped on every table change
    uint64_t slots_used;       // slots [slots_used, max_slots) have never been used
};
static_assert(sizeof(page_file_header) == 112, "page_file_header layout");

constexpr size_t PAGE_FILE_LABEL_OFFSET = 1024;
struct page_file_label {
    char model_name[128];  // general.name or the file name, NUL-terminated
    char model_file[256];  // the model file's name (no folder), NUL-terminated
};
static_assert(PAGE_FILE_LABEL_OFFSET + sizeof(page_file_label) <= PAGE_FILE_HEADER_BYTES, "label inside the header");

// A page file that cannot be used: the folder cannot be created or written,
// the file cannot be opened, or (no_space) the filesystem is full. Callers
// keep the pages in memory instead.
struct page_file_unusable : error {
    page_file_unusable(const std::string & what, bool full) : error(what), no_space(full) {}
    bool no_space;
};

enum class slot_state : uint32_t { FREE = 0, WRITING = 1, READY = 2 };

// A slot holds a full page or one piece of a tail: the partial last page of
// a prompt, kept at full precision and cut into pieces of page_bytes(kv_type)
// bytes, one slot each (kv-store.h, "Tails"). A tail piece has n_pieces > 0,
// type F32, n_tokens in [1, page_tokens), and hash = the tail's hash + piece.
struct slot_entry {
    uint64_t hash;         // prefix hash of the page (chains the previous page's); a tail piece: see above
    uint64_t parent;       // prefix hash of the previous page (PREFIX_SEED for the first)
    uint32_t n_tokens;     // tokens in the page (page_tokens when full)
    uint32_t state;        // slot_state
    uint32_t type;         // type of the data now (kv_type, or Q4_0 once compressed; F32 for a tail piece)
    uint16_t piece;        // a tail piece: its index in [0, n_pieces)
    uint16_t n_pieces;     // a tail piece: the tail's piece count; 0 for a full page
    uint64_t checksum;     // xxh64(data, page_bytes(type), seed = hash)
    uint64_t last_access;  // clock of the last use
    uint64_t n_access;     // uses since insertion
    uint64_t inserted;     // clock at insertion
};
static_assert(sizeof(slot_entry) == 64, "slot_entry must be 64 bytes");

class page_file {
public:
    struct options {
        std::string dir;           // folder of page files; empty: an anonymous in-memory file
        uint64_t fingerprint = 0;
        type kv_type = type::F16;
        page_geometry geom;
        uint64_t max_slots = 0;    // table size when creating
        std::string model_name;    // for the label
        std::string model_file;
    };

    // Opens or creates the page file for these options. A file that exists but
    // is damaged, of another version or describes other pages is set aside
    // (renamed *.bad) and a new one created; `notice` then says why. A file
    // that can be read but not written (a read-only file or filesystem) is
    // opened read-only: its pages can be reused, nothing is written to it.
    // Folders are created 0700 and files 0600. Throws page_file_unusable when
    // there is no usable file (see above), gloas::error for other failures.
    static std::unique_ptr<page_file> open(const options & o, std::string * notice);
    ~page_file();
    page_file(const page_file &) = delete;
    page_file & operator=(const page_file &) = delete;

    const std::string & path() const { return path_; }
    const page_geometry & geometry() const { return geom_; }
    type kv_type() const { return kv_type_; }
    uint64_t max_slots() const { return max_slots_; }
    size_t slot_stride() const { return slot_stride_; }
    bool persistent() const { return persistent_; }
    bool read_only() const { return read_only_; }

    // Table lock (exclusive, blocking). All slot_entry reads and writes of
    // state happen under it.
    void lock_table();
    void unlock_table();
    page_file_header & header() { return *hdr_; }
    slot_entry & entry(uint64_t slot) { return table_[slot]; }

    // Slot use locks (see the header comment). try_* return false on conflict.
    bool try_lock_slot_exclusive(uint64_t slot);
    void lock_slot_shared(uint64_t slot);   // converts an exclusive lock we hold
    void unlock_slot(uint64_t slot);

    // Page data of a slot; ensure_slot() reserves the blocks of the slot's
    // data and of its table entry (growing the file to cover them) before
    // either is written. False when they cannot be reserved (errno says why:
    // ENOSPC, EDQUOT); the slot must then not be written.
    bool ensure_slot(uint64_t slot);
    // True when `bytes` of the slot's data lie inside the file (a truncated
    // file may end before a slot its table still lists).
    bool slot_in_file(uint64_t slot, size_t bytes) const {
        return slot < max_slots_ && data_offset_ + slot * slot_stride_ + bytes <= file_size();
    }
    uint8_t * data(uint64_t slot) { return base_ + data_offset_ + slot * slot_stride_; }
    // Bytes the file takes on disk (allocated blocks) and its apparent size.
    size_t disk_bytes() const;
    size_t file_size() const;

    // Hints the kernel to read a slot's data ahead / that it is not needed soon.
    void will_need(uint64_t slot, size_t bytes);
    void dont_need(uint64_t slot, size_t bytes);

    // Residency. "Resident" means mapped in this process: OS pages of the
    // mapping present in its page tables (the mapping's Rss in
    // /proc/self/smaps), not pages merely in the OS page cache (mincore's
    // answer for a file mapping). MAP_SHARED file pages are clean or dirty
    // page-cache pages: unmapping them (unmap_slots) loses nothing, a dirty
    // page stays dirty in the page cache and reaches the file by writeback
    // (for an in-memory file it stays in RAM: only the mapping shrinks).
    //
    // Bytes of an OS page (the unit of residency).
    static size_t os_page_bytes();
    // Present flags of the OS pages covering the file's bytes [begin, end),
    // one per page from the one holding byte `begin`, from /proc/self/pagemap.
    // False (present all zero) when pagemap cannot be read.
    bool resident_pages(size_t begin, size_t end, std::vector<uint8_t> & present);
    // Rss of the whole mapping (header, table and data) from /proc/self/smaps
    // (slow: for checks and metrics); 0 when it cannot be read.
    size_t mapped_rss_bytes() const;
    // Unmaps (MADV_DONTNEED) the OS pages covering slots [first, first + n):
    // whole slots, rounded outward to OS pages, except that a page shared with
    // a neighbouring slot is kept when keep_before (slot first - 1) /
    // keep_after (slot first + n) says so.
    void unmap_slots(uint64_t first, uint64_t n, bool keep_before, bool keep_after);
    // Unmaps the whole OS pages inside the file's bytes [offset, offset + bytes).
    void unmap_bytes(size_t offset, size_t bytes);
    // Starts writeback of a slot's data (sync_file_range, no waiting), so its
    // page-cache pages become clean and the kernel may reclaim them. No-op for
    // an in-memory file.
    void start_writeback(uint64_t slot, size_t bytes);
    // Offset of slot 0's data in the file.
    size_t data_offset() const { return data_offset_; }
    // The open file (for reads that bypass the mapping).
    int fd() const { return fd_; }

private:
    page_file() = default;
    void map(int fd, size_t reserve_bytes);
    void set_lock(short type, off_t start, off_t len, bool wait, bool * ok);
    bool reserve(size_t offset, size_t bytes);

    std::string path_;
    bool persistent_ = false;   // false: an anonymous in-memory file
    bool read_only_ = false;    // opened read-only: nothing is written
    int fd_ = -1;
    uint8_t * base_ = nullptr;
    size_t reserved_ = 0;       // bytes of address space mapped
    page_file_header * hdr_ = nullptr;
    slot_entry * table_ = nullptr;
    page_geometry geom_;
    type kv_type_ = type::F16;
    uint64_t max_slots_ = 0;
    size_t slot_stride_ = 0;
    size_t data_offset_ = 0;
    size_t table_offset_ = 0;
    int pagemap_fd_ = -2;       // /proc/self/pagemap, opened on first use; -1: unreadable
    std::vector<uint64_t> pagemap_buf_;
};

uint64_t page_checksum(const void * data, size_t bytes, uint64_t hash);

// Bytes of a slot's data its checksum covers: page_bytes(kv_type) for a tail
// piece, page_bytes(type) of its current type for a page; 0 when the entry
// names a type these pages cannot have.
size_t slot_data_bytes(const page_geometry & g, type kv_type, const slot_entry & e);

// pread / pwrite of exactly `bytes` at `offset`, retried when interrupted
// (EINTR) or short. False otherwise, errno saying why: 0 when a read meets the
// end of the file.
bool pread_full(int fd, void * buf, size_t bytes, uint64_t offset);
bool pwrite_full(int fd, const void * buf, size_t bytes, uint64_t offset);

// Sets (type F_RDLCK or F_WRLCK) or drops (F_UNLCK) the open-file-description
// lock of bytes [start, start + len) of fd, waiting for a lock another holds
// when `wait`, retried when interrupted. False otherwise, errno saying why
// (EAGAIN or EACCES: another holds it, without `wait`).
bool lock_range(int fd, short type, off_t start, off_t len, bool wait);

} // namespace gloas
