// A mapped file that another process shrinks: the reader stops with one
// message naming the file (tensor/mmap.h, watch_mapping), never a silent
// core dump; a SIGBUS outside the watched mappings keeps its default action.
#include "tensor/mmap.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

using namespace gloas;

namespace {

std::string make_file(const std::string & dir, size_t bytes) {
    const std::string path = dir + "/mapped.bin";
    FILE * f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    const std::string block(4096, 'x');
    for (size_t n = 0; n < bytes; n += block.size()) std::fwrite(block.data(), 1, block.size(), f);
    std::fclose(f);
    return path;
}

// Runs `child` in a forked process whose stderr is captured; returns its
// wait status and what it wrote.
template <class F>
int run_child(F child, std::string & err) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const struct rlimit no_core = {0, 0};
        ::setrlimit(RLIMIT_CORE, &no_core);  // a child killed by SIGBUS leaves no core file
        ::dup2(fds[1], 2);
        ::close(fds[0]);
        child();
        ::_exit(3);  // the read did not fault
    }
    ::close(fds[1]);
    char buf[1024];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) err.append(buf, size_t(n));
    ::close(fds[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
}

} // namespace

TEST_CASE("a watched mapping whose file is truncated ends the process with exit 1 and one line naming the file") {
    const std::string dir = test::temp_dir("mmap-watch");
    const std::string path = make_file(dir, 65536);
    std::string err;
    const int st = run_child(
        [&] {
            mapped_file m(path);
            if (::truncate(path.c_str(), 0) != 0) ::_exit(4);
            volatile uint8_t b = m.data()[40000];
            (void)b;
        },
        err);
    REQUIRE(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 1);
    CHECK(err.find(path + ": the file shrank while this process was reading it") != std::string::npos);
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
}

TEST_CASE("a SIGBUS outside the watched mappings keeps its default action; an unwatched mapping is not reported") {
    const std::string dir = test::temp_dir("mmap-watch-other");
    const std::string path = make_file(dir, 65536);
    std::string err;
    const int st = run_child(
        [&] {
            mapped_file watched(path);  // installs the handler
            const int fd = ::open(path.c_str(), O_RDONLY);
            void * p = ::mmap(nullptr, 65536, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) ::_exit(4);
            watch_mapping(p, 65536, "ours");
            unwatch_mapping(p);
            if (::truncate(path.c_str(), 0) != 0) ::_exit(4);
            volatile uint8_t b = static_cast<const uint8_t *>(p)[40000];
            (void)b;
        },
        err);
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer's own SIGBUS handler was the action before: it reports and exits.
    CHECK(!(WIFEXITED(st) && WEXITSTATUS(st) == 3));
#else
    CHECK(WIFSIGNALED(st));
    if (WIFSIGNALED(st)) CHECK(WTERMSIG(st) == SIGBUS);
#endif
    CHECK(err.find("ours") == std::string::npos);
    CHECK(err.find("shrank") == std::string::npos);
}
