#include "tensor/ops.h"

#include <omp.h>

namespace gloas::ops {

namespace {
int g_n_threads = 0;  // 0: all hardware threads
}

void set_n_threads(int n) {
    g_n_threads = n > 0 ? n : 0;
}

int n_threads() {
    return g_n_threads > 0 ? g_n_threads : omp_get_num_procs();
}

} // namespace gloas::ops
