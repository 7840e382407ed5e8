// The threads of the parallel ops: a small pool of our own (not OpenMP), so
// that a core busy with another process costs its share of the work and no
// more.
//
// A job is items [0, n) cut into `nth` contiguous shares (share i: items
// [n*i/nth, n*(i+1)/nth)), each taken `chunk` items at a time. The calling
// thread works on share 0 and pool worker i on share i; a thread done with
// its own share takes the chunks still left in the others' (in share order),
// so a thread that starts late (its core busy, asleep) leaves its work to
// the others instead of holding them up. The job returns when every chunk is
// done; the caller never waits for a thread that took no chunk, only for
// chunks in progress.
//
// Waiting, on both sides, spins for a few tens of microseconds (the gaps
// between the ops of a forward pass) and then sleeps on a futex, so idle
// workers leave their cores to other processes, and a worker whose core is
// shared wakes with the scheduler's credit for having slept.
//
// Which thread runs which chunk changes from run to run; callers make each
// item's result independent of that (each item writes its own outputs,
// computed in a fixed order), so results do not depend on the threads.
//
// One job at a time: a parallel_for called from inside a job, or while
// another thread's job runs, runs its items on the calling thread. An
// exception thrown by a chunk is rethrown to the caller once every chunk is
// done (the first one, if several throw).
#pragma once

#include <cstdint>
#include <type_traits>

namespace gloas::ops {

// fn(ctx, begin, end): one chunk, items [begin, end).
using range_fn = void (*)(void * ctx, int64_t begin, int64_t end);

// Runs fn over [0, n) on up to nth threads (the caller and nth - 1 pool
// workers, started on first use); chunk <= 0 cuts each share into about 8.
void run_parallel(int64_t n, int nth, int64_t chunk, range_fn fn, void * ctx);

// f(begin, end) over chunks of [0, n), as run_parallel.
template <class F>
void parallel_for(int64_t n, int nth, int64_t chunk, F && f) {
    if (n <= 0) return;
    if (nth <= 1 || n == 1) {
        f(int64_t(0), n);
        return;
    }
    using FT = typename std::remove_reference<F>::type;
    run_parallel(n, nth, chunk, [](void * c, int64_t b, int64_t e) { (*static_cast<FT *>(c))(b, e); },
                 const_cast<void *>(static_cast<const void *>(&f)));
}

// Physical cores this process may run on (cores of its CPU affinity set,
// hyper-thread siblings counted once); at least 1.
int physical_cores();

// CPUs of this process's affinity set busy with other work, from the per-CPU
// times of /proc/stat over `ms` milliseconds: a CPU counts as busy when it
// was busy (not idle, not waiting for I/O) most of that time. 0 where that
// cannot be read.
int busy_cpus(int ms = 50);

// The default thread count: one per physical core, less the CPUs busy with
// other work (a thread that shares a core's time slices with another
// process holds the others up), at least 1:
//   max(1, min(physical_cores(), allowed CPUs - busy_cpus()))
// computed once, on first use.
int default_threads();

} // namespace gloas::ops
