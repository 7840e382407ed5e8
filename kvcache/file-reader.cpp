#include "kvcache/file-reader.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace gloas {

namespace {

std::atomic<bool> g_force_pread{false};

int sys_io_uring_setup(unsigned entries, io_uring_params * p) {
    return int(::syscall(__NR_io_uring_setup, entries, p));
}

int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
    return int(::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, size_t(0)));
}

template <typename T> T * at(void * base, uint32_t off) { return reinterpret_cast<T *>(static_cast<char *>(base) + off); }

} // namespace

void batch_reader::force_pread(bool on) { g_force_pread.store(on); }

batch_reader::batch_reader() {
    if (g_force_pread.load()) return;
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    const int fd = sys_io_uring_setup(RING_ENTRIES, &p);
    if (fd < 0) return;  // unavailable: pread
    sq_ring_bytes_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_ring_bytes_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    const bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) sq_ring_bytes_ = cq_ring_bytes_ = std::max(sq_ring_bytes_, cq_ring_bytes_);
    sq_ring_ = ::mmap(nullptr, sq_ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (sq_ring_ == MAP_FAILED) {
        sq_ring_ = nullptr;
        ::close(fd);
        return;
    }
    if (single) cq_ring_ = sq_ring_;
    else {
        cq_ring_ = ::mmap(nullptr, cq_ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (cq_ring_ == MAP_FAILED) {
            cq_ring_ = nullptr;
            ::munmap(sq_ring_, sq_ring_bytes_);
            sq_ring_ = nullptr;
            ::close(fd);
            return;
        }
    }
    sqes_bytes_ = p.sq_entries * sizeof(io_uring_sqe);
    sqes_ = ::mmap(nullptr, sqes_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sqes_ == MAP_FAILED) {
        sqes_ = nullptr;
        if (cq_ring_ != sq_ring_) ::munmap(cq_ring_, cq_ring_bytes_);
        ::munmap(sq_ring_, sq_ring_bytes_);
        sq_ring_ = cq_ring_ = nullptr;
        ::close(fd);
        return;
    }
    sq_tail_ = at<unsigned>(sq_ring_, p.sq_off.tail);
    sq_mask_ = *at<unsigned>(sq_ring_, p.sq_off.ring_mask);
    sq_array_ = at<unsigned>(sq_ring_, p.sq_off.array);
    cq_head_ = at<unsigned>(cq_ring_, p.cq_off.head);
    cq_tail_ = at<unsigned>(cq_ring_, p.cq_off.tail);
    cq_mask_ = *at<unsigned>(cq_ring_, p.cq_off.ring_mask);
    cqes_ = at<void>(cq_ring_, p.cq_off.cqes);
    ring_fd_ = fd;
}

batch_reader::~batch_reader() { close_ring(); }

void batch_reader::close_ring() {
    if (ring_fd_ < 0) return;
    ::munmap(sqes_, sqes_bytes_);
    if (cq_ring_ != sq_ring_) ::munmap(cq_ring_, cq_ring_bytes_);
    ::munmap(sq_ring_, sq_ring_bytes_);
    ::close(ring_fd_);
    ring_fd_ = -1;
}

size_t batch_reader::read_pread(int fd, read_op & op) {
    size_t done = 0;
    char * dst = static_cast<char *>(op.dst);
    while (done < op.bytes) {
        const ssize_t r = ::pread(fd, dst + done, op.bytes - done, off_t(op.offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += size_t(r);
    }
    op.ok = done == op.bytes;
    return done;
}

size_t batch_reader::read_ring(int fd, read_op * ops, size_t n) {
    io_uring_sqe * sqes = static_cast<io_uring_sqe *>(sqes_);
    io_uring_cqe * cqes = static_cast<io_uring_cqe *>(cqes_);
    // Queue the batch (the ring is empty between calls: every submission is reaped).
    const unsigned tail = __atomic_load_n(sq_tail_, __ATOMIC_RELAXED);
    for (size_t i = 0; i < n; ++i) {
        const unsigned idx = (tail + unsigned(i)) & sq_mask_;
        io_uring_sqe & s = sqes[idx];
        std::memset(&s, 0, sizeof s);
        s.opcode = IORING_OP_READ;
        s.fd = fd;
        s.off = ops[i].offset;
        s.addr = uint64_t(reinterpret_cast<uintptr_t>(ops[i].dst));
        s.len = ops[i].bytes;
        s.user_data = i;
        sq_array_[idx] = idx;
    }
    __atomic_store_n(sq_tail_, tail + unsigned(n), __ATOMIC_RELEASE);
    size_t total = 0, reaped = 0;
    unsigned to_submit = unsigned(n);
    bool broken = false;
    uint64_t seen[RING_ENTRIES / 64] = {};  // ops whose completion was reaped
    while (reaped < n) {
        const int rc = sys_io_uring_enter(ring_fd_, to_submit, 1, IORING_ENTER_GETEVENTS);
        if (rc < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EBUSY) continue;
            broken = true;  // the ring cannot be used: finish with pread
            break;
        }
        to_submit -= std::min(to_submit, unsigned(rc));
        unsigned head = __atomic_load_n(cq_head_, __ATOMIC_RELAXED);
        const unsigned ctail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
        for (; head != ctail; ++head, ++reaped) {
            const io_uring_cqe & c = cqes[head & cq_mask_];
            read_op & op = ops[size_t(c.user_data)];
            seen[c.user_data / 64] |= uint64_t(1) << (c.user_data % 64);
            if (c.res == int32_t(op.bytes)) {
                op.ok = true;
                total += op.bytes;
            } else if (c.res >= 0) {
                // Short: read the rest (or find the end of the file) with pread.
                read_op rest{op.offset + uint64_t(c.res), op.bytes - uint32_t(c.res), static_cast<char *>(op.dst) + c.res};
                total += size_t(c.res) + read_pread(fd, rest);
                op.ok = rest.ok;
            } else {
                if (c.res == -EINVAL || c.res == -EOPNOTSUPP) broken = true;  // no IORING_OP_READ (kernel < 5.6)
                total += read_pread(fd, op);
            }
        }
        __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
    }
    if (broken) {
        // Ops the ring never completed (unsubmitted, or lost with it); the
        // reaped ones were finished above, read or not.
        for (size_t i = 0; i < n; ++i)
            if (!(seen[i / 64] >> (i % 64) & 1)) total += read_pread(fd, ops[i]);
        close_ring();
    }
    return total;
}

size_t batch_reader::read(int fd, read_op * ops, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) ops[i].ok = false;
    for (size_t i = 0; i < n;) {
        if (ring_fd_ >= 0) {
            const size_t m = std::min(n - i, size_t(RING_ENTRIES));
            total += read_ring(fd, ops + i, m);
            i += m;
        } else total += read_pread(fd, ops[i++]);
    }
    return total;
}

} // namespace gloas
