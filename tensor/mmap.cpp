#include "tensor/mmap.h"

#include "base/error.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gloas {

namespace {

// The watched ranges: a slot is free while base is 0. Writers fill bytes and
// path before publishing base (release); the handler reads base first
// (acquire), so it never sees a half-written path.
struct watched_range {
    std::atomic<uintptr_t> base{0};
    size_t bytes = 0;
    char path[512] = {};
};
constexpr int WATCH_SLOTS = 64;
watched_range g_watched[WATCH_SLOTS];
std::mutex g_watch_mu;  // writers only
struct sigaction g_prev_bus;

void write_all(const char * s) {
    size_t n = std::strlen(s);
    while (n > 0) {
        const ssize_t w = ::write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= size_t(w);
    }
}

void on_sigbus(int sig, siginfo_t * info, void * ctx) {
    const uintptr_t at = uintptr_t(info->si_addr);
    for (auto & r : g_watched) {
        const uintptr_t b = r.base.load(std::memory_order_acquire);
        if (b == 0 || at < b || at - b >= r.bytes) continue;
        write_all(program_invocation_short_name);
        write_all(": error: ");
        write_all(r.path);
        write_all(": the file shrank while this process was reading it (truncated or rewritten in place by "
                  "another process); stopping\n");
        ::_exit(1);
    }
    // Not ours: the action there was before (the default one dumps core).
    if (g_prev_bus.sa_flags & SA_SIGINFO) {
        if (g_prev_bus.sa_sigaction) return g_prev_bus.sa_sigaction(sig, info, ctx);
    } else if (g_prev_bus.sa_handler != SIG_DFL && g_prev_bus.sa_handler != SIG_IGN) {
        return g_prev_bus.sa_handler(sig);
    }
    ::signal(SIGBUS, SIG_DFL);  // the faulting read runs again and gets the default action
}

} // namespace

void watch_mapping(const void * base, size_t bytes, const std::string & path) {
    if (!base || bytes == 0) return;
    std::lock_guard<std::mutex> l(g_watch_mu);
    static bool installed = false;
    if (!installed) {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGBUS, &sa, &g_prev_bus);
        installed = true;
    }
    for (auto & r : g_watched) {
        if (r.base.load(std::memory_order_relaxed) != 0) continue;
        r.bytes = bytes;
        std::snprintf(r.path, sizeof r.path, "%s", path.c_str());
        r.base.store(uintptr_t(base), std::memory_order_release);
        return;
    }
}

void unwatch_mapping(const void * base) {
    if (!base) return;
    std::lock_guard<std::mutex> l(g_watch_mu);
    for (auto & r : g_watched)
        if (r.base.load(std::memory_order_relaxed) == uintptr_t(base)) r.base.store(0, std::memory_order_release);
}

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
        watch_mapping(data_, size_, path_);
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
    if (data_) {
        unwatch_mapping(data_);
        ::munmap(const_cast<uint8_t *>(data_), size_);
    }
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
