#include "tools/common/files.h"

#include "base/error.h"

#include <cstdio>
#include <cstring>
#include <sys/stat.h>

namespace gloas::cli {

bool file_exists(const std::string & path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string & path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string & path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_gguf_file(const std::string & path) {
    char magic[4] = {};
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    const size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    return n == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

std::string base_name(std::string path, bool strip_ext) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    const size_t s = path.find_last_of('/');
    if (s != std::string::npos) path = path.substr(s + 1);
    const size_t dot = path.find_last_of('.');
    if (strip_ext && dot != std::string::npos && dot > 0) path = path.substr(0, dot);
    return path;
}

std::string read_stdin(const char * flag) {
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) s.append(buf, n);
    if (std::ferror(stdin)) throw error(format("%s: cannot read stdin", flag));
    return s;
}

} // namespace gloas::cli
