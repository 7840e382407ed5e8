#include "kvcache/kv-folder.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

namespace gloas {

namespace {

bool ends_with(const std::string & s, const char * suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// 1: a page file, 2: a set-aside one, 0: not ours.
int kind_of(const std::string & name) {
    if (ends_with(name, ".kv")) return 1;
    if (name.find(".kv.bad-") != std::string::npos) return 2;
    return 0;
}

std::vector<std::string> folder_names(const std::string & dir) {
    std::vector<std::string> names;
    if (DIR * d = ::opendir(dir.c_str())) {
        while (struct dirent * e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (kind_of(n) != 0) names.push_back(n);
        }
        ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string label_field(const char * p, size_t n) { return std::string(p, strnlen(p, n)); }

page_geometry geometry_of(const page_file_header & h) {
    page_geometry g;
    g.page_tokens = int32_t(h.page_tokens);
    g.n_layer = int32_t(h.n_layer);
    g.n_head_kv = int32_t(h.n_head_kv);
    g.head_dim = int32_t(h.head_dim);
    return g;
}

// Reads the header and label of an open page file into `info`; false with
// info.problem when it is not one this build reads.
bool read_header(int fd, page_file_info & info, page_file_header & h) {
    std::memset(&h, 0, sizeof h);
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size == 0) {
        info.problem = "empty: no page written yet";
        return false;
    }
    if (::fstat(fd, &st) != 0 || size_t(st.st_size) < PAGE_FILE_HEADER_BYTES || !pread_full(fd, &h, sizeof h, 0)) {
        info.problem = errno && st.st_size >= off_t(PAGE_FILE_HEADER_BYTES) ? std::strerror(errno) : "truncated";
        return false;
    }
    if (std::memcmp(h.magic, PAGE_FILE_MAGIC, 8) != 0) info.problem = "not a gloas page file";
    else if (h.version != PAGE_FILE_VERSION) info.problem = format("format version %u (this build reads %u)", h.version, PAGE_FILE_VERSION);
    else if (h.checksum != XXH64(&h, offsetof(page_file_header, checksum), 0)) info.problem = "damaged header";
    else if (!type_known(h.kv_type) || h.page_tokens == 0 || h.max_slots == 0 || h.max_slots > (uint64_t(1) << 32) ||
             h.table_offset < PAGE_FILE_HEADER_BYTES || h.data_offset < h.table_offset + h.max_slots * sizeof(slot_entry) ||
             h.page_tokens > (1u << 16) || h.n_layer == 0 || h.n_layer > (1u << 16) || h.n_head_kv == 0 ||
             h.head_dim == 0 || uint64_t(h.n_head_kv) * h.head_dim > (1u << 24) ||
             !geometry_of(h).valid_for(type(h.kv_type)) || h.slot_stride < geometry_of(h).page_bytes(type(h.kv_type)))
        info.problem = "inconsistent layout";
    if (!info.problem.empty()) return false;
    info.fingerprint = h.fingerprint;
    info.kv_type = type(h.kv_type);
    info.page_tokens = int32_t(h.page_tokens);
    page_file_label l;
    if (pread_full(fd, &l, sizeof l, PAGE_FILE_LABEL_OFFSET)) {
        info.model_name = label_field(l.model_name, sizeof l.model_name);
        info.model_file = label_field(l.model_file, sizeof l.model_file);
    }
    return true;
}


// Bytes of a published entry's data, 0 when its type cannot be one.
size_t entry_data_bytes(const page_file_header & h, const slot_entry & e) {
    if (h.kv_type >= TYPE_ID_LIMIT || !type_known(h.kv_type)) return 0;
    return slot_data_bytes(geometry_of(h), type(h.kv_type), e);
}

// Calls f(slot, entry) for each entry of the used part of the table.
template <class F> void for_each_entry(int fd, const page_file_header & h, F f) {
    const uint64_t n = std::min(h.slots_used, h.max_slots);
    std::vector<slot_entry> buf(4096);
    for (uint64_t s0 = 0; s0 < n; s0 += buf.size()) {
        const size_t k = size_t(std::min<uint64_t>(buf.size(), n - s0));
        ssize_t r;
        while ((r = ::pread(fd, buf.data(), k * sizeof(slot_entry), off_t(h.table_offset + s0 * sizeof(slot_entry)))) < 0 &&
               errno == EINTR) {}
        if (r <= 0) return;
        for (size_t i = 0; i < size_t(r) / sizeof(slot_entry); ++i) f(s0 + i, buf[i]);
    }
}

} // namespace

std::string kv_default_dir() {
    if (const char * d = std::getenv("GLOAS_KV_DIR")) return std::strcmp(d, "none") == 0 ? std::string() : std::string(d);
    if (const char * x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/gloas/kv";
    if (const char * h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/gloas/kv";
    return std::string();
}

int make_private_dirs(const std::string & dir) {
    for (size_t i = 0; i <= dir.size();) {
        size_t j = dir.find('/', i);
        if (j == std::string::npos) j = dir.size();
        const std::string cur = dir.substr(0, j);
        i = j + 1;
        if (cur.empty()) continue;
        if (::mkdir(cur.c_str(), 0700) == 0) {
            ::chmod(cur.c_str(), 0700);  // a umask of 0700 or more would have left it unusable
            continue;
        }
        if (errno != EEXIST) return -1;
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

std::vector<page_file_info> kv_folder_list(const std::string & dir) {
    std::vector<page_file_info> out;
    for (const std::string & n : folder_names(dir)) {
        page_file_info info;
        info.path = dir + "/" + n;
        info.set_aside = kind_of(n) == 2;
        struct stat st;
        if (::stat(info.path.c_str(), &st) != 0) continue;
        info.disk_bytes = uint64_t(st.st_blocks) * 512;
        info.last_use = st.st_mtime;
        const int fd = ::open(info.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            info.problem = std::strerror(errno);
        } else {
            page_file_header h;
            info.readable = read_header(fd, info, h);
            if (info.readable) {
                for_each_entry(fd, h, [&](uint64_t, const slot_entry & e) {
                    if (e.state != uint32_t(slot_state::READY)) return;
                    info.pages += e.n_pieces == 0 || e.piece == 0;
                    info.page_bytes += entry_data_bytes(h, e);
                });
            }
            ::close(fd);
        }
        if (info.set_aside && info.problem.empty()) info.problem = "set aside";
        out.push_back(std::move(info));
    }
    return out;
}

uint64_t kv_folder_bytes(const std::string & dir, const std::string & skip) {
    uint64_t n = 0;
    for (const std::string & name : folder_names(dir)) {
        const std::string p = dir + "/" + name;
        struct stat st;
        if (p != skip && ::stat(p.c_str(), &st) == 0) n += uint64_t(st.st_blocks) * 512;
    }
    return n;
}

bool kv_folder_remove_unused(const std::string & path) {
    const size_t slash = path.rfind('/');
    const int kind = kind_of(slash == std::string::npos ? path : path.substr(slash + 1));
    if (kind == 0) return false;
    if (kind == 2) return ::unlink(path.c_str()) == 0;
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    // Every process using the file holds a shared lock on byte 1; one that
    // opens it after the unlink sees that the name is gone and opens again.
    bool removed = false;
    if (lock_range(fd, F_WRLCK, 1, 1, false)) removed = ::unlink(path.c_str()) == 0;
    ::close(fd);
    return removed;
}

uint64_t kv_folder_make_room(const std::string & dir, const std::string & skip, uint64_t bytes) {
    struct candidate {
        int kind;
        std::time_t mtime;
        uint64_t bytes;
        std::string path;
    };
    std::vector<candidate> c;
    for (const std::string & name : folder_names(dir)) {
        const std::string p = dir + "/" + name;
        struct stat st;
        if (p != skip && ::stat(p.c_str(), &st) == 0) c.push_back({-kind_of(name), st.st_mtime, uint64_t(st.st_blocks) * 512, p});
    }
    // Set-aside files first, then the least recently used.
    std::sort(c.begin(), c.end(), [](const candidate & a, const candidate & b) {
        return a.kind != b.kind ? a.kind < b.kind : a.mtime != b.mtime ? a.mtime < b.mtime : a.path < b.path;
    });
    uint64_t freed = 0;
    for (const candidate & x : c) {
        if (freed >= bytes) break;
        if (kv_folder_remove_unused(x.path)) freed += x.bytes;
    }
    return freed;
}

uint64_t kv_folder_verify(const std::string & path, std::vector<page_check> & bad) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(format("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    page_file_info info;
    page_file_header h;
    struct stat st0;
    if (::fstat(fd, &st0) == 0 && st0.st_size == 0) {
        // A run that could not write the header left it empty; the next one starts it afresh.
        ::close(fd);
        return 0;
    }
    if (!read_header(fd, info, h)) {
        ::close(fd);
        throw error(format("%s: cannot verify: %s", path.c_str(), info.problem.c_str()));
    }
    struct stat st;
    ::fstat(fd, &st);
    uint64_t checked = 0;
    std::vector<uint8_t> data;
    for_each_entry(fd, h, [&](uint64_t s, const slot_entry & listed) {
        if (listed.state != uint32_t(slot_state::READY)) return;
        const off_t at = off_t(h.table_offset + s * sizeof(slot_entry));
        // A shared use lock keeps writers and eviction off the slot; the entry
        // is read again under it. A writer's exclusive lock means the slot
        // was taken for a new page since it was listed: not published, skipped.
        if (!lock_range(fd, F_RDLCK, at, off_t(sizeof(slot_entry)), false)) return;
        slot_entry e;
        if (pread_full(fd, &e, sizeof e, uint64_t(at)) && e.state == uint32_t(slot_state::READY)) {
            const size_t bytes = entry_data_bytes(h, e);
            const uint64_t off = h.data_offset + s * h.slot_stride;
            data.resize(bytes);
            const bool ok = bytes > 0 && off + bytes <= uint64_t(st.st_size) &&
                            pread_full(fd, data.data(), bytes, off) &&
                            page_checksum(data.data(), bytes, e.hash) == e.checksum;
            if (!ok) bad.push_back({s, e.hash});
            checked += e.n_pieces == 0 || e.piece == 0;
        }
        lock_range(fd, F_UNLCK, at, off_t(sizeof(slot_entry)), true);
    });
    ::close(fd);
    return checked;
}

} // namespace gloas
