// gloas-convert: llama2.c checkpoints and Hugging Face folders (Llama, Mistral,
// Qwen2, Qwen3, Phi-3, Gemma 2, Gemma 3 text) -> GGUF.
//
//   gloas-convert stories15M.bin -o stories15M.gguf              (tokenizer.bin beside it)
//   gloas-convert ~/hf/TinyLlama-1.1B --outtype f16 -o tinyllama-f16.gguf
//
// llama2.c: the tensors are written as llama.cpp's llama-convert-llama2c-to-ggml
// writes them (same names, shapes, order and values; output.weight is written
// even when the checkpoint shares it with the embedding), with the tokenizer
// (pieces with "▁", scores, token types) from tokenizer.bin.
//
// Hugging Face: config.json, model.safetensors or the shards listed in
// model.safetensors.index.json, and tokenizer.model (SentencePiece) or
// tokenizer.json (BPE with byte_fallback). For llama, q_proj and k_proj rows
// are put back in the order GGUF's rotary embedding expects (Hugging Face
// permutes them: per head, the rows of the two halves are interleaved again);
// the other families use NEOX rope, which is Hugging Face's order. Tensor
// names and metadata are those of llama.cpp's convert_hf_to_gguf.py: Phi-3's
// fused qkv_proj and gate_up_proj stay fused, its longrope factors become
// rope_factors_long/short, Gemma's norm weights are stored as 1 + w.
//
// 1-D tensors (norm weights) are always f32; matrices take --outtype.
#include "decoder/gguf-writer.h"
#include "decoder/llama-gguf.h"
#include "decoder/model.h"
#include "quant/fp16.h"
#include "quant/types.h"
#include "base/error.h"
#include "tools/common/cli.h"
#include "tools/common/convert-hf.h"
#include "tools/common/files.h"

#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace gloas;
using namespace gloas::convert;

namespace {

using cli::parse_int;
using cli::usage_error;

void usage(FILE * out) {
    std::fprintf(out,
        "usage: gloas-convert [options] INPUT -o OUTPUT.gguf\n"
        "\n"
        "Converts a checkpoint to GGUF (tensor names and metadata as llama.cpp\n"
        "writes them). INPUT is either\n"
        "  - a llama2.c checkpoint (stories15M.bin: the legacy float32 export); its\n"
        "    tokenizer is tok<vocab>.bin or tokenizer.bin beside it, or --tokenizer;\n"
        "  - a Hugging Face folder (model_type llama, mistral, qwen2, qwen3, phi3,\n"
        "    gemma2 or gemma3_text): config.json, model.safetensors (or the\n"
        "    shards named by model.safetensors.index.json; F32, F16 or BF16), and\n"
        "    tokenizer.model (SentencePiece) or tokenizer.json (BPE with byte_fallback).\n"
        "\n"
        "  -o, --output FILE    output GGUF (written as FILE.tmp, then renamed)\n"
        "  --outtype T          type of the weight matrices: f32, f16 or bf16 (default:\n"
        "                       f32 for llama2.c, as llama.cpp's converter; f16 for\n"
        "                       Hugging Face, as convert_hf_to_gguf.py). Norm weights\n"
        "                       stay f32. Use gloas-quantize for q8_0 / q4_0.\n"
        "  -z, --tokenizer FILE tokenizer to use instead of the one found beside INPUT\n"
        "                       (tokenizer.bin for llama2.c, which must hold exactly the\n"
        "                       model's vocabulary; tokenizer.model or tokenizer.json\n"
        "                       for Hugging Face)\n"
        "  --name NAME          general.name (default: the input's file or folder name)\n"
        "  --ctx N              llama.context_length (default: llama2.c seq_len, or\n"
        "                       max_position_embeddings)\n"
        "  --force              overwrite OUTPUT if it exists\n"
        "  -t, --threads N      conversion threads (default: all)\n"
        "  -q, --quiet          no progress on stderr\n"
        "  -h, --help           this text\n"
        "\n"
        "Exit status: 0 on success, 1 when an input is unusable or writing fails (nothing\n"
        "is left at OUTPUT), 2 for a bad command line.\n");
}

// Loads row r of `s` as f32 into `dst` (ne0 values).
void load_row(const source & s, int64_t r, float * dst, std::vector<uint16_t> & tmp) {
    const int64_t sr = s.row_map.empty() ? r : s.row_map[size_t(r)];
    const size_t es = s.t == type::F32 ? 4 : 2;
    const uint8_t * p = s.data + size_t(sr) * size_t(s.ne0) * es;
    if (s.t == type::F32) {
        std::memcpy(dst, p, size_t(s.ne0) * 4);
    } else {
        tmp.resize(size_t(s.ne0));
        std::memcpy(tmp.data(), p, size_t(s.ne0) * 2);
        if (s.t == type::F16) fp16_to_fp32_row(tmp.data(), dst, s.ne0);
        else bf16_to_fp32_row(tmp.data(), dst, s.ne0);
    }
    if (s.add != 0.0f)
        for (int64_t i = 0; i < s.ne0; ++i) dst[i] += s.add;
}

// Fill callback converting `s` to type `out` (F32, F16 or BF16). A row whose
// source and output types agree is copied byte for byte.
gguf_writer::fill_fn make_fill(std::shared_ptr<const source> s, type out) {
    return [s, out](void * dst, int64_t row0, int64_t n_rows) {
        const int64_t ne0 = s->ne0;
        const size_t rs = row_size(out, ne0);
        #pragma omp parallel
        {
            std::vector<float> row(static_cast<size_t>(ne0));
            std::vector<uint16_t> tmp;
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < n_rows; ++r) {
                uint8_t * o = static_cast<uint8_t *>(dst) + size_t(r) * rs;
                if (s->t == out && s->add == 0.0f) {
                    const int64_t sr = s->row_map.empty() ? row0 + r : s->row_map[size_t(row0 + r)];
                    std::memcpy(o, s->data + size_t(sr) * rs, rs);
                    continue;
                }
                load_row(*s, row0 + r, row.data(), tmp);
                if (out == type::F32) std::memcpy(o, row.data(), rs);
                else {
                    std::vector<uint16_t> & h = tmp;
                    h.resize(size_t(ne0));
                    if (out == type::F16) fp32_to_fp16_row(row.data(), h.data(), ne0);
                    else fp32_to_bf16_row(row.data(), h.data(), ne0);
                    std::memcpy(o, h.data(), rs);
                }
            }
        }
    };
}

// ---- llama2.c --------------------------------------------------------------

void plan_llama2c(const options & o, const model & m, plan & p) {
    const hparams & h = m.hp;
    p.hp.name = o.name.empty() ? cli::base_name(o.input) : o.name;
    p.hp.n_vocab = h.n_vocab;
    p.hp.n_ctx = o.ctx ? o.ctx : h.n_ctx_train;
    p.hp.n_embd = h.n_embd;
    p.hp.n_ff = h.n_ff;
    p.hp.n_head = h.n_head;
    p.hp.n_head_kv = h.n_head_kv;
    p.hp.n_layer = h.n_layer;
    p.hp.head_dim = h.head_dim;
    p.hp.rms_eps = h.rms_eps;
    p.hp.rope_freq_base = h.rope_freq_base;
    p.hp.wtype = o.outtype;
    p.voc = m.tok.get_vocab();

    auto src = [](const tensor & t, bool vec = false) {
        auto s = std::make_shared<source>();
        s->t = t.t;
        s->data = static_cast<const uint8_t *>(t.data);
        s->ne0 = t.ne[0];
        s->rows = t.nrows();
        s->vec = vec;
        return std::shared_ptr<const source>(s);
    };
    // llama.cpp's order: embeddings, final norm, output, then per layer.
    add(p, llama_tensor_name(llama_tensor::TOKEN_EMBD), src(m.tok_embd), o.outtype);
    add(p, llama_tensor_name(llama_tensor::OUTPUT_NORM), src(m.output_norm, true), o.outtype);
    add(p, llama_tensor_name(llama_tensor::OUTPUT), src(m.output), o.outtype);
    for (int64_t il = 0; il < h.n_layer; ++il) {
        const layer_weights & l = m.layers[size_t(il)];
        add(p, llama_tensor_name(llama_tensor::ATTN_Q, il), src(l.wq), o.outtype);
        add(p, llama_tensor_name(llama_tensor::ATTN_K, il), src(l.wk), o.outtype);
        add(p, llama_tensor_name(llama_tensor::ATTN_V, il), src(l.wv), o.outtype);
        add(p, llama_tensor_name(llama_tensor::ATTN_OUTPUT, il), src(l.wo), o.outtype);
        add(p, llama_tensor_name(llama_tensor::ATTN_NORM, il), src(l.attn_norm, true), o.outtype);
        add(p, llama_tensor_name(llama_tensor::FFN_GATE, il), src(l.ffn_gate), o.outtype);
        add(p, llama_tensor_name(llama_tensor::FFN_DOWN, il), src(l.ffn_down), o.outtype);
        add(p, llama_tensor_name(llama_tensor::FFN_UP, il), src(l.ffn_up), o.outtype);
        add(p, llama_tensor_name(llama_tensor::FFN_NORM, il), src(l.ffn_norm, true), o.outtype);
    }
}

// Writes the plan's file: the metadata, then each tensor converted row by
// row (make_fill), with progress on stderr unless o.quiet; t0: when the
// conversion started (now_s).
void write_plan(const options & o, const plan & p, bool hf, double t0) {
    gguf_writer w;
    llama_gguf_set_hparams(w, p.hp);
    llama_gguf_set_vocab(w, p.voc);
    for (const auto & e : p.tensors) {
        const int64_t ne[2] = {e.src->ne0, e.src->rows};
        w.add_tensor(e.name, e.out, e.n_dims, ne, make_fill(e.src, e.out));
    }
    if (!o.quiet) {
        std::fprintf(stderr, "gloas-convert: %s (%s): %lld layers, dim %lld, ffn %lld, heads %lld/%lld, vocab %lld, ctx %lld -> %s\n",
                     o.input.c_str(), hf ? "Hugging Face" : "llama2.c", (long long) p.hp.n_layer, (long long) p.hp.n_embd,
                     (long long) p.hp.n_ff, (long long) p.hp.n_head, (long long) p.hp.n_head_kv, (long long) p.hp.n_vocab,
                     (long long) p.hp.n_ctx, type_name(o.outtype));
        w.set_progress(cli::progress(o.output, t0));
    }
    w.write(o.output);
    cli::end_progress();
    if (!o.quiet)
        std::fprintf(stderr, "gloas-convert: wrote %s (%zu tensors) in %.1f s\n", o.output.c_str(), p.tensors.size(),
                     cli::now_s() - t0);
}

} // namespace

int main(int argc, char ** argv) {
    cli::prog = "gloas-convert";
    options o;
    int threads = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&] { return cli::next_value(argc, argv, i); };
        if (a == "-h" || a == "--help") { usage(stdout); return 0; }
        else if (a == "-o" || a == "--output") o.output = value();
        else if (a == "--outtype") {
            const char * s = value();
            if (!type_from_name(s, &o.outtype) || traits(o.outtype).is_quantized)
                cli::usage_error(format("--outtype: '%s' is not f32, f16 or bf16 (use gloas-quantize for q8_0 / q4_0)", s));
            o.outtype_set = true;
        }
        else if (a == "-z" || a == "--tokenizer") o.tokenizer = value();
        else if (a == "--name") o.name = value();
        else if (a == "--ctx") o.ctx = cli::parse_int(a, value(), 1, UINT32_MAX);
        else if (a == "--force") o.force = true;
        else if (a == "-t" || a == "--threads") threads = int(cli::parse_int(a, value(), 1, 1024));
        else if (a == "-q" || a == "--quiet") o.quiet = true;
        else if (!a.empty() && a[0] == '-' && a != "-") cli::usage_error("unknown option '" + a + "'");
        else if (o.input.empty()) o.input = a;
        else cli::usage_error("more than one input ('" + o.input + "' and '" + a + "')");
    }
    if (o.input.empty()) cli::usage_error("no input (a llama2.c checkpoint or a Hugging Face folder)");
    if (o.output.empty()) cli::usage_error("no output file (-o FILE.gguf)");
    if (threads > 0) omp_set_num_threads(threads);

    return cli::run_main([&] {
        const double t0 = cli::now_s();
        if (!cli::file_exists(o.input)) throw error(format("%s: no such file or folder", o.input.c_str()));
        if (cli::file_exists(o.output) && !o.force)
            throw error(format("%s: exists (pass --force to overwrite)", o.output.c_str()));
        plan p;
        std::unique_ptr<model> m;                               // llama2.c: keeps the mapping alive
        std::vector<std::unique_ptr<safetensors_file>> files;   // Hugging Face: the same
        const bool hf = cli::is_dir(o.input);
        if (hf) {
            if (!o.outtype_set) o.outtype = type::F16;
            plan_hf(o, p, files);
        } else {
            if (cli::is_gguf_file(o.input))
                throw error(o.input + ": is already a GGUF file (use gloas-quantize to change its weight types)");
            m = model::load({o.input, o.tokenizer});
            plan_llama2c(o, *m, p);
        }
        write_plan(o, p, hf, t0);
        return 0;
    });
}
