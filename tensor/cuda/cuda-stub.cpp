// The CUDA backend's entry points in a build without CUDA (GLOAS_CUDA=OFF, or
// CMake found no CUDA compiler): nothing is usable, and each says why.
#include "tensor/cuda/cuda-backend.h"

#include "base/error.h"

namespace gloas {

namespace {
const char * const NO_CUDA = "this build has no CUDA backend (built with GLOAS_CUDA=OFF, or CMake found no CUDA compiler)";
}

bool cuda_built() { return false; }

bool cuda_usable(std::string * why, int) {
    if (why) *why = NO_CUDA;
    return false;
}

std::string cuda_device_name(int) { return std::string(); }

std::unique_ptr<backend> make_cuda_backend(int64_t, int) { throw error(NO_CUDA); }

double cuda_read_bandwidth(size_t, int, int) { throw error(NO_CUDA); }

void cuda_attention(const float *, const void *, const void *, type, int64_t, int, int, int, int64_t, float, float *) {
    throw error(NO_CUDA);
}

} // namespace gloas
