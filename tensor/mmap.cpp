#include "tensor/mmap.h"

#include "base/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gloas {

mapped_file::mapped_file(const std::string & path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(format("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        throw error(format("%s: cannot stat: %s", path.c_str(), std::strerror(e)));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error(format("%s: not a regular file", path.c_str()));
    }
    size_ = size_t(st.st_size);
    if (size_ > 0) {
        void * p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            ::close(fd);
            throw error(format("%s: cannot map %zu bytes: %s", path.c_str(), size_, std::strerror(e)));
        }
        data_ = static_cast<const uint8_t *>(p);
    }
    ::close(fd);
}

mapped_file::~mapped_file() { release(); }

mapped_file::mapped_file(mapped_file && o) noexcept
    : path_(std::move(o.path_)), data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
}

mapped_file & mapped_file::operator=(mapped_file && o) noexcept {
    if (this != &o) {
        release();
        path_ = std::move(o.path_);
        data_ = o.data_;
        size_ = o.size_;
        o.data_ = nullptr;
        o.size_ = 0;
    }
    return *this;
}

void mapped_file::release() {
    if (data_) ::munmap(const_cast<uint8_t *>(data_), size_);
    data_ = nullptr;
    size_ = 0;
}

std::string read_whole_file(const std::string & path, size_t max_bytes, const char * what) {
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) throw error(format("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        s.append(buf, n);
        if (s.size() > max_bytes) {
            std::fclose(f);
            throw error(format("%s: larger than %zu bytes; not a %s", path.c_str(), max_bytes, what));
        }
    }
    const bool bad = std::ferror(f) != 0;
    std::fclose(f);
    if (bad) throw error(format("%s: read error", path.c_str()));
    return s;
}

int make_dirs(const std::string & dir) {
    for (size_t i = 0; i <= dir.size();) {
        size_t j = dir.find('/', i);
        if (j == std::string::npos) j = dir.size();
        const std::string cur = dir.substr(0, j);
        if (!cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return -1;
        i = j + 1;
    }
    return 0;
}

} // namespace gloas
