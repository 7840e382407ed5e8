// A read-only memory mapping of a whole file (weights are views into it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gloas {

class mapped_file {
public:
    mapped_file() = default;
    // Maps `path` read-only; throws gloas::error naming the file on failure.
    explicit mapped_file(const std::string & path);
    ~mapped_file();
    mapped_file(mapped_file && o) noexcept;
    mapped_file & operator=(mapped_file && o) noexcept;
    mapped_file(const mapped_file &) = delete;
    mapped_file & operator=(const mapped_file &) = delete;

    const uint8_t * data() const { return data_; }
    size_t size() const { return size_; }
    const std::string & path() const { return path_; }

private:
    void release();
    std::string path_;
    const uint8_t * data_ = nullptr;
    size_t size_ = 0;
};

// Mappings of files that another process may shrink while this one reads
// them (weights, K/V page files). A read past a mapped file's end raises
// SIGBUS; inside a watched range the signal prints one line naming the file
// ("PATH: the file shrank while this process was reading it ...") and ends the
// process with exit status 1, instead of a core dump without a word. A SIGBUS
// anywhere else keeps its default action. Up to 64 ranges are watched at a
// time (more are left unwatched); thread-safe.
void watch_mapping(const void * base, size_t bytes, const std::string & path);
void unwatch_mapping(const void * base);

// The whole file at `path`. Throws gloas::error "PATH: cannot open: ...",
// "PATH: read error", or, past max_bytes, "PATH: larger than N bytes; not a
// WHAT".
std::string read_whole_file(const std::string & path, size_t max_bytes = SIZE_MAX, const char * what = "");

// Creates `dir` and its missing parents (mode 0755), like `mkdir -p`.
// Returns 0, or -1 with errno set.
int make_dirs(const std::string & dir);

} // namespace gloas
