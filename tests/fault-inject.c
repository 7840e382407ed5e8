/* An LD_PRELOAD shim that makes one I/O call fail on purpose, for the I/O
 * fault sweep (tests/fault-sweep.sh).
 *
 * Calls: write, pwrite, fallocate, fsync (fsync and fdatasync), pread, mmap,
 * ftruncate (each with its 64-bit twin), and the io_uring system calls
 * io_uring_setup and io_uring_enter (made through syscall(2), as gloas makes
 * them: there is no C library function). Only calls the program makes by
 * these names are seen: the C library's own (stdio's writes, its internal
 * mmaps) are not. A failed io_uring_enter submits nothing: reads the ring
 * already holds stay in flight, as when the kernel refuses a call.
 * io_uring_cqe is the kernel's answer rather than a call: the Nth completion
 * a ring posts (counted as io_uring_enter returns) gets the error as its
 * result (-errno), as a read the device failed would; a completion the
 * program has already taken when the shim first sees it is counted, not
 * failed.
 *
 * Environment:
 *   GLOAS_FAULT_CALL   the call to fail: one of the names above
 *   GLOAS_FAULT_N      fail its Nth matching call (from 1); 0 or unset: none,
 *                      only count
 *   GLOAS_FAULT_ERRNO  ENOSPC, EIO (default) or EINTR
 *   GLOAS_FAULT_MODE   once (default): only the Nth call fails; from: the Nth
 *                      and every later one (a disk that stays full)
 *   GLOAS_FAULT_PATH   only calls on files whose path contains this text
 *                      (default: any file but standard input, output and
 *                      error); in-memory files (memfd) and anonymous
 *                      mappings are never failed
 *   GLOAS_FAULT_REPORT a file to which, at exit, one line per call is
 *                      appended: "CALL COUNT", then "injected CALL N ERRNO"
 *                      for each failure injected
 * A failed call returns -1 with errno set and does nothing (mmap:
 * MAP_FAILED). ENOSPC fails an ftruncate only when it grows the file (a full
 * disk still lets a file shrink). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/io_uring.h>

enum { C_WRITE, C_PWRITE, C_FALLOCATE, C_FSYNC, C_PREAD, C_MMAP, C_FTRUNCATE, C_URING_SETUP, C_URING_ENTER,
       C_URING_CQE, N_CALLS };
static const char * const call_names[N_CALLS] = {"write", "pwrite", "fallocate", "fsync", "pread", "mmap",
                                                 "ftruncate", "io_uring_setup", "io_uring_enter", "io_uring_cqe"};

static int target = -1;          /* the call to fail, or -1 */
static long fail_n = 0;
static int fail_errno = EIO;
static int fail_from = 0;
static const char * path_part = NULL;
static long counts[N_CALLS];
static long injected[N_CALLS];

static const char * errno_name(int e) { return e == ENOSPC ? "ENOSPC" : e == EINTR ? "EINTR" : "EIO"; }

/* The wrapped functions: real_NAME points to the C library's NAME. */
#define WRAPPED(X) X(write) X(pwrite) X(pwrite64) X(fallocate) X(fallocate64) X(fsync) X(fdatasync) \
    X(pread) X(pread64) X(mmap) X(mmap64) X(ftruncate) X(ftruncate64) X(syscall)
#define REAL(name) static __typeof__(name) * real_##name;
WRAPPED(REAL)

static void * next_symbol(const char * name) {
    void * p = dlsym(RTLD_NEXT, name);
    if (!p) abort();  /* a C library without it: nothing sensible to do */
    return p;
}

__attribute__((constructor)) static void fault_init(void) {
#define LOAD_REAL(name) real_##name = next_symbol(#name);
    WRAPPED(LOAD_REAL)
    const char * c = getenv("GLOAS_FAULT_CALL");
    if (c)
        for (int i = 0; i < N_CALLS; ++i)
            if (strcmp(c, call_names[i]) == 0) target = i;
    const char * n = getenv("GLOAS_FAULT_N");
    if (n) fail_n = atol(n);
    const char * e = getenv("GLOAS_FAULT_ERRNO");
    if (e && strcmp(e, "ENOSPC") == 0) fail_errno = ENOSPC;
    if (e && strcmp(e, "EINTR") == 0) fail_errno = EINTR;
    const char * m = getenv("GLOAS_FAULT_MODE");
    fail_from = m && strcmp(m, "from") == 0;
    path_part = getenv("GLOAS_FAULT_PATH");
    if (path_part && !*path_part) path_part = NULL;
}

__attribute__((destructor)) static void fault_report(void) {
    const char * r = getenv("GLOAS_FAULT_REPORT");
    if (!r || !real_write) return;
    int fd = open(r, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char buf[1024];
    int len = 0;
    for (int i = 0; i < N_CALLS; ++i)
        len += snprintf(buf + len, sizeof buf - (size_t) len, "%s %ld\n", call_names[i],
                        __atomic_load_n(&counts[i], __ATOMIC_RELAXED));
    for (int i = 0; i < N_CALLS; ++i)
        if (__atomic_load_n(&injected[i], __ATOMIC_RELAXED))
            len += snprintf(buf + len, sizeof buf - (size_t) len, "injected %s %ld %s\n", call_names[i], fail_n,
                            errno_name(fail_errno));
    if (real_write(fd, buf, (size_t) len) != len) { /* nothing to do about it */ }
    close(fd);
}

/* Whether a call on fd counts: a file (not fds 0-2, not an in-memory
 * memfd file, which is no I/O) whose path has path_part. */
static int watched(int fd) {
    if (fd < 0 || (fd <= 2 && !path_part)) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    if (strncmp(path, "/memfd:", 7) == 0) return 0;
    return !path_part || strstr(path, path_part) != NULL;
}

/* Counts a call on fd (-1: a call on no file); nonzero when it must fail
 * (errno is then set). */
static int should_fail(int call, int fd) {
    if (!real_write) fault_init();
    if (fd != -1 && !watched(fd)) return 0;
    long k = __atomic_add_fetch(&counts[call], 1, __ATOMIC_RELAXED);
    if (call != target || fail_n <= 0 || (fail_from ? k < fail_n : k != fail_n)) return 0;
    __atomic_add_fetch(&injected[call], 1, __ATOMIC_RELAXED);
    errno = fail_errno;
    return 1;
}

ssize_t write(int fd, const void * b, size_t n) { return should_fail(C_WRITE, fd) ? -1 : real_write(fd, b, n); }
ssize_t pwrite(int fd, const void * b, size_t n, off_t o) { return should_fail(C_PWRITE, fd) ? -1 : real_pwrite(fd, b, n, o); }
ssize_t pwrite64(int fd, const void * b, size_t n, off64_t o) { return should_fail(C_PWRITE, fd) ? -1 : real_pwrite64(fd, b, n, o); }
int fallocate(int fd, int mode, off_t o, off_t n) { return should_fail(C_FALLOCATE, fd) ? -1 : real_fallocate(fd, mode, o, n); }
int fallocate64(int fd, int mode, off64_t o, off64_t n) { return should_fail(C_FALLOCATE, fd) ? -1 : real_fallocate64(fd, mode, o, n); }
int fsync(int fd) { return should_fail(C_FSYNC, fd) ? -1 : real_fsync(fd); }
int fdatasync(int fd) { return should_fail(C_FSYNC, fd) ? -1 : real_fdatasync(fd); }
ssize_t pread(int fd, void * b, size_t n, off_t o) { return should_fail(C_PREAD, fd) ? -1 : real_pread(fd, b, n, o); }
ssize_t pread64(int fd, void * b, size_t n, off64_t o) { return should_fail(C_PREAD, fd) ? -1 : real_pread64(fd, b, n, o); }
/* A full disk (ENOSPC) fails only a truncate that grows the file, as the kernel does. */
static int grows(int fd, off64_t n) {
    struct stat st;
    return fail_errno != ENOSPC || fstat(fd, &st) != 0 || n > st.st_size;
}
int ftruncate(int fd, off_t n) { return grows(fd, n) && should_fail(C_FTRUNCATE, fd) ? -1 : real_ftruncate(fd, n); }
int ftruncate64(int fd, off64_t n) { return grows(fd, n) && should_fail(C_FTRUNCATE, fd) ? -1 : real_ftruncate64(fd, n); }
/* The ring whose completions are counted (the program's last one): its fd,
 * its setup parameters, the mapping of its completion queue, and how many of
 * its completions the shim has seen. */
static int uring_fd = -1;
static struct io_uring_params uring_p;
static char * uring_cq = NULL;
static unsigned uring_seen = 0;

static void note_ring_mapping(int fd, off_t o, void * at) {
    if (fd < 0 || fd != uring_fd || at == MAP_FAILED) return;
    if (o == (off_t) IORING_OFF_CQ_RING || (o == (off_t) IORING_OFF_SQ_RING && (uring_p.features & IORING_FEAT_SINGLE_MMAP)))
        uring_cq = at;
}

/* After an io_uring_enter on the ring: counts the completions posted since
 * the last look and fails the chosen one, if the program has not taken it. */
static void count_completions(int fd) {
    if (fd != uring_fd || !uring_cq) return;
    const unsigned tail = __atomic_load_n((unsigned *) (uring_cq + uring_p.cq_off.tail), __ATOMIC_ACQUIRE);
    const unsigned head = __atomic_load_n((unsigned *) (uring_cq + uring_p.cq_off.head), __ATOMIC_ACQUIRE);
    const unsigned mask = *(unsigned *) (uring_cq + uring_p.cq_off.ring_mask);
    struct io_uring_cqe * cqes = (struct io_uring_cqe *) (uring_cq + uring_p.cq_off.cqes);
    for (; uring_seen != tail; ++uring_seen) {
        const int taken = (int) (uring_seen - head) < 0;
        if (taken) {
            __atomic_add_fetch(&counts[C_URING_CQE], 1, __ATOMIC_RELAXED);
            continue;
        }
        if (should_fail(C_URING_CQE, -1)) cqes[uring_seen & mask].res = -fail_errno;
    }
}

void * mmap(void * a, size_t n, int prot, int flags, int fd, off_t o) {
    if (!(flags & MAP_ANONYMOUS) && should_fail(C_MMAP, fd)) return MAP_FAILED;
    void * r = real_mmap(a, n, prot, flags, fd, o);
    note_ring_mapping(fd, o, r);
    return r;
}
void * mmap64(void * a, size_t n, int prot, int flags, int fd, off64_t o) {
    if (!(flags & MAP_ANONYMOUS) && should_fail(C_MMAP, fd)) return MAP_FAILED;
    void * r = real_mmap64(a, n, prot, flags, fd, o);
    note_ring_mapping(fd, (off_t) o, r);
    return r;
}

/* syscall(2) passes up to six arguments in registers; they are read back as
 * longs and passed on unchanged, as the C library's own wrapper does. */
long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; ++i) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == __NR_io_uring_setup && should_fail(C_URING_SETUP, -1)) return -1;
    if (number == __NR_io_uring_enter && should_fail(C_URING_ENTER, (int) a[0])) return -1;
    if (!real_syscall) fault_init();
    const long r = real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (number == __NR_io_uring_setup && r >= 0) {
        uring_fd = (int) r;
        memcpy(&uring_p, (const void *) a[1], sizeof uring_p);
        uring_cq = NULL;
        uring_seen = 0;
    }
    if (number == __NR_io_uring_enter && r >= 0) count_completions((int) a[0]);
    return r;
}
