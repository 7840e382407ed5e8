// SentencePiece-style BPE tokenizer with byte fallback (Llama 1/2 vocabularies).
//
// Built from GGUF metadata (tokenizer.ggml.model = "llama": tokens, scores,
// token_type, bos/eos/unk ids, add_bos_token, add_space_prefix) or from a
// llama2.c tokenizer.bin (u32 max_token_length, then per token: f32 score,
// i32 length, bytes; spaces are stored as ' ' there and as U+2581 "▁" in
// GGUF — pieces are kept internally with "▁").
//
// Encoding follows llama.cpp's SPM tokenizer: spaces become "▁", a "▁" is
// prepended when add_space_prefix is set, the text is split into UTF-8
// characters (each byte of invalid UTF-8 on its own, where llama.cpp would take
// the bytes after a bad lead byte with it), adjacent symbols are merged highest score first (leftmost on ties)
// while the merged text is a normal or user-defined piece, and symbols that are
// not pieces fall back to <0xXX> byte tokens. O(n log n) in the text length.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

class gguf_file;

// Token types as GGUF stores them.
enum class token_type : int32_t {
    UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6,
};

struct vocab {
    std::vector<std::string> pieces;   // UTF-8, spaces as "▁"
    std::vector<float>       scores;
    std::vector<token_type>  types;
    int32_t bos = 1, eos = 2, unk = 0;
    bool add_bos = true;
    bool add_space_prefix = true;
};

class tokenizer {
public:
    tokenizer() = default;
    explicit tokenizer(vocab v);  // throws gloas::error if inconsistent

    // Throws gloas::error naming the file and what is wrong.
    static tokenizer from_gguf(const gguf_file & f);
    static tokenizer from_llama2c(const std::string & path, int32_t n_vocab_expected = -1);

    std::vector<int32_t> encode(std::string_view text, bool add_bos) const;

    // Text of one token while streaming: "▁" becomes ' ', <0xXX> becomes its
    // byte, control tokens become "", and a leading space is dropped right after
    // BOS (as SentencePiece and llama2.c do); the unknown token gives its piece
    // text. May be a partial UTF-8 sequence. Throws gloas::error if `id` is out
    // of range.
    std::string token_to_piece(int32_t prev, int32_t id) const;
    // Concatenated pieces of `ids` (BOS and control tokens give no text).
    std::string decode(const std::vector<int32_t> & ids) const;

    // Id of the piece with exactly this text ("▁" for spaces) among the pieces
    // encode() can produce (normal and user-defined ones), -1 if none.
    int32_t find_piece(std::string_view piece) const;

    int32_t n_vocab() const { return int32_t(v_.pieces.size()); }
    int32_t bos() const { return v_.bos; }
    int32_t eos() const { return v_.eos; }
    bool add_bos() const { return v_.add_bos; }
    const vocab & get_vocab() const { return v_; }

private:
    vocab v_;
    // Open-addressing hash table (linear probing) of the mergeable pieces:
    // slot -> token id or -1; size a power of two, at least twice their count.
    std::vector<int32_t> table_;
    // Bit (a << 8 | b) is set when bytes a, b occur in this order inside some
    // mergeable piece; no merge can span a character boundary whose pair is
    // unset, so encode() merges the text between such boundaries separately.
    std::vector<uint64_t> pair_bits_;
    int32_t byte_ids_[256] = {};  // <0xXX> token of each byte, -1 if absent
};

} // namespace gloas
