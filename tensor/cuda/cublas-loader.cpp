// cuBLAS through dlopen (cublas-loader.h).
#include "tensor/cuda/cublas-loader.h"

#include "base/error.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace gloas::cuda {

namespace {

#define GLOAS_STR2(x) #x
#define GLOAS_STR(x) GLOAS_STR2(x)
const char * const LIBRARY = "libcublas.so." GLOAS_STR(CUBLAS_VER_MAJOR);

template <class F>
void load(void * lib, const char * name, F & f, std::string & missing) {
    f = reinterpret_cast<F>(dlsym(lib, name));
    if (!f) missing += missing.empty() ? name : std::string(", ") + name;
}

} // namespace

const cublas_api & cublas() {
    static cublas_api api;
    static std::string err;
    static std::once_flag once;
    std::call_once(once, [] {
        void * lib = dlopen(LIBRARY, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            const char * why = dlerror();
            err = format("cannot load %s (cuBLAS, part of the CUDA Toolkit): %s", LIBRARY, why ? why : "not found");
            return;
        }
        std::string missing;
        load(lib, "cublasCreate_v2", api.create, missing);
        load(lib, "cublasDestroy_v2", api.destroy, missing);
        load(lib, "cublasSetStream_v2", api.set_stream, missing);
        load(lib, "cublasSetMathMode", api.set_math_mode, missing);
        load(lib, "cublasGemmEx", api.gemm_ex, missing);
        load(lib, "cublasSgemm_v2", api.sgemm, missing);
        if (!missing.empty()) err = format("%s lacks %s", LIBRARY, missing.c_str());
    });
    if (!err.empty()) throw error(err);
    return api;
}

} // namespace gloas::cuda
