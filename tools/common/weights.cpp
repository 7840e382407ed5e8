#include "tools/common/weights.h"

#include "base/error.h"
#include "decoder/autoconfig.h"
#include "decoder/strategy.h"

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

constexpr uintptr_t HUGE_PAGE = uintptr_t(2) << 20;

// Replaces the mapping [at, at + n) by anonymous memory holding its bytes.
// The copy is made beside it, at the same offset within a 2 MiB page (so
// the huge pages the kernel gives it stay whole when moved), then moved over
// it (mremap): at most one extra copy of the range exists at a time.
void copy_to_anonymous(void * at, size_t n) {
    const size_t span = n + HUGE_PAGE;
    void * raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw error(format("--no-mmap: cannot allocate %zu bytes: %s", n, std::strerror(errno)));
    // the first address from raw on at at's offset in a huge page
    const uintptr_t lo = reinterpret_cast<uintptr_t>(raw), off = reinterpret_cast<uintptr_t>(at) % HUGE_PAGE;
    const uintptr_t start = lo + (off + HUGE_PAGE - lo % HUGE_PAGE) % HUGE_PAGE;
    void * dst = reinterpret_cast<void *>(start);
    ::madvise(dst, n, MADV_HUGEPAGE);  // advice: where THP is off, plain pages
    std::memcpy(dst, at, n);
    ::mprotect(dst, n, PROT_READ);
    if (::mremap(dst, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED) {
        const int e = errno;
        ::munmap(raw, span);
        throw error(format("--no-mmap: cannot move %zu bytes of weights into place: %s", n, std::strerror(e)));
    }
    // what is left of the reservation on either side of the moved range
    if (start > lo) ::munmap(raw, start - lo);
    if (start + n < lo + span) ::munmap(reinterpret_cast<void *>(start + n), lo + span - (start + n));
}

} // namespace

bool copy_weights(const run_config & flags, const model & m) {
    if (flags.no_mmap || flags.mmap) return flags.no_mmap;
    return weights_copied_by_default(m.weight_bytes, available_ram_bytes());
}

void place_weights(const model & m, bool copy, bool lock, const char * tool) {
    const auto ranges = file_mappings(m.path);
    for (const auto & [b, e] : ranges) {
        void * at = reinterpret_cast<void *>(b);
        const size_t n = e - b;
        if (copy) copy_to_anonymous(at, n);
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
