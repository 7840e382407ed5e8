#include "kvcache/page-file.h"

#include "kvcache/kv-folder.h"

#include "base/error.h"
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

size_t slot_data_bytes(const page_geometry & g, type kv_type, const slot_entry & e) {
    const uint32_t t = e.n_pieces > 0 ? uint32_t(kv_type) : e.type;
    if (t >= TYPE_ID_LIMIT || !type_known(t) || !g.valid_for(type(t))) return 0;
    return g.page_bytes(type(t));
}

bool pread_full(int fd, void * buf, size_t bytes, uint64_t offset) {
    for (size_t done = 0; done < bytes;) {
        const ssize_t r = ::pread(fd, static_cast<uint8_t *>(buf) + done, bytes - done, off_t(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return false;
        if (r == 0) {
            errno = 0;
            return false;
        }
        done += size_t(r);
    }
    return true;
}

bool pwrite_full(int fd, const void * buf, size_t bytes, uint64_t offset) {
    for (size_t done = 0; done < bytes;) {
        const ssize_t r = ::pwrite(fd, static_cast<const uint8_t *>(buf) + done, bytes - done, off_t(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return false;
        }
        done += size_t(r);
    }
    return true;
}

size_t page_file::os_page_bytes() {
    static const size_t n = [] {
        const long v = ::sysconf(_SC_PAGESIZE);
        return v > 0 ? size_t(v) : size_t(4096);
    }();
    return n;
}

bool lock_range(int fd, short type, off_t start, off_t len, bool wait) {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    for (;;) {
        if (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
        if (errno != EINTR) return false;
    }
}

void page_file::set_lock(short type, off_t start, off_t len, bool wait, bool * ok) {
    const bool locked = lock_range(fd_, type, start, len, wait);
    if (!locked && (wait || (errno != EAGAIN && errno != EACCES)))
        throw error(format("%s: cannot lock: %s", path_.c_str(), std::strerror(errno)));
    if (ok) *ok = locked;
}

// A read-only file is only read: its readers share the table lock (and an
// exclusive lock needs a file opened for writing).
void page_file::lock_table() { set_lock(read_only_ ? F_RDLCK : F_WRLCK, 0, 1, true, nullptr); }
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
    void * p = ::mmap(nullptr, reserve_bytes, read_only_ ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        throw error(format("%s: cannot map %zu bytes: %s", path_.c_str(), reserve_bytes, std::strerror(errno)));
    base_ = static_cast<uint8_t *>(p);
    reserved_ = reserve_bytes;
    watch_mapping(base_, reserved_, path_);
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

namespace {

// The label's fields, NUL-terminated and cut to fit.
page_file_label make_label(const std::string & name, const std::string & file) {
    page_file_label l;
    std::memset(&l, 0, sizeof l);
    std::memcpy(l.model_name, name.data(), std::min(name.size(), sizeof l.model_name - 1));
    std::memcpy(l.model_file, file.data(), std::min(file.size(), sizeof l.model_file - 1));
    return l;
}

bool no_space(int e) { return e == ENOSPC || e == EDQUOT; }

} // namespace

bool page_file::reserve(size_t offset, size_t bytes) {
    if (!persistent_) return true;  // an in-memory file has no blocks to run out of
    for (;;) {
        if (::fallocate(fd_, 0, off_t(offset), off_t(bytes)) == 0) return true;
        if (errno == EINTR) continue;
        if (errno != EOPNOTSUPP && errno != ENOSYS) return false;
        // A filesystem without fallocate: only grow the file (posix_fallocate's
        // emulation writes zero bytes, which could race with another process
        // writing a neighbouring slot through its mapping).
        const size_t end = offset + bytes;
        if (file_size() < end && ::ftruncate(fd_, off_t(end)) != 0) return false;
        return true;
    }
}

bool page_file::ensure_slot(uint64_t slot) {
    GLOAS_ASSERT(slot < max_slots_ && !read_only_);
    // Whole OS pages: a write fault maps (and needs blocks for) the whole page.
    const size_t b = (data_offset_ + slot * slot_stride_) / OS_PAGE * OS_PAGE;
    const size_t e = round_up(data_offset_ + (slot + 1) * slot_stride_, OS_PAGE);
    const size_t t = (table_offset_ + slot * sizeof(slot_entry)) / OS_PAGE * OS_PAGE;
    if (!reserve(t, OS_PAGE)) return false;
    if (!persistent_) {
        if (file_size() < e && ::ftruncate(fd_, off_t(e)) != 0) return false;
        return true;
    }
    return reserve(b, e - b);
}

std::unique_ptr<page_file> page_file::open(const options & o, std::string * notice) {
    GLOAS_ASSERT(o.geom.valid_for(o.kv_type) && o.max_slots > 0);
    std::unique_ptr<page_file> f(new page_file());
    f->geom_ = o.geom;
    f->kv_type_ = o.kv_type;
    const size_t page_bytes = o.geom.page_bytes(o.kv_type);
    const size_t stride = round_up(page_bytes, ALIGN);
    const size_t table_offset = PAGE_FILE_HEADER_BYTES;

    bool set_aside = false;  // one damaged file set aside already
    for (int attempt = 0;; ++attempt) {
        int fd;
        bool created = false;
        if (o.dir.empty()) {
            f->path_ = "<memory>";
            fd = ::memfd_create("gloas-kv", MFD_CLOEXEC);
            if (fd < 0) throw error(format("cannot create an in-memory page file: %s", std::strerror(errno)));
        } else {
            f->persistent_ = true;
            f->path_ = o.dir + "/" + format("%016" PRIx64 "-%s-p%d.kv", o.fingerprint, type_name(o.kv_type), o.geom.page_tokens);
            fd = ::open(f->path_.c_str(), O_RDWR | O_CLOEXEC);
            if (fd < 0 && errno == ENOENT) {
                if (make_private_dirs(o.dir) != 0) {
                    const int e = errno;
                    throw page_file_unusable(format("%s: cannot create the K/V folder: %s", o.dir.c_str(), std::strerror(e)),
                                             no_space(e));
                }
                fd = ::open(f->path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd >= 0) {
                    created = true;
                    ::fchmod(fd, 0600);  // whatever the umask: the pages hold every prompt's K/V
                } else if (errno == EEXIST) {
                    fd = ::open(f->path_.c_str(), O_RDWR | O_CLOEXEC);  // another process created it first
                }
            }
            if (fd < 0 && (errno == EROFS || errno == EACCES || errno == EPERM)) {
                const int e = errno;
                fd = ::open(f->path_.c_str(), O_RDONLY | O_CLOEXEC);
                if (fd >= 0) f->read_only_ = true;
                else errno = e;
            }
            if (fd < 0) {
                const int e = errno;
                throw page_file_unusable(format("%s: cannot open the page file: %s", f->path_.c_str(), std::strerror(e)),
                                         no_space(e));
            }
        }
        f->fd_ = fd;
        auto give_up = [&] {
            ::close(f->fd_);
            f->fd_ = -1;
            f->read_only_ = false;
        };
        if (f->persistent_) {
            // In use by this process (byte 1); a file removed between our
            // open and that lock is not the one the folder holds: open again.
            f->set_lock(F_RDLCK, 1, 1, true, nullptr);
            struct stat a, b;
            if (::fstat(fd, &a) != 0 || ::stat(f->path_.c_str(), &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
                give_up();
                if (attempt > 8) throw page_file_unusable(format("%s: the page file keeps being removed", f->path_.c_str()), false);
                continue;
            }
        }
        f->lock_table();
        struct stat st;
        ::fstat(fd, &st);
        if (f->persistent_ && !f->read_only_ && !created && st.st_uid == ::geteuid() && (st.st_mode & 077) != 0)
            ::fchmod(fd, 0600);  // a file an older build made readable by others
        std::string why;
        if (st.st_size == 0 && f->read_only_) {
            f->unlock_table();
            give_up();
            throw page_file_unusable(format("%s: the page file is empty and cannot be written", f->path_.c_str()), false);
        }
        if (st.st_size == 0) {
            // New file: header and an empty (sparse) table. The header's page
            // is reserved first; on a full filesystem the file stays empty.
            const uint64_t max_slots = o.max_slots;
            const size_t data_offset = round_up(table_offset + max_slots * sizeof(slot_entry), 4096);
            if (!f->reserve(0, PAGE_FILE_HEADER_BYTES)) {
                const int e = errno;
                // Empty again, the next run starts it afresh (a failed
                // truncate leaves zeros that are set aside as a bad magic).
                const int t = ::ftruncate(fd, 0);
                (void) t;
                f->unlock_table();
                give_up();
                throw page_file_unusable(format("%s: cannot create the page file: %s", f->path_.c_str(), std::strerror(e)),
                                         no_space(e));
            }
            // A file that cannot be sized or given its header is made empty
            // again (as above), so that no half-made file is left behind.
            auto cannot_create = [&](const char * what) {
                const int e = errno;
                const int t = ::ftruncate(fd, 0);
                (void) t;
                f->unlock_table();
                give_up();
                throw page_file_unusable(format("%s: cannot %s: %s", f->path_.c_str(), what, std::strerror(e)), no_space(e));
            };
            int sized;
            while ((sized = ::ftruncate(fd, off_t(data_offset))) != 0 && errno == EINTR) {}
            if (sized != 0) cannot_create("size the page file");
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
            const page_file_label l = make_label(o.model_name, o.model_file);
            if (!pwrite_full(fd, &l, sizeof l, PAGE_FILE_LABEL_OFFSET) || !pwrite_full(fd, &h, sizeof h, 0))
                cannot_create("write the header");
        } else {
            page_file_header h;
            std::memset(&h, 0, sizeof h);
            if (size_t(st.st_size) >= PAGE_FILE_HEADER_BYTES && !pread_full(fd, &h, sizeof h, 0) && errno != 0) {
                // An I/O error is no damage: the file is left as it is.
                const int e = errno;
                f->unlock_table();
                give_up();
                throw page_file_unusable(format("%s: cannot read the header: %s", f->path_.c_str(), std::strerror(e)),
                                         false);
            }
            if (size_t(st.st_size) < PAGE_FILE_HEADER_BYTES)
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
            const bool ro = f->read_only_;
            give_up();
            if (ro)
                throw page_file_unusable(format("%s: %s, and it cannot be set aside (read-only)", f->path_.c_str(), why.c_str()), false);
            if (set_aside || o.dir.empty())
                throw error(format("%s: cannot create a usable page file (%s)", f->path_.c_str(), why.c_str()));
            const std::string aside = f->path_ + format(".bad-%ld-%d", long(std::time(nullptr)), int(::getpid()));
            if (::rename(f->path_.c_str(), aside.c_str()) != 0)
                throw page_file_unusable(format("%s: %s, and it cannot be set aside: %s", f->path_.c_str(), why.c_str(),
                                                std::strerror(errno)), false);
            if (notice) *notice += format("%s: %s; set aside as %s, starting a new page file\n", f->path_.c_str(), why.c_str(), aside.c_str());
            set_aside = true;
            continue;
        }
        page_file_header h;
        if (!pread_full(fd, &h, sizeof h, 0)) {
            const int e = errno;
            f->unlock_table();
            give_up();
            throw page_file_unusable(format("%s: cannot read the header: %s", f->path_.c_str(),
                                            e ? std::strerror(e) : "the file was truncated"), false);
        }
        if (f->persistent_ && !f->read_only_) {
            // A file from a build without labels gets one; the access time of
            // the file says when it was last used.
            page_file_label l;
            if (pread_full(fd, &l, sizeof l, PAGE_FILE_LABEL_OFFSET) && l.model_name[0] == 0 &&
                l.model_file[0] == 0 && !(o.model_name.empty() && o.model_file.empty())) {
                l = make_label(o.model_name, o.model_file);
                if (!pwrite_full(fd, &l, sizeof l, PAGE_FILE_LABEL_OFFSET)) { /* a label is optional */ }
            }
            ::futimens(fd, nullptr);
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
    if (base_) {
        unwatch_mapping(base_);
        ::munmap(base_, reserved_);
    }
    if (fd_ >= 0) ::close(fd_);
}

} // namespace gloas
