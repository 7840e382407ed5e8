// gloas-convert's plan of a GGUF file (the tensors to write, in order, with
// the metadata) and its reader of Hugging Face folders: config.json, the
// safetensors files and tokenizer.model or tokenizer.json, with the tensor
// names and metadata of llama.cpp's convert_hf_to_gguf.py.
#pragma once

#include "decoder/llama-gguf.h"
#include "decoder/safetensors.h"
#include "decoder/tokenizer.h"
#include "quant/types.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gloas::convert {

// A source matrix or vector: `rows` rows of `ne0` values of type t (F32, F16
// or BF16), contiguous, possibly unaligned. `row_map`, when set, gives the
// source row of each output row.
struct source {
    type t = type::F32;
    const uint8_t * data = nullptr;
    int64_t ne0 = 0, rows = 0;
    bool vec = false;  // a 1-D tensor (norm weights): written as f32
    std::vector<int64_t> row_map;
    float add = 0.0f;        // added to every value (Gemma's norms are stored as 1 + w)
    std::vector<float> own;  // values held here (rope factors from config.json); data points at them
};

struct options {
    std::string input, output, tokenizer, name;
    type outtype = type::F32;
    bool outtype_set = false;
    int64_t ctx = 0;
    bool force = false, quiet = false;
};

// Tensors to write, in order, and the sources they keep alive.
struct plan {
    llama_gguf_hparams hp;
    vocab voc;
    struct entry {
        std::string name;
        std::shared_ptr<const source> src;
        type out;
        int n_dims;
    };
    std::vector<entry> tensors;
};

// Appends tensor `name` from `s`: a matrix as `outtype`, a vector as f32.
void add(plan & p, const std::string & name, std::shared_ptr<const source> s, type outtype);

// The plan for the Hugging Face folder o.input: its config.json's
// hyperparameters, its tokenizer (o.tokenizer, else tokenizer.model or
// tokenizer.json in the folder) and every tensor of its safetensors files,
// opened into `files` (the plan's sources point into them). Throws
// gloas::error naming the file and field for anything it cannot convert.
void plan_hf(const options & o, plan & p, std::vector<std::unique_ptr<safetensors_file>> & files);

} // namespace gloas::convert
