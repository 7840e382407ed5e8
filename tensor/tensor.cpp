#include "tensor/tensor.h"

#include "base/error.h"

namespace gloas {

tensor make_tensor(type t, int n_dims, const int64_t * ne, const void * data) {
    GLOAS_ASSERT(n_dims >= 1 && n_dims <= MAX_DIMS);
    tensor r;
    r.t = t;
    for (int i = 0; i < n_dims; ++i) r.ne[i] = ne[i];
    r.nb[0] = traits(t).type_size;
    r.nb[1] = row_size(t, r.ne[0]);
    for (int i = 2; i < MAX_DIMS; ++i) r.nb[i] = r.nb[i - 1] * size_t(r.ne[i - 1]);
    r.data = const_cast<void *>(data);
    return r;
}

} // namespace gloas
