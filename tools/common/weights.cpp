#include "tools/common/weights.h"

#include "base/error.h"

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <utility>
#include <vector>

namespace gloas::cli {

namespace {

// Where the model file is mapped in this process: [begin, end) ranges of
// /proc/self/maps whose file is `path`.
std::vector<std::pair<uintptr_t, uintptr_t>> file_mappings(const std::string & path) {
    std::vector<std::pair<uintptr_t, uintptr_t>> r;
    char real[PATH_MAX];
    if (!::realpath(path.c_str(), real)) return r;
    FILE * f = std::fopen("/proc/self/maps", "r");
    if (!f) return r;
    char line[PATH_MAX + 256];
    while (std::fgets(line, sizeof line, f)) {
        unsigned long long b = 0, e = 0;
        int name_at = 0;
        if (std::sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &b, &e, &name_at) < 2 || name_at <= 0) continue;
        std::string name(line + name_at);
        while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
        if (name == real) r.emplace_back(uintptr_t(b), uintptr_t(e));
    }
    std::fclose(f);
    return r;
}

} // namespace

void place_weights(const model & m, bool copy, bool lock, const char * tool) {
    const auto ranges = file_mappings(m.path);
    for (const auto & [b, e] : ranges) {
        void * at = reinterpret_cast<void *>(b);
        const size_t n = e - b;
        if (copy) {
            std::vector<uint8_t> tmp(static_cast<const uint8_t *>(at), static_cast<const uint8_t *>(at) + n);
            void * p = ::mmap(at, n, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) throw error(format("--no-mmap: cannot allocate %zu bytes: %s", n, std::strerror(errno)));
            ::madvise(p, n, MADV_HUGEPAGE);  // advice: where THP is off, plain pages
            std::memcpy(p, tmp.data(), n);
            ::mprotect(p, n, PROT_READ);
        }
        if (lock && ::mlock(at, n) != 0) {
            std::fprintf(stderr, "%s: warning: --mlock: cannot lock %.1f MiB of weights in RAM: %s (see ulimit -l)\n",
                         tool, double(n) / 1048576.0, std::strerror(errno));
            lock = false;
        }
    }
    if (ranges.empty() && (copy || lock))
        std::fprintf(stderr, "%s: warning: %s: the model's mapping was not found; %s has no effect\n", tool,
                     m.path.c_str(), copy ? "--no-mmap" : "--mlock");
}

} // namespace gloas::cli
