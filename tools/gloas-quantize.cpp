// gloas-quantize: rewrites a GGUF with Q8_0 or Q4_0 weight matrices.
//
//   gloas-quantize model-f16.gguf model-q4_0.gguf q4_0
//
// Which tensors change (as llama.cpp's llama-quantize decides for these types):
//  - matrices (2 dims or more) take the target type;
//  - 1-D tensors (norm weights) keep their type;
//  - output.weight takes --output-type, by default q8_0. llama.cpp picks q6_K for
//    a q4_0 mix when the row length is a multiple of 256 and q8_0 otherwise;
//    gloas has no q6_K, so q8_0, the nearest type above it, is the default;
//  - token_embd.weight takes --embd-type, by default the target type, or the
//    output type when the model has no output.weight (tied embeddings), as
//    llama.cpp does;
//  - a tensor whose rows are not a multiple of the 32-value block keeps its
//    type (llama.cpp refuses such a tensor for q4_0/q8_0; stories260K's 172-wide
//    FFN matrices are the common case).
// Values are quantized from f32 (f16/bf16 widened exactly; an already quantized
// tensor is dequantized first, only with --allow-requantize) with the library's
// quantizers, byte-identical to ggml's reference formulas. Metadata is copied;
// general.file_type and general.quantization_version are set.
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "decoder/llama-gguf.h"
#include "quant/types.h"
#include "tensor/error.h"

#include <omp.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace gloas;

namespace {

void usage(FILE * out) {
    std::fprintf(out,
        "usage: gloas-quantize [options] IN.gguf OUT.gguf TYPE\n"
        "\n"
        "Quantizes the weight matrices of a GGUF model. TYPE is q8_0 or q4_0.\n"
        "\n"
        "  --output-type T       type of output.weight: f32, f16, bf16, q8_0, q4_0\n"
        "                        (default q8_0, where llama.cpp would use q6_K or q8_0)\n"
        "  --embd-type T         type of token_embd.weight (default TYPE, or the output\n"
        "                        type when the embeddings are tied to the output)\n"
        "  --allow-requantize    accept input tensors that are already quantized\n"
        "                        (dequantized, then quantized again: quality drops)\n"
        "  -t, --threads N       threads (default: all)\n"
        "  --force               overwrite OUT.gguf if it exists\n"
        "  -q, --quiet           no per-tensor lines or progress on stderr\n"
        "  -h, --help            this text\n"
        "\n"
        "Norm weights and other 1-D tensors keep their type, and so do matrices whose\n"
        "rows are not a multiple of 32 values. Metadata is copied; general.file_type\n"
        "is set to the target type.\n");
}

[[noreturn]] void usage_error(const std::string & msg) {
    std::fprintf(stderr, "gloas-quantize: %s\n(see gloas-quantize --help)\n", msg.c_str());
    std::exit(2);
}

int64_t parse_int(const std::string & flag, const char * s, int64_t lo, int64_t hi) {
    char * end = nullptr;
    errno = 0;
    long long v = std::strtoll(s, &end, 10);
    if (errno || !end || *end || end == s || v < lo || v > hi)
        usage_error(format("%s: '%s' is not an integer in %lld..%lld", flag.c_str(), s, (long long) lo, (long long) hi));
    return v;
}

type parse_type(const std::string & flag, const char * s, bool quantized_only) {
    type t;
    if (!type_from_name(s, &t) || (quantized_only && !traits(t).is_quantized))
        usage_error(format("%s: unknown type '%s' (%s)", flag.c_str(), s, quantized_only ? "q8_0, q4_0" : "f32, f16, bf16, q8_0, q4_0"));
    return t;
}

bool exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}

// Fill callback: rows of `src` (type st, `ne0` values each) converted to `dt`.
gguf_writer::fill_fn make_fill(const uint8_t * src, type st, type dt, int64_t ne0) {
    return [src, st, dt, ne0](void * dst, int64_t row0, int64_t n_rows) {
        const size_t srs = row_size(st, ne0), drs = row_size(dt, ne0);
        const type_traits & sts = traits(st);
        const type_traits & dts = traits(dt);
        #pragma omp parallel
        {
            std::vector<float> row(static_cast<size_t>(ne0));
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < n_rows; ++r) {
                const uint8_t * in = src + size_t(row0 + r) * srs;
                uint8_t * out = static_cast<uint8_t *>(dst) + size_t(r) * drs;
                if (st == type::F32) std::memcpy(row.data(), in, srs);
                else sts.to_float(in, row.data(), ne0);
                if (dt == type::F32) std::memcpy(out, row.data(), drs);
                else dts.from_float(row.data(), out, ne0);
            }
        }
    };
}

} // namespace

int main(int argc, char ** argv) {
    std::vector<std::string> pos;
    type out_type = type::Q8_0, embd_type = type::F32;
    bool embd_set = false, force = false, quiet = false, requant = false;
    int threads = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char * {
            if (i + 1 >= argc) usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") { usage(stdout); return 0; }
        else if (a == "--output-type") out_type = parse_type(a, value(), false);
        else if (a == "--embd-type" || a == "--token-embedding-type") { embd_type = parse_type(a, value(), false); embd_set = true; }
        else if (a == "--allow-requantize") requant = true;
        else if (a == "-t" || a == "--threads") threads = int(parse_int(a, value(), 1, 1024));
        else if (a == "--force") force = true;
        else if (a == "-q" || a == "--quiet") quiet = true;
        else if (!a.empty() && a[0] == '-') usage_error("unknown option '" + a + "'");
        else pos.push_back(a);
    }
    if (pos.size() != 3) usage_error("expected IN.gguf OUT.gguf TYPE");
    const std::string in_path = pos[0], out_path = pos[1];
    const type target = parse_type("TYPE", pos[2].c_str(), true);
    if (threads > 0) omp_set_num_threads(threads);

    try {
        if (exists(out_path) && !force) throw error(format("%s: exists (pass --force to overwrite)", out_path.c_str()));
        const auto t0 = std::chrono::steady_clock::now();
        auto in = gguf_file::open(in_path);
        const bool has_output = in->find_tensor("output.weight") != nullptr;
        if (!embd_set) embd_type = has_output ? target : out_type;

        gguf_writer w;
        w.copy_metadata(*in);
        w.set_u32("general.file_type", llama_file_type(target));
        w.set_u32("general.quantization_version", 2);

        const size_t n = in->tensors().size();
        uint64_t bytes_in = 0, bytes_out = 0;
        size_t n_quantized = 0;
        for (size_t i = 0; i < n; ++i) {
            const gguf_tensor_info & t = in->tensors()[i];
            type want = t.t;
            if (t.name == "output.weight") want = out_type;
            else if (t.name == "token_embd.weight") want = embd_type;
            else if (t.n_dims >= 2) want = target;
            std::string note_s;
            if (want != t.t && t.ne[0] % traits(want).blck_size != 0) {
                note_s = format(" (rows of %lld values are not a multiple of %lld: kept)", (long long) t.ne[0],
                                (long long) traits(want).blck_size);
                want = t.t;
            }
            if (want != t.t && traits(t.t).is_quantized && !requant)
                throw error(format("%s: tensor '%s' is already %s; pass --allow-requantize to quantize it again to %s",
                                   in_path.c_str(), t.name.c_str(), type_name(t.t), type_name(want)));
            if (want == t.t) w.add_tensor(t.name, t.t, t.n_dims, t.ne, t.data);
            else {
                w.add_tensor(t.name, want, t.n_dims, t.ne, make_fill(static_cast<const uint8_t *>(t.data), t.t, want, t.ne[0]));
                ++n_quantized;
            }
            const int64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
            const uint64_t out_bytes = uint64_t(row_size(want, t.ne[0])) * uint64_t(rows);
            bytes_in += t.nbytes;
            bytes_out += out_bytes;
            if (!quiet)
                std::fprintf(stderr, "[%4zu/%4zu] %-32s [%6lld, %6lld] %5s -> %-5s %9.3f MiB -> %9.3f MiB%s\n", i + 1, n,
                             t.name.c_str(), (long long) t.ne[0], (long long) rows, type_name(t.t), type_name(want),
                             double(t.nbytes) / (1 << 20), double(out_bytes) / (1 << 20), note_s.c_str());
        }

        double last = -1.0;
        if (!quiet) {
            w.set_progress([&](size_t i, size_t nt, uint64_t done, uint64_t total) {
                const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                if (el - last < 0.5 && i < nt) return;
                last = el;
                std::fprintf(stderr, "\rgloas-quantize: %s: tensor %zu/%zu, %.0f/%.0f MiB, %.1f s ", out_path.c_str(), i, nt,
                             double(done) / (1 << 20), double(total) / (1 << 20), el);
                std::fflush(stderr);
            });
        }
        w.write(out_path);
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!quiet) std::fprintf(stderr, "\n");
        std::fprintf(stderr, "gloas-quantize: %s -> %s (%s): %zu of %zu tensors quantized, weights %.2f MiB -> %.2f MiB, %.2f s, %d threads\n",
                     in_path.c_str(), out_path.c_str(), type_name(target), n_quantized, n, double(bytes_in) / (1 << 20),
                     double(bytes_out) / (1 << 20), el, omp_get_max_threads());
    } catch (const error & e) {
        std::fprintf(stderr, "gloas-quantize: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "gloas-quantize: out of memory\n");
        return 1;
    }
    return 0;
}
