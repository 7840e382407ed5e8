#include "base/error.h"

#include <cstdarg>

namespace gloas {

std::string format(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string s(n > 0 ? size_t(n) : 0, '\0');
    if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

void assert_fail(const char * file, int line, const char * expr) {
    std::fprintf(stderr, "gloas: internal error: %s:%d: assertion failed: %s\n", file, line, expr);
    std::fflush(stderr);
    std::abort();
}

} // namespace gloas
