// The interface between the forward pass and the machine it runs on.
//
// The forward pass (decoder/llama.cpp) is written once, over this interface
// and the kv_cache of each sequence (kvcache/kv-cache.h). It makes the
// weights resident once with `weight`, keeps its activations in buffers the
// backend allocates, copies token ids and positions in with `upload` and the
// logits out with `to_host`, and calls the ops below. It never reads or
// writes backend memory itself: every pointer it hands to an op, or to its
// kv_cache's store and attend, is an address inside a backend buffer or a
// weight view `weight` returned, device memory on a GPU backend (whose
// kv_cache, on the CPU, gets host copies instead: host_addressable). Arithmetic on
// those addresses (row t of a buffer) is allowed; dereferencing them is not.
//
// Ops may run asynchronously but in the order they were called; `to_host`
// returns once every op called before it is done. Each op computes what the
// ops.h function it names computes (the CPU backend calls exactly that
// function, so its results are those bit for bit); a GPU backend states its
// error bound against the `_ref` twin.
//
// Shapes are (rows, cols), the last index fastest; rows of an activation are
// the tokens of the chunk.
//
// A backend implements, in tensor/<name>/ or tensor/<name>-backend.*:
// alloc_bytes / free_bytes, upload, to_host, weight, the ops, and the
// profiling hooks; and a kv_cache whose store and attend read and write its
// memory.
#pragma once

#include "tensor/ops.h"
#include "tensor/profile.h"
#include "tensor/tensor.h"

#include <cstddef>
#include <cstdint>
#include <utility>

namespace gloas {

class backend;

// Memory a backend allocated, returned to it when the buffer goes. Move-only.
// It starts zeroed.
class buffer {
public:
    buffer() = default;
    buffer(buffer && o) noexcept { swap(o); }
    buffer & operator=(buffer && o) noexcept {
        buffer t(std::move(o));
        swap(t);
        return *this;
    }
    buffer(const buffer &) = delete;
    buffer & operator=(const buffer &) = delete;
    ~buffer();

    void * data() const { return data_; }
    size_t bytes() const { return bytes_; }
    float * f32() const { return static_cast<float *>(data_); }
    int32_t * i32() const { return static_cast<int32_t *>(data_); }

private:
    friend class backend;
    buffer(backend * be, void * data, size_t bytes) : be_(be), data_(data), bytes_(bytes) {}
    void swap(buffer & o) noexcept;

    backend * be_ = nullptr;
    void * data_ = nullptr;
    size_t bytes_ = 0;
};

class backend {
public:
    virtual ~backend() = default;
    backend() = default;
    backend(const backend &) = delete;
    backend & operator=(const backend &) = delete;

    virtual const char * name() const = 0;  // "cpu", "cuda"

    // Whether backend memory is host memory. When it is not (a GPU), the
    // forward pass copies K, V and Q to the host for each sequence's kv_cache,
    // whose store and attend then run on the CPU, and uploads the attention
    // output.
    virtual bool host_addressable() const { return true; }

    // ---- memory
    // `bytes` of backend memory, zeroed (none for 0). Throws gloas::error
    // when the memory is not there. The backend must outlive the buffer.
    buffer alloc(size_t bytes);
    // Copies `bytes` from host memory src to backend memory dst.
    virtual void upload(void * dst, const void * src, size_t bytes) = 0;
    // Copies `bytes` from backend memory src to host memory dst, once every
    // op called before it is done.
    virtual void to_host(void * dst, const void * src, size_t bytes) = 0;

    // Makes a weight resident (once, at context creation) and returns its view
    // in backend memory: the tensor the ops below take, as the same type and
    // shape. An empty tensor stays empty. The host view must outlive the
    // backend (the CPU backend returns it unchanged and reads the mapped file).
    virtual tensor weight(const tensor & host) = 0;

    // ---- ops
    // y (n, w.ne[0]) = rows ids[0, n) of w, widened or dequantized (ops::get_row).
    // ids: (n) in backend memory, each in [0, w.nrows()).
    virtual void get_rows(const tensor & w, const int32_t * ids, int64_t n, float * y) = 0;
    // Each row of y (n_tok, width) = ops::rmsnorm of that row of x with gain
    // g (width). y may alias x.
    virtual void rmsnorm(float * y, const float * x, const float * g, int64_t n_tok, int64_t width, float eps) = 0;
    // y (n_tok, n_out) = x (n_tok, n_in) · w^T (ops::matmul). w: a view
    // `weight` returned; n_tok at most the backend's token limit.
    virtual void matmul(const tensor & w, const float * x, int64_t n_tok, float * y) = 0;
    // y[i] = x · w[i]^T for n matrices of one input width (ops::matmul_n): the
    // projections of one normed input, computed together.
    virtual void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok) = 0;
    // Each row of y (n_tok, width) += b (width) (ops::add per row).
    virtual void bias(float * y, const float * b, int64_t n_tok, int64_t width) = 0;
    // y += x, n values (ops::add).
    virtual void add(float * y, const float * x, int64_t n) = 0;
    // Row t of y (n_tok, n_head, head_dim) = row t of x rotated at position
    // pos[t] (ops::rope_ex). y may equal x (in place); otherwise x is not
    // changed. pos: (n_tok) in backend memory; p.factors, when set, too (a
    // weight view).
    virtual void rope(float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
                      const int32_t * pos, const ops::rope_params & p) = 0;
    // y = silu(g) * u, n values (ops::silu_mul). y may alias g or u.
    virtual void silu_mul(float * y, const float * g, const float * u, int64_t n) = 0;
    // y = gelu(g) * u, n values, with the tanh form of GELU:
    //   gelu(x) = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
    // y may alias g or u.
    virtual void gelu_mul(float * y, const float * g, const float * u, int64_t n) = 0;
    // The first n_scaled values of each of n_rows rows of width `width` of y
    // are multiplied by s (whole rows: n_scaled = width).
    virtual void scale(float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float s) = 0;
    // y = cap * tanh(y / cap), n values (soft-capping, cap > 0).
    virtual void softcap(float * y, int64_t n, float cap) = 0;

    // ---- profiling (tensor/profile.h)
    // While profiling is on, each op above counts as one call of its op type
    // (get_rows GET_ROWS, rmsnorm RMSNORM, matmul and matmul_n MATMUL, bias
    // BIAS, add and scale ADD, rope ROPE, silu_mul and gelu_mul FFN_ACT,
    // softcap OUTPUT) in the layer last given to
    // set_layer (-1: outside the layers).
    virtual void set_layer(int32_t il) = 0;
    // While a group lives, the ops called in it are not counted one by one:
    // the whole span, with whatever else the caller does in it (a kv_cache's
    // store or attend, which are not backend ops), is one call of `o`. Groups
    // do not nest.
    class group {
    public:
        group(backend & be, profile::op o) : be_(be) { be_.begin_group(o); }
        ~group() { be_.end_group(); }
        group(const group &) = delete;
        group & operator=(const group &) = delete;

    private:
        backend & be_;
    };

protected:
    virtual void * alloc_bytes(size_t bytes) = 0;  // zeroed; throws gloas::error
    virtual void free_bytes(void * p) = 0;
    virtual void begin_group(profile::op o) = 0;
    virtual void end_group() = 0;

    friend class buffer;
};

inline buffer backend::alloc(size_t bytes) { return bytes == 0 ? buffer() : buffer(this, alloc_bytes(bytes), bytes); }

inline buffer::~buffer() {
    if (be_ && data_) be_->free_bytes(data_);
}

inline void buffer::swap(buffer & o) noexcept {
    std::swap(be_, o.be_);
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
}

} // namespace gloas
