#include "tensor/ops.h"

#include <omp.h>

namespace gloas::ops {

namespace {
int g_n_threads = 0;  // 0: all hardware threads
}

void set_n_threads(int n) {
    g_n_threads = n > 0 ? n : 0;
    // Parallel regions that do not name a thread count use this one too.
    omp_set_num_threads(n_threads());
}

int n_threads() {
    return g_n_threads > 0 ? g_n_threads : omp_get_num_procs();
}

} // namespace gloas::ops
