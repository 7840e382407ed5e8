// Helpers shared by the fuzz targets (tests/fuzz/fuzz-*.cpp).
#pragma once

#include "base/error.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gloas::fuzz {

// The path of a model file, found where the tests look (test-util.h's
// model_path: <source>/models, $GLOAS_MODELS, <source>/../shared/models; the
// fuzz targets do not link the test runner); when it is missing, prints the
// tests' skip line and exits 77, which ctest (the smoke run) reports as
// skipped and `make fuzz` as a skipped target.
inline std::string need_model(const std::string & name) {
    std::string dirs[3] = {std::string(GLOAS_SOURCE_DIR) + "/models", "", std::string(GLOAS_SOURCE_DIR) + "/../shared/models"};
    if (const char * env = std::getenv("GLOAS_MODELS"); env && *env) dirs[1] = env;
    for (const std::string & d : dirs) {
        struct stat st;
        if (!d.empty() && ::stat((d + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) return d + "/" + name;
    }
    std::printf("SKIPPED: needs models/%s (models/fetch.sh %s, or GLOAS_MODELS)\n", name.c_str(), name.c_str());
    std::fflush(stdout);
    std::_Exit(77);
}

// An in-memory file holding exactly `data`, for readers that take a path:
// path() names it (/proc/self/fd/N) until the object goes.
class memory_file {
public:
    memory_file(const uint8_t * data, size_t size) {
        fd_ = ::memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd_ < 0) std::abort();
        size_t done = 0;
        while (done < size) {
            const ssize_t n = ::write(fd_, data + done, size - done);
            if (n <= 0) std::abort();
            done += size_t(n);
        }
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~memory_file() { ::close(fd_); }
    memory_file(const memory_file &) = delete;
    memory_file & operator=(const memory_file &) = delete;
    const std::string & path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};

// A sum over the bytes at p: the first, the last and a stride through them,
// so that every page a reader hands out is touched.
inline uint64_t sum_bytes(const uint8_t * p, size_t n) {
    uint64_t h = 0;
    if (n) h += p[0] + p[n - 1];
    for (size_t k = 0; k < n; k += 4093) h += p[k];
    return h;
}

// The body of a file reader's fuzz target: Reader::parse(data, size, name),
// then touch(file). A gloas::error is the expected outcome for a bad image;
// anything else (a crash, a sanitizer report, another exception) is a bug.
template <class Reader, class Touch>
int parse_and_touch(const uint8_t * data, size_t size, const char * name, Touch touch) {
    try {
        auto f = Reader::parse(data, size, name);
        touch(*f);
    } catch (const gloas::error &) {
    }
    return 0;
}

} // namespace gloas::fuzz
