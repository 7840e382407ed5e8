// gloas-quantize: rewrites a GGUF with quantized weight matrices, or reads
// one back out to F32/F16.
//
//   gloas-quantize model-f16.gguf model-q4_K_M.gguf q4_K_M
//   gloas-quantize --dequantize f32 model-q4_K_M.gguf model-f32.gguf
//
// TYPE is a quantized weight type (one with a general.file_type in
// quant/types.cpp's table) or a mix, q4_K_M / q5_K_M. Which tensors get which
// type follows llama.cpp's llama-quantize (llama_tensor_get_type) for a llama
// model without an importance matrix:
//  - 1-D tensors (norm weights) keep their type;
//  - output.weight (and token_embd.weight when the embeddings are tied, i.e.
//    there is no output.weight) takes q6_K, or q8_0 when its rows are not a
//    multiple of 256 or TYPE is q8_0 (--output-type overrides);
//  - the mixes: q4_K_M / q5_K_M are q4_K / q5_K with attn_v.weight and
//    ffn_down.weight in q6_K for the layers use_more_bits picks (the first
//    and last eighth of the layers and every third one between);
//  - other matrices (token_embd.weight included, unless --embd-type) take the
//    base type;
//  - a tensor whose rows are not a multiple of the type's block falls back as
//    llama.cpp does (type_traits::fallback: q4_K -> q5_0, q6_K -> q8_0, ...),
//    or keeps its type when the fallback's block does not divide them either
//    (stories260K's 172-wide FFN matrices).
// Values are quantized from f32 (f16/bf16 widened exactly; an already quantized
// tensor is dequantized first, only with --allow-requantize) with the library's
// reference quantizers, byte-identical to ggml's. Metadata is copied;
// general.file_type (llama.cpp's LLAMA_FTYPE numbering) and
// general.quantization_version are set.
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "quant/blocks.h"
#include "quant/types.h"
#include "base/error.h"
#include "tools/common/cli.h"
#include "tools/common/files.h"

#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <strings.h>
#include <vector>

using namespace gloas;

namespace {

using cli::parse_int;
using cli::usage_error;

// The weight types that quantize.
bool quantized_weight(type t) { return type_is_weight(t) && traits(t).is_quantized; }

// llama.cpp's _M mixes: the base type, with q6_K for the attn_v / ffn_down
// matrices use_more_bits picks, and their general.file_type (LLAMA_FTYPE).
struct mix {
    const char * name;
    type base;
    uint32_t file_type;
};
const mix MIXES[] = {{"q4_K_M", type::Q4_K, 15}, {"q5_K_M", type::Q5_K, 17}};

std::string target_list() {
    std::string s = type_names(quantized_weight);
    for (const mix & m : MIXES) s += std::string(", ") + m.name;
    return s;
}

void usage(FILE * out) {
    std::fprintf(out,
        "usage: gloas-quantize [options] IN.gguf OUT.gguf TYPE\n"
        "       gloas-quantize [options] --dequantize f32|f16 IN.gguf OUT.gguf\n"
        "\n"
        "Quantizes the weight matrices of a GGUF model. TYPE is a quantized weight type:\n"
        "  %s\n"
        "or a mix as llama.cpp makes them: q4_K_M or q5_K_M (q4_K / q5_K, with q6_K for\n"
        "attn_v and ffn_down in some layers and for the output).\n"
        "\n"
        "  --dequantize T        write every quantized tensor back out as T (f32 or f16;\n"
        "                        with f16, 1-D tensors stay f32), nothing is quantized\n"
        "  --output-type T       type of output.weight (default q6_K, or q8_0 when its\n"
        "                        rows are not a multiple of 256 or TYPE is q8_0)\n"
        "  --embd-type T         type of token_embd.weight (default TYPE, or the output\n"
        "                        type when the embeddings are tied to the output)\n"
        "  --allow-requantize    accept input tensors that are already quantized\n"
        "                        (dequantized, then quantized again: quality drops)\n"
        "  -t, --threads N       threads (default: all)\n"
        "  --force               overwrite OUT.gguf if it exists\n"
        "  -q, --quiet           no per-tensor lines or progress on stderr\n"
        "  -h, --help            this text\n"
        "\n"
        "T of --output-type and --embd-type is any weight type:\n"
        "  %s\n"
        "\n"
        "Norm weights and other 1-D tensors keep their type; a matrix whose rows are\n"
        "not a multiple of the type's block takes llama.cpp's fallback type or keeps\n"
        "its own. Metadata is copied; general.file_type is set.\n",
        type_names(quantized_weight).c_str(), type_names(type_is_weight).c_str());
}

// A weight type named on the command line (Q8_1 / Q8_K are activation types).
type parse_type(const std::string & flag, const char * s) {
    type t;
    if (!type_from_name(s, &t) || !type_is_weight(t))
        usage_error(format("%s: unknown type '%s' (%s)", flag.c_str(), s, type_names(type_is_weight).c_str()));
    return t;
}

// A quantization target: the base type, and for the _M mixes the rule that
// moves some attn_v / ffn_down matrices to q6_K.
struct target {
    type base = type::Q8_0;
    bool mix_m = false;     // q4_K_M / q5_K_M
    std::string name;       // as given, for messages
    uint32_t file_type = 0; // llama.cpp's LLAMA_FTYPE_MOSTLY_*
};

target parse_target(const char * s) {
    target t;
    t.name = s;
    for (const mix & m : MIXES) {
        if (strcasecmp(s, m.name) != 0) continue;
        t.base = m.base;
        t.mix_m = true;
        t.file_type = m.file_type;
        return t;
    }
    if (!type_from_name(s, &t.base) || !quantized_weight(t.base))
        usage_error(format("TYPE: unknown type '%s' (%s)", s, target_list().c_str()));
    t.file_type = traits(t.base).file_type;
    return t;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers, and
// every third layer between.
bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
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
    cli::prog = "gloas-quantize";
    std::vector<std::string> pos;
    type out_type = type::Q6_K, embd_type = type::F32, deq_type = type::F32;
    bool out_set = false, embd_set = false, force = false, quiet = false, requant = false, dequant = false;
    int threads = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&] { return cli::next_value(argc, argv, i); };
        if (a == "-h" || a == "--help") { usage(stdout); return 0; }
        else if (a == "--output-type") { out_type = parse_type(a, value()); out_set = true; }
        else if (a == "--embd-type" || a == "--token-embedding-type") { embd_type = parse_type(a, value()); embd_set = true; }
        else if (a == "--dequantize") {
            const char * v = value();
            if (!type_from_name(v, &deq_type) || (deq_type != type::F32 && deq_type != type::F16))
                usage_error(format("--dequantize: '%s' is not f32 or f16", v));
            dequant = true;
        }
        else if (a == "--allow-requantize") requant = true;
        else if (a == "-t" || a == "--threads") threads = int(parse_int(a, value(), 1, 1024));
        else if (a == "--force") force = true;
        else if (a == "-q" || a == "--quiet") quiet = true;
        else if (!a.empty() && a[0] == '-') usage_error("unknown option '" + a + "'");
        else pos.push_back(a);
    }
    if (pos.size() != (dequant ? 2u : 3u)) usage_error(dequant ? "expected IN.gguf OUT.gguf after --dequantize T" : "expected IN.gguf OUT.gguf TYPE");
    const std::string in_path = pos[0], out_path = pos[1];
    target tgt;
    if (dequant) {
        tgt.base = deq_type;
        tgt.name = type_name(deq_type);
        tgt.file_type = traits(deq_type).file_type;
    } else {
        tgt = parse_target(pos[2].c_str());
    }
    if (threads > 0) omp_set_num_threads(threads);

    return cli::run_main([&] {
        const double t0 = cli::now_s();
        if (cli::file_exists(out_path) && !force) throw error(format("%s: exists (pass --force to overwrite)", out_path.c_str()));
        auto in = gguf_file::open(in_path);
        const bool has_output = in->find_tensor("output.weight") != nullptr;

        // llama.cpp counts attn_v / ffn_down tensors in file order for use_more_bits
        int n_attn_v = 0, n_ffn_down = 0, i_attn_v = 0, i_ffn_down = 0;
        for (const gguf_tensor_info & t : in->tensors()) {
            n_attn_v += t.name.find("attn_v.weight") != std::string::npos;
            n_ffn_down += t.name.find("ffn_down") != std::string::npos;
        }

        gguf_writer w;
        w.copy_metadata(*in);
        w.set_u32("general.file_type", tgt.file_type);
        if (!dequant) w.set_u32("general.quantization_version", 2);

        const size_t n = in->tensors().size();
        uint64_t bytes_in = 0, bytes_out = 0;
        size_t n_quantized = 0;
        for (size_t i = 0; i < n; ++i) {
            const gguf_tensor_info & t = in->tensors()[i];
            type want = t.t;
            std::string note_s;
            if (dequant) {
                // quantized tensors -> T (1-D ones to f32); with f32, f16/bf16 tensors widen too
                if (traits(t.t).is_quantized) want = deq_type == type::F16 && t.n_dims >= 2 ? type::F16 : type::F32;
                else if (deq_type == type::F32) want = type::F32;
            } else {
                const bool is_output = t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
                const bool is_attn_v = t.name.find("attn_v.weight") != std::string::npos;
                const bool is_ffn_down = t.name.find("ffn_down") != std::string::npos;
                if (is_output) {
                    if (out_set) want = out_type;
                    else if (t.ne[0] % QK_K != 0 || tgt.base == type::Q8_0) want = type::Q8_0;
                    else want = type::Q6_K;
                    if (t.name == "token_embd.weight" && embd_set) want = embd_type;
                } else if (t.name == "token_embd.weight") {
                    want = embd_set ? embd_type : tgt.base;
                } else if (t.n_dims >= 2) {
                    want = tgt.base;
                    if (tgt.mix_m && is_attn_v && use_more_bits(i_attn_v, n_attn_v)) want = type::Q6_K;
                    if (tgt.mix_m && is_ffn_down && use_more_bits(i_ffn_down, n_ffn_down)) want = type::Q6_K;
                }
                i_attn_v += is_attn_v;
                i_ffn_down += is_ffn_down;
                if (want != t.t) {
                    const type fb = traits(want).fallback;
                    if (t.ne[0] % traits(want).blck_size != 0 && fb != want && t.ne[0] % traits(fb).blck_size == 0) {
                        note_s = format(" (rows of %lld values are not a multiple of %lld: %s)", (long long) t.ne[0],
                                        (long long) traits(want).blck_size, type_name(fb));
                        want = fb;
                    }
                }
            }
            if (want != t.t && t.ne[0] % traits(want).blck_size != 0) {
                note_s = format(" (rows of %lld values are not a multiple of %lld: kept)", (long long) t.ne[0],
                                (long long) traits(want).blck_size);
                want = t.t;
            }
            if (!dequant && want != t.t && traits(t.t).is_quantized && !requant)
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

        if (!quiet) w.set_progress(cli::progress(out_path, t0));
        w.write(out_path);
        cli::end_progress();
        const double el = cli::now_s() - t0;
        std::fprintf(stderr, "gloas-quantize: %s -> %s (%s): %zu of %zu tensors %s, weights %.2f MiB -> %.2f MiB, %.2f s, %d threads\n",
                     in_path.c_str(), out_path.c_str(), tgt.name.c_str(), n_quantized, n, dequant ? "dequantized" : "quantized",
                     double(bytes_in) / (1 << 20), double(bytes_out) / (1 << 20), el, omp_get_max_threads());
        return 0;
    });
}
