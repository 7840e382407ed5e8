// Batched reads of many small file ranges into memory, for attention that
// copies the pieces of the pages it selected out of the page file instead of
// reading them through the mapping (kv_store_params::read_copy).
//
// Why not the mapping: a decode step that reads a 10% selection of pages
// touches a piece of a kilobyte or two of nearly every page, and the kernel
// maps at least a whole folio (or 64 KiB of fault-around) for each first read,
// so the mapping grows to nearly the whole file and the resident set with it.
// Copies leave the file in the OS page cache (reclaimable, not this process's
// memory) and put only the selected bytes in a small buffer.
//
// Why batched: a system call (on a VM especially) costs more than copying
// the piece. With io_uring (Linux 5.1+) one io_uring_enter submits and completes
// a whole batch (reads from the page cache complete inline, cold ones on the
// kernel's workers, in parallel); where io_uring is unavailable (old kernel,
// seccomp, io_uring_disabled) every range is read with pread.
//
// One reader per thread: a reader is not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gloas {

struct read_op {
    uint64_t offset = 0;     // in the file
    uint32_t bytes = 0;
    void * dst = nullptr;
    bool ok = false;         // out: every byte was read
};

class batch_reader {
public:
    batch_reader();
    ~batch_reader();
    batch_reader(const batch_reader &) = delete;
    batch_reader & operator=(const batch_reader &) = delete;

    // Reads every op of ops[0, n) from fd in full; sets each op's `ok` and
    // returns the bytes read (the kernel's count). An op that fails (I/O
    // error, end of file) is left !ok for the caller to fall back on.
    size_t read(int fd, read_op * ops, size_t n);

    // True when reads go through io_uring (false: pread, one call per op).
    bool uses_io_uring() const { return ring_fd_ >= 0; }
    // Most ops submitted per io_uring_enter.
    static constexpr unsigned RING_ENTRIES = 256;

    // Forces pread for readers created from now on in this process (tests of
    // the fallback); io_uring stays in use where it already is.
    static void force_pread(bool on);

private:
    size_t read_ring(int fd, read_op * ops, size_t n);
    void close_ring();
    static size_t read_pread(int fd, read_op & op);

    int ring_fd_ = -1;
    void * sq_ring_ = nullptr;
    size_t sq_ring_bytes_ = 0;
    void * cq_ring_ = nullptr;     // == sq_ring_ with a single mapping
    size_t cq_ring_bytes_ = 0;
    void * sqes_ = nullptr;
    size_t sqes_bytes_ = 0;
    unsigned * sq_tail_ = nullptr;
    unsigned sq_mask_ = 0;
    unsigned * sq_array_ = nullptr;
    unsigned * cq_head_ = nullptr;
    unsigned * cq_tail_ = nullptr;
    unsigned cq_mask_ = 0;
    void * cqes_ = nullptr;
};

} // namespace gloas
