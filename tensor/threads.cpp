// The thread count of the parallel ops and the pool that runs them
// (tensor/thread-pool.h).
//
// Synchronization: each share has a cursor, one 64-bit word
//   bits 32..63  the job's generation
//   bits 16..31  the next chunk of the share
//   bits  0..15  the share's number of chunks
// taken with a compare-and-swap that checks the generation, so a thread that
// wakes after its job ended can never take a chunk of the next one. The job's
// description (fn, ctx, ...) is written before the cursors are (release) and
// read after a chunk is taken (acquire); the caller returns only once every
// chunk is counted done, so a description is never rewritten while a chunk
// of it runs. Each worker sleeps on a word of its own, so a job wakes only
// the workers it uses.
#include "tensor/ops.h"
#include "tensor/thread-pool.h"

#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace gloas::ops {

namespace {

int g_n_threads = 0;  // 0: default_threads()

// ---- waiting --------------------------------------------------------------------

void futex_wait(std::atomic<uint32_t> * w, uint32_t expect) {
    static_assert(sizeof(std::atomic<uint32_t>) == 4, "a futex word");
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAIT_PRIVATE, expect, nullptr, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t> * w, int n) {
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(w), FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// How long a waiting thread spins before it sleeps: longer than the gaps
// between the parallel ops of a forward pass (norms, rope, the K/V store run
// on the caller), short enough that idle workers leave their cores soon.
constexpr uint64_t SPIN_NS = 50000;

// Spins until w != v or SPIN_NS pass; whether w changed.
bool spin_while_equal(const std::atomic<uint32_t> & w, uint32_t v) {
    const uint64_t t0 = now_ns();
    for (int i = 1;; ++i) {
        if (w.load(std::memory_order_acquire) != v) return true;
        cpu_relax();
        if (i % 64 == 0 && now_ns() - t0 > SPIN_NS) return w.load(std::memory_order_acquire) != v;
    }
}

// ---- the pool -------------------------------------------------------------------

constexpr int MAX_THREADS = 256;
constexpr int CHUNKS_PER_SHARE = 8;
constexpr int64_t MAX_CHUNKS = 0xffff;  // a share's chunks fit the cursor's 16 bits

struct alignas(64) cursor {
    std::atomic<uint64_t> v{0};
};

struct alignas(64) worker {
    std::atomic<uint32_t> go{0};        // generation of the last job handed to it
    std::atomic<uint32_t> sleeping{0};  // 1 while it sleeps (or is about to) on `go`
};

struct pool {
    std::mutex busy;                    // held by the thread whose job runs
    int n_workers = 0;                  // started workers (threads 1..n_workers)
    uint32_t gen = 0;                   // the current job's generation (caller only)
    cursor cur[MAX_THREADS];
    worker wk[MAX_THREADS];
    alignas(64) std::atomic<uint32_t> done{0};     // chunks done in the current job
    alignas(64) std::atomic<uint32_t> waiting{0};  // 1 while the caller sleeps on `done`
    // the current job (see the synchronization note above)
    alignas(64) std::atomic<range_fn> fn{nullptr};
    std::atomic<void *> ctx{nullptr};
    std::atomic<int64_t> n{0}, chunk{1};
    std::atomic<int> nth{1};
    std::atomic<uint32_t> total{0};     // chunks in the job
    std::mutex err_mu;
    std::exception_ptr err;             // the first exception a chunk of the job threw
};

thread_local bool tl_in_job = false;  // inside a job's chunk (nested jobs run inline)

pool * g_pool = nullptr;
std::once_flag g_pool_once;

pool & the_pool() {
    std::call_once(g_pool_once, [] {
        g_pool = new pool;  // never freed: workers sleep in it until the process ends
        // A child process has none of the workers: it starts a pool of its own.
        pthread_atfork(nullptr, nullptr, [] { g_pool = new pool; });
    });
    return *g_pool;
}

inline uint64_t cursor_word(uint32_t gen, uint32_t next, uint32_t count) {
    return uint64_t(gen) << 32 | uint64_t(next) << 16 | count;
}

// Takes the next chunk of share s in job `gen`; -1 when none is left (or the
// job is over).
int64_t take(pool & p, int s, uint32_t gen) {
    std::atomic<uint64_t> & c = p.cur[s].v;
    uint64_t v = c.load(std::memory_order_acquire);
    for (;;) {
        if (uint32_t(v >> 32) != gen) return -1;
        const uint32_t next = uint32_t(v >> 16) & 0xffff, count = uint32_t(v) & 0xffff;
        if (next >= count) return -1;
        if (c.compare_exchange_weak(v, v + (uint64_t(1) << 16), std::memory_order_acq_rel, std::memory_order_acquire))
            return next;
    }
}

// Runs the chunks thread `self` can take in job `gen`: its own share's, then
// what is left of the others'.
void work(pool & p, int self, uint32_t gen) {
    // the share count to scan: a hint until a chunk is taken, then the job's
    // (a stale hint only makes take() fail)
    int nth = std::min(MAX_THREADS, std::max(1, p.nth.load(std::memory_order_relaxed)));
    bool have = false;
    int64_t n = 0, chunk = 1;
    range_fn fn = nullptr;
    void * ctx = nullptr;
    uint32_t total = 0;
    tl_in_job = true;
    for (int k = 0; k < nth; ++k) {
        const int s = (self + k) % nth;
        int64_t j;
        while ((j = take(p, s, gen)) >= 0) {
            if (!have) {  // the job's description, now that a chunk of it is ours
                have = true;
                nth = p.nth.load(std::memory_order_relaxed);
                n = p.n.load(std::memory_order_relaxed);
                chunk = p.chunk.load(std::memory_order_relaxed);
                fn = p.fn.load(std::memory_order_relaxed);
                ctx = p.ctx.load(std::memory_order_relaxed);
                total = p.total.load(std::memory_order_relaxed);
            }
            const int64_t s0 = n * s / nth, s1 = n * (s + 1) / nth;
            const int64_t b = s0 + j * chunk, e = std::min(s1, b + chunk);
            try {
                fn(ctx, b, e);
            } catch (...) {
                std::lock_guard<std::mutex> g(p.err_mu);
                if (!p.err) p.err = std::current_exception();
            }
            const uint32_t d = p.done.fetch_add(1, std::memory_order_seq_cst) + 1;
            if (d == total && p.waiting.load(std::memory_order_seq_cst)) futex_wake(&p.done, 1);
        }
    }
    tl_in_job = false;
}

// Worker `self`, started when the last job handed out was `seen`.
void worker_main(pool * pp, int self, uint32_t seen) {
    pool & p = *pp;
    worker & w = p.wk[self];
    for (;;) {
        const uint32_t g = w.go.load(std::memory_order_acquire);
        if (g == seen) {
            if (!spin_while_equal(w.go, seen)) {
                w.sleeping.store(1, std::memory_order_seq_cst);
                if (w.go.load(std::memory_order_seq_cst) == seen) futex_wait(&w.go, seen);
                w.sleeping.store(0, std::memory_order_relaxed);
            }
            continue;
        }
        seen = g;
        work(p, self, g);
    }
}

// Starts workers up to index nth - 1 (the caller holds p.busy); returns the
// threads there are afterwards (the caller and every started worker, which
// may be more than nth).
int grow(pool & p, int nth) {
    while (p.n_workers < nth - 1) {
        const int self = p.n_workers + 1;
        p.wk[self].go.store(p.gen, std::memory_order_relaxed);
        try {
            std::thread(worker_main, &p, self, p.gen).detach();
        } catch (const std::system_error &) {
            break;  // no more threads: the job runs on those there are
        }
        ++p.n_workers;
    }
    return p.n_workers + 1;
}

// ---- cores --------------------------------------------------------------------

// Reads one integer from a sysfs file; -1 if it cannot.
long read_long(const char * path) {
    FILE * f = std::fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    if (std::fscanf(f, "%ld", &v) != 1) v = -1;
    std::fclose(f);
    return v;
}

// Busy and total time of each CPU (index: CPU number) from /proc/stat.
bool cpu_times(std::vector<std::pair<unsigned long long, unsigned long long>> & out) {
    FILE * f = std::fopen("/proc/stat", "r");
    if (!f) return false;
    out.clear();
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
        int cpu;
        unsigned long long v[8] = {};
        if (std::strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
        if (std::sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                        &v[5], &v[6], &v[7]) < 5 || cpu < 0 || cpu >= CPU_SETSIZE)
            continue;
        // user nice system idle iowait irq softirq steal
        const unsigned long long total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        const unsigned long long idle = v[3] + v[4];
        if (size_t(cpu) >= out.size()) out.resize(size_t(cpu) + 1, {0, 0});
        out[size_t(cpu)] = {total - idle, total};
    }
    std::fclose(f);
    return !out.empty();
}

int allowed_cpus(cpu_set_t & set) {
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

} // namespace

void run_parallel(int64_t n, int nth, int64_t chunk, range_fn fn, void * ctx) {
    if (n <= 0) return;
    if (nth > 1 && n > 1 && !tl_in_job) {
        pool & p = the_pool();
        std::unique_lock<std::mutex> lock(p.busy, std::try_to_lock);
        if (lock.owns_lock()) {
            nth = int(std::min<int64_t>({int64_t(nth), int64_t(MAX_THREADS), n}));
            nth = std::min(nth, grow(p, nth));  // grow() reports every started worker
            if (nth > 1) {
                const int64_t longest = (n + nth - 1) / nth;
                if (chunk <= 0) chunk = (longest + CHUNKS_PER_SHARE - 1) / CHUNKS_PER_SHARE;
                chunk = std::max<int64_t>({chunk, 1, (longest + MAX_CHUNKS - 1) / MAX_CHUNKS});
                if (++p.gen == 0) ++p.gen;
                const uint32_t gen = p.gen;
                uint32_t total = 0;
                uint32_t count[MAX_THREADS];
                for (int s = 0; s < nth; ++s) {
                    const int64_t len = n * (s + 1) / nth - n * s / nth;
                    count[s] = uint32_t((len + chunk - 1) / chunk);
                    total += count[s];
                }
                p.done.store(0, std::memory_order_relaxed);
                p.total.store(total, std::memory_order_relaxed);
                p.fn.store(fn, std::memory_order_relaxed);
                p.ctx.store(ctx, std::memory_order_relaxed);
                p.n.store(n, std::memory_order_relaxed);
                p.chunk.store(chunk, std::memory_order_relaxed);
                p.nth.store(nth, std::memory_order_relaxed);
                for (int s = 0; s < nth; ++s) p.cur[s].v.store(cursor_word(gen, 0, count[s]), std::memory_order_release);
                for (int w = 1; w < nth; ++w) {
                    p.wk[w].go.store(gen, std::memory_order_seq_cst);
                    if (p.wk[w].sleeping.load(std::memory_order_seq_cst)) futex_wake(&p.wk[w].go, 1);
                }
                work(p, 0, gen);
                // every chunk done (chunks still running were taken by workers)
                while (p.done.load(std::memory_order_acquire) != total) {
                    if (spin_while_equal(p.done, p.done.load(std::memory_order_acquire))) continue;
                    p.waiting.store(1, std::memory_order_seq_cst);
                    const uint32_t d = p.done.load(std::memory_order_seq_cst);
                    if (d != total) futex_wait(&p.done, d);
                    p.waiting.store(0, std::memory_order_relaxed);
                }
                // (every chunk is done: nothing else writes err now)
                if (p.err) std::rethrow_exception(std::exchange(p.err, nullptr));
                return;
            }
        }
    }
    const bool nested = tl_in_job;
    tl_in_job = true;
    fn(ctx, 0, n);
    tl_in_job = nested;
}

int physical_cores() {
    cpu_set_t set;
    if (allowed_cpus(set) == 0) return 1;
    std::set<std::pair<long, long>> cores;  // (package, core)
    int logical = 0;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (!CPU_ISSET(c, &set)) continue;
        ++logical;
        char path[128];
        std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        const long pkg = read_long(path);
        std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        const long core = read_long(path);
        cores.insert(core < 0 ? std::make_pair(-1L - c, long(c)) : std::make_pair(pkg, core));
    }
    return std::max(1, cores.empty() ? logical : int(cores.size()));
}

int busy_cpus(int ms) {
    cpu_set_t set;
    if (allowed_cpus(set) == 0) return 0;
    std::vector<std::pair<unsigned long long, unsigned long long>> a, b;
    if (!cpu_times(a)) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max(1, ms)));
    if (!cpu_times(b)) return 0;
    int busy = 0;
    for (size_t c = 0; c < std::min(a.size(), b.size()); ++c) {
        if (!CPU_ISSET(int(c), &set) || b[c].second <= a[c].second) continue;
        const double f = double(b[c].first - a[c].first) / double(b[c].second - a[c].second);
        busy += f > 0.6;
    }
    return busy;
}

int default_threads() {
    static const int n = [] {
        cpu_set_t set;
        const int allowed = allowed_cpus(set), phys = physical_cores();
        if (allowed <= 1 || phys <= 1) return 1;
        return std::max(1, std::min(phys, allowed - busy_cpus()));
    }();
    return n;
}

void set_n_threads(int n) {
    g_n_threads = n > 0 ? n : 0;
    // OpenMP regions that do not name a thread count (tools) use this one too.
    if (n > 0) omp_set_num_threads(n);
}

int n_threads() { return g_n_threads > 0 ? g_n_threads : default_threads(); }

} // namespace gloas::ops
