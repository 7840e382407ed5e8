// Llama models with random weights, for benchmarks at real shapes: speed does
// not depend on the weight values, so a file of the right shape and types
// measures what a trained one would.
//
// Weights are uniform with a standard deviation of 0.02 (norm weights 1.0), so
// activations stay finite. Each row's values come from a generator seeded by
// (seed, tensor, row): the file is the same for any thread count. Tensors are
// generated and converted a chunk of rows at a time and streamed to the file
// (written as PATH.tmp, then renamed), with llama.cpp's tensor names and keys,
// for any architecture gloas runs (hp.arch: the family's extra norms, biases
// and fused matrices; Gemma's output tied to the embeddings).
#pragma once

#include "decoder/llama-gguf.h"

#include <cstdint>
#include <functional>
#include <string>

namespace gloas {

struct random_model_params {
    llama_gguf_hparams hp;       // shape, name and weight type (norm weights stay F32)
    uint64_t seed = 42;
    std::string vocab_file;      // a GGUF whose tokenizer.* metadata is copied (its
                                 // size wins); empty: a synthetic SentencePiece vocab
    // Called while writing: tensors done / all, bytes done / all.
    std::function<void(size_t, size_t, uint64_t, uint64_t)> progress;
};

// Checks the shape (heads divide the width, KV heads divide the heads, rows
// fill whole blocks of the weight type, a synthetic vocabulary has at least
// 354 pieces); throws gloas::error naming the value that is wrong.
void random_model_check(const llama_gguf_hparams & hp, bool synthetic_vocab);

// Writes the model to `path`. Throws gloas::error.
void write_random_model(const std::string & path, const random_model_params & p);

// A random-weight model of shape `hp` (seed 42) cached in `dir`
// (random-<shape hash>.gguf), written on first use; returns its path.
std::string cached_random_model(const std::string & dir, const llama_gguf_hparams & hp);

} // namespace gloas
