#include "kvcache/page-file.h"

#include "tensor/error.h"

#include <cerrno>
#include <cinttypes>
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

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

uint64_t header_checksum(const page_file_header & h) {
    return XXH64(&h, offsetof(page_file_header, checksum), 0);
}

int make_dirs(const std::string & dir) {
    std::string cur;
    size_t i = 0;
    while (i <= dir.size()) {
        size_t j = dir.find('/', i);
        if (j == std::string::npos) j = dir.size();
        cur = dir.substr(0, j);
        if (!cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return -1;
        i = j + 1;
    }
    return 0;
}

} // namespace

uint64_t page_checksum(const void * data, size_t bytes, uint64_t hash) { return XXH64(data, bytes, hash); }

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
    if (base_) ::munmap(base_, reserved_);
    if (fd_ >= 0) ::close(fd_);
}

} // namespace gloas
