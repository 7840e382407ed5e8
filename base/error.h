// Errors by who is at fault.
//
// GLOAS_ASSERT guards internal invariants: a failure is a bug in gloas and
// aborts with the location. Anything a user, a file or the machine can cause
// throws gloas::error (inside the C++ library) whose message names the file and
// what is wrong; front ends catch it, print it once and exit non-zero, and the C
// API turns it into a status code plus gloas_last_error().
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace gloas {

struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// printf-style message builder for errors.
std::string format(const char * fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

[[noreturn]] void assert_fail(const char * file, int line, const char * expr);

} // namespace gloas

#define GLOAS_ASSERT(x) \
    do { if (!(x)) ::gloas::assert_fail(__FILE__, __LINE__, #x); } while (0)
