// A tensor is a view: element type, up to 4 dims, byte strides and a data
// pointer. It owns nothing; weights are views into the mapped model file and
// activations are views into buffers the decoder allocates at context creation.
//
// ne[0] is the innermost dimension (the length of a row), as in ggml and GGUF:
// a weight of shape (n_out, n_in) has ne = {n_in, n_out} and its rows are the
// output features.
#pragma once

#include "quant/types.h"

#include <cstddef>
#include <cstdint>

namespace gloas {

constexpr int MAX_DIMS = 4;

struct tensor {
    type    t = type::F32;
    int64_t ne[MAX_DIMS] = {1, 1, 1, 1};  // elements per dimension
    size_t  nb[MAX_DIMS] = {0, 0, 0, 0};  // bytes per step in each dimension
    void *  data = nullptr;

    int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
    size_t  row_bytes() const { return row_size(t, ne[0]); }
    size_t  nbytes() const { return row_bytes() * size_t(nrows()); }
    // Row i of a contiguous tensor viewed as 2-D (ne[0], nrows()).
    const void * row(int64_t i) const { return static_cast<const char *>(data) + size_t(i) * nb[1]; }
    void *       row(int64_t i) { return static_cast<char *>(data) + size_t(i) * nb[1]; }
    bool empty() const { return data == nullptr; }
};

// A contiguous view of `data` with the given shape (n_dims <= 4).
tensor make_tensor(type t, int n_dims, const int64_t * ne, const void * data);
inline tensor make_tensor_2d(type t, int64_t ne0, int64_t ne1, const void * data) {
    const int64_t ne[2] = {ne0, ne1};
    return make_tensor(t, 2, ne, data);
}

} // namespace gloas
