#include "kvcache/page-file.h"

#include "tensor/error.h"
#include "tensor/mmap.h"

#include <cerrno>
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

namespace gloas {

namespace {

constexpr size_t ALIGN = 64;
const size_t OS_PAGE = page_file::os_page_bytes();

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

uint64_t header_checksum(const page_file_header & h) {
    return XXH64(&h, offsetof(page_file_header, checksum), 0);
}

} // namespace

uint64_t page_checksum(const void * data, size_t bytes, uint64_t hash) { return XXH64(data, bytes, hash); }

size_t page_file::os_page_bytes() {
    static const size_t n = [] {
        const long v = ::sysconf(_SC_PAGESIZE);
        return v > 0 ? size_t(v) : size_t(4096);
    }();
    return n;
}

void page_file::set_lock(short type, off_t start, off_t len, bool wait, bool * ok) {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    for (;;) {
        if (::fcntl(fd_, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) {
            if (ok) *ok = true;
            return;
        }
        if (errno == EINTR) continue;
        if (!wait && (errno == EAGAIN || errno == EACCES)) {
            if (ok) *ok = false;
            return;
        }
        throw error(format("%s: cannot lock: %s", path_.c_str(), std::strerror(errno)));
    }
}

void page_file::lock_table() { set_lock(F_WRLCK, 0, 1, true, nullptr); }
void page_file::unlock_table() { set_lock(F_UNLCK, 0, 1, true, nullptr); }

bool page_file::try_lock_slot_exclusive(uint64_t slot) {
    bool ok = false;
    set_lock(F_WRLCK, off_t(table_offset_ + slot * sizeof(slot_entry)), off_t(sizeof(slot_entry)), false, &ok);
    return ok;
}

void page_file::lock_slot_shared(uint64_t slot) {
    set_lock(F_RDLCK, off_t(table_offset_ + slot * sizeof(slot_entry)), off_t(sizeof(slot_entry)), true, nullptr);
}

void page_file::unlock_slot(uint64_t slot) {
    set_lock(F_UNLCK, off_t(table_offset_ + slot * sizeof(slot_entry)), off_t(sizeof(slot_entry)), true, nullptr);
}

void page_file::map(int fd, size_t reserve_bytes) {
    void * p = ::mmap(nullptr, reserve_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        throw error(format("%s: cannot map %zu bytes: %s", path_.c_str(), reserve_bytes, std::strerror(errno)));
    base_ = static_cast<uint8_t *>(p);
    reserved_ = reserve_bytes;
    hdr_ = reinterpret_cast<page_file_header *>(base_);
}

size_t page_file::file_size() const {
    struct stat st;
    return ::fstat(fd_, &st) == 0 ? size_t(st.st_size) : 0;
}

size_t page_file::disk_bytes() const {
    struct stat st;
    return ::fstat(fd_, &st) == 0 ? size_t(st.st_blocks) * 512 : 0;
}

void page_file::ensure_slot(uint64_t slot) {
    GLOAS_ASSERT(slot < max_slots_);
    const size_t need = data_offset_ + (slot + 1) * slot_stride_;
    if (file_size() >= need) return;
    if (::ftruncate(fd_, off_t(need)) != 0)
        throw error(format("%s: cannot extend to %zu bytes: %s", path_.c_str(), need, std::strerror(errno)));
}

void page_file::will_need(uint64_t slot, size_t bytes) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(data(slot)) & ~uintptr_t(4095);
    const uintptr_t e = reinterpret_cast<uintptr_t>(data(slot)) + bytes;
    ::madvise(reinterpret_cast<void *>(a), e - a, MADV_WILLNEED);
}

void page_file::dont_need(uint64_t slot, size_t bytes) {
    // Only whole OS pages inside the slot: a neighbour's data stays mapped.
    const uintptr_t b = (reinterpret_cast<uintptr_t>(data(slot)) + 4095) & ~uintptr_t(4095);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(data(slot)) + bytes) & ~uintptr_t(4095);
    if (e > b) ::madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);
}

bool page_file::resident_pages(size_t begin, size_t end, std::vector<uint8_t> & present) {
    end = std::min(end, reserved_);
    const size_t first = begin / OS_PAGE;
    const size_t n = end > first * OS_PAGE ? (end + OS_PAGE - 1) / OS_PAGE - first : 0;
    present.assign(n, 0);
    if (n == 0) return true;
    if (pagemap_fd_ == -2) pagemap_fd_ = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap_fd_ < 0) return false;
    // One 64-bit entry per virtual page; bit 63: present in RAM.
    pagemap_buf_.resize(n);
    const off_t at = off_t((reinterpret_cast<uintptr_t>(base_) / OS_PAGE + first) * sizeof(uint64_t));
    size_t got = 0;
    while (got < n * sizeof(uint64_t)) {
        const ssize_t r = ::pread(pagemap_fd_, reinterpret_cast<uint8_t *>(pagemap_buf_.data()) + got,
                                  n * sizeof(uint64_t) - got, at + off_t(got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            ::close(pagemap_fd_);
            pagemap_fd_ = -1;
            present.assign(n, 0);
            return false;
        }
        got += size_t(r);
    }
    for (size_t i = 0; i < n; ++i) present[i] = uint8_t(pagemap_buf_[i] >> 63);
    return true;
}

size_t page_file::mapped_rss_bytes() const {
    FILE * f = std::fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512];
    bool in = false;
    size_t kb = 0;
    const uintptr_t b = reinterpret_cast<uintptr_t>(base_);
    while (std::fgets(line, sizeof line, f)) {
        unsigned long lo = 0, hi = 0;
        // A mapping line: "lo-hi perms offset dev inode path".
        if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && std::strchr(line, '-') < std::strchr(line, ' ')) {
            in = lo >= b && lo < b + reserved_;
            continue;
        }
        size_t v = 0;
        if (in && std::sscanf(line, "Rss: %zu kB", &v) == 1) kb += v;
    }
    std::fclose(f);
    return kb * 1024;
}

void page_file::unmap_slots(uint64_t first, uint64_t n, bool keep_before, bool keep_after) {
    GLOAS_ASSERT(first + n <= max_slots_);
    if (n == 0) return;
    const uintptr_t s = reinterpret_cast<uintptr_t>(data(first));
    const uintptr_t e = reinterpret_cast<uintptr_t>(data(first)) + n * slot_stride_;
    const uintptr_t b = keep_before ? (s + OS_PAGE - 1) & ~uintptr_t(OS_PAGE - 1) : s & ~uintptr_t(OS_PAGE - 1);
    const uintptr_t t = keep_after ? e & ~uintptr_t(OS_PAGE - 1) : (e + OS_PAGE - 1) & ~uintptr_t(OS_PAGE - 1);
    if (t > b) ::madvise(reinterpret_cast<void *>(b), t - b, MADV_DONTNEED);
}

void page_file::unmap_bytes(size_t offset, size_t bytes) {
    const size_t b = (offset + OS_PAGE - 1) / OS_PAGE * OS_PAGE;
    const size_t e = std::min(offset + bytes, reserved_) / OS_PAGE * OS_PAGE;
    if (e > b) ::madvise(base_ + b, e - b, MADV_DONTNEED);
}

void page_file::start_writeback(uint64_t slot, size_t bytes) {
    if (!persistent_) return;
    ::sync_file_range(fd_, off64_t(data_offset_ + slot * slot_stride_), off64_t(bytes), SYNC_FILE_RANGE_WRITE);
}

std::unique_ptr<page_file> page_file::open(const options & o, std::string * notice) {
    GLOAS_ASSERT(o.geom.valid_for(o.kv_type) && o.max_slots > 0);
    std::unique_ptr<page_file> f(new page_file());
    f->geom_ = o.geom;
    f->kv_type_ = o.kv_type;
    const size_t page_bytes = o.geom.page_bytes(o.kv_type);
    const size_t stride = round_up(page_bytes, ALIGN);
    const size_t table_offset = PAGE_FILE_HEADER_BYTES;

    for (int attempt = 0;; ++attempt) {
        int fd;
        if (o.dir.empty()) {
            f->path_ = "<memory>";
            fd = ::memfd_create("gloas-kv", MFD_CLOEXEC);
            if (fd < 0) throw error(format("cannot create an in-memory page file: %s", std::strerror(errno)));
        } else {
            if (make_dirs(o.dir) != 0)
                throw error(format("%s: cannot create the K/V folder: %s", o.dir.c_str(), std::strerror(errno)));
            f->persistent_ = true;
            f->path_ = o.dir + "/" + format("%016" PRIx64 "-%s-p%d.kv", o.fingerprint, type_name(o.kv_type), o.geom.page_tokens);
            fd = ::open(f->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) throw error(format("%s: cannot open: %s", f->path_.c_str(), std::strerror(errno)));
        }
        f->fd_ = fd;
        f->lock_table();
        struct stat st;
        ::fstat(fd, &st);
        std::string why;
        if (st.st_size == 0) {
            // New file: header and an empty (sparse) table.
            const uint64_t max_slots = o.max_slots;
            const size_t data_offset = round_up(table_offset + max_slots * sizeof(slot_entry), 4096);
            if (::ftruncate(fd, off_t(data_offset)) != 0) {
                int e = errno;
                f->unlock_table();
                throw error(format("%s: cannot size the page file: %s", f->path_.c_str(), std::strerror(e)));
            }
            page_file_header h;
            std::memset(&h, 0, sizeof h);
            std::memcpy(h.magic, PAGE_FILE_MAGIC, 8);
            h.version = PAGE_FILE_VERSION;
            h.header_bytes = uint32_t(PAGE_FILE_HEADER_BYTES);
            h.fingerprint = o.fingerprint;
            h.kv_type = uint32_t(o.kv_type);
            h.page_tokens = uint32_t(o.geom.page_tokens);
            h.n_layer = uint32_t(o.geom.n_layer);
            h.n_head_kv = uint32_t(o.geom.n_head_kv);
            h.head_dim = uint32_t(o.geom.head_dim);
            h.slot_stride = stride;
            h.max_slots = max_slots;
            h.table_offset = table_offset;
            h.data_offset = data_offset;
            h.checksum = header_checksum(h);
            if (::pwrite(fd, &h, sizeof h, 0) != ssize_t(sizeof h)) {
                int e = errno;
                f->unlock_table();
                throw error(format("%s: cannot write the header: %s", f->path_.c_str(), std::strerror(e)));
            }
        } else {
            page_file_header h;
            std::memset(&h, 0, sizeof h);
            if (size_t(st.st_size) < PAGE_FILE_HEADER_BYTES || ::pread(fd, &h, sizeof h, 0) != ssize_t(sizeof h))
                why = format("it is truncated (%lld bytes)", (long long) st.st_size);
            else if (std::memcmp(h.magic, PAGE_FILE_MAGIC, 8) != 0)
                why = "it is not a gloas page file (bad magic)";
            else if (h.version != PAGE_FILE_VERSION)
                why = format("it has format version %u, this build reads version %u", h.version, PAGE_FILE_VERSION);
            else if (h.checksum != header_checksum(h))
                why = "its header checksum does not match (damaged header)";
            else if (h.fingerprint != o.fingerprint || h.kv_type != uint32_t(o.kv_type) ||
                     h.page_tokens != uint32_t(o.geom.page_tokens) || h.n_layer != uint32_t(o.geom.n_layer) ||
                     h.n_head_kv != uint32_t(o.geom.n_head_kv) || h.head_dim != uint32_t(o.geom.head_dim))
                why = "it describes another model or page geometry";
            else if (h.slot_stride != stride || h.table_offset != table_offset || h.max_slots == 0 ||
                     h.max_slots > (uint64_t(1) << 32) ||
                     h.data_offset != round_up(table_offset + h.max_slots * sizeof(slot_entry), 4096))
                why = "its layout fields are inconsistent";
            else if (size_t(st.st_size) < h.data_offset)
                why = format("it is truncated inside its slot table (%lld bytes)", (long long) st.st_size);
        }
        if (!why.empty()) {
            f->unlock_table();
            ::close(fd);
            f->fd_ = -1;
            if (attempt > 0 || o.dir.empty())
                throw error(format("%s: cannot create a usable page file (%s)", f->path_.c_str(), why.c_str()));
            const std::string aside = f->path_ + format(".bad-%ld-%d", long(std::time(nullptr)), int(::getpid()));
            if (::rename(f->path_.c_str(), aside.c_str()) != 0)
                throw error(format("%s: %s, and it cannot be set aside: %s", f->path_.c_str(), why.c_str(), std::strerror(errno)));
            if (notice) *notice += format("%s: %s; set aside as %s, starting a new page file\n", f->path_.c_str(), why.c_str(), aside.c_str());
            continue;
        }
        page_file_header h;
        if (::pread(fd, &h, sizeof h, 0) != ssize_t(sizeof h)) {
            f->unlock_table();
            throw error(format("%s: cannot read the header", f->path_.c_str()));
        }
        f->max_slots_ = h.max_slots;
        f->slot_stride_ = h.slot_stride;
        f->table_offset_ = h.table_offset;
        f->data_offset_ = h.data_offset;
        try {
            f->map(fd, f->data_offset_ + f->max_slots_ * f->slot_stride_);
        } catch (...) {
            f->unlock_table();
            throw;
        }
        f->table_ = reinterpret_cast<slot_entry *>(f->base_ + f->table_offset_);
        f->unlock_table();
        return f;
    }
}

page_file::~page_file() {
    if (pagemap_fd_ >= 0) ::close(pagemap_fd_);
    if (base_) ::munmap(base_, reserved_);
    if (fd_ >= 0) ::close(fd_);
}

} // namespace gloas
