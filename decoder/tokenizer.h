// Tokenizers of Llama-family vocabularies, one class for both kinds GGUF
// files carry (tokenizer.ggml.model):
//
// "llama": SentencePiece-style BPE with byte fallback (Llama 1/2, Mistral,
// TinyLlama). Built from GGUF metadata (tokens, scores, token_type,
// bos/eos/unk ids, add_bos_token, add_space_prefix) or from a llama2.c
// tokenizer.bin (u32 max_token_length, then per token: f32 score, i32 length,
// bytes; spaces are stored as ' ' there and as U+2581 "▁" in GGUF — pieces are
// kept internally with "▁").
// Encoding follows llama.cpp's SPM tokenizer: spaces become "▁", a "▁" is
// prepended when add_space_prefix is set, the text is split into UTF-8
// characters (each byte of invalid UTF-8 on its own, where llama.cpp would take
// the bytes after a bad lead byte with it), adjacent symbols are merged highest score first (leftmost on ties)
// while the merged text is a normal or user-defined piece, and symbols that are
// not pieces fall back to <0xXX> byte tokens. O(n log n) in the text length.
//
// "gpt2": byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM, Phi, DeepSeek,
// StarCoder, Falcon). Pieces are byte strings written with GPT-2's
// byte-to-unicode table (bytes 0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF stand for
// themselves, the others for U+0100.. in byte order: ' ' is "Ġ"). Merges are
// "left right" strings, rank = index. Encoding follows llama.cpp: special
// tokens are cut out of the text first (see encode), the pre-tokenizer named
// by tokenizer.ggml.pre splits the rest into words (decoder/pretokenize.h),
// each word's bytes are mapped to their characters and merged lowest rank
// first (leftmost on ties); the resulting symbols are tokens (a symbol that is
// no token gives the tokens of its characters, else the unknown token).
// Decoding maps the characters back to bytes, so any text round-trips.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

class gguf_file;

// Token types as GGUF stores them.
enum class token_type : int32_t {
    UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6,
};

enum class vocab_kind : uint8_t {
    SPM,  // tokenizer.ggml.model "llama"
    BPE,  // tokenizer.ggml.model "gpt2"
};

struct vocab {
    vocab_kind kind = vocab_kind::SPM;
    std::vector<std::string> pieces;   // SPM: UTF-8, spaces as "▁"; BPE: byte-to-unicode text
    std::vector<float>       scores;   // SPM: merge scores; BPE: unused (empty or one per piece)
    std::vector<token_type>  types;
    std::vector<std::string> merges;   // BPE: "left right", rank = index (split at the first
                                       // space after the first byte; the first of duplicates wins)
    std::string pre;                   // BPE: pre-tokenizer name (tokenizer.ggml.pre), "" = "default"
    int32_t bos = 1, eos = 2, unk = 0; // -1: none
    int32_t eot = -1;                  // end of turn (<|eot_id|>, <|im_end|>, ...), -1: none
    bool add_bos = true;
    bool add_space_prefix = true;      // SPM only
};

// Bytes at the start of `s` that form whole UTF-8 characters: s.size() less
// an unfinished multi-byte sequence at its end (a lead byte followed by fewer
// continuation bytes than it announces). Invalid bytes count as whole. A
// streaming caller prints this prefix and keeps the rest for the next piece.
size_t utf8_complete_prefix(std::string_view s);

class tokenizer {
public:
    tokenizer() = default;
    explicit tokenizer(vocab v);  // throws gloas::error if inconsistent

    // Throws gloas::error naming the file and what is wrong.
    static tokenizer from_gguf(const gguf_file & f);
    static tokenizer from_llama2c(const std::string & path, int32_t n_vocab_expected = -1);

    // Token ids of `text`, BOS first when add_bos and the vocabulary has one.
    // Special tokens are cut out of the text first, as llama.cpp's
    // tokenizer_st_partition does: longest first, each at all its occurrences,
    // the user-defined ones always and, when parse_special, the control and
    // unknown ones too (so "<|im_start|>" in the text is that one token).
    // SPM vocabularies cut only when parse_special (user-defined pieces are
    // otherwise merged like normal ones), and a text fragment after a special
    // token gets the space prefix again. Any bytes are accepted.
    std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;

    // Text of one token while streaming. SPM: "▁" becomes ' ', <0xXX> becomes
    // its byte, control tokens become "", and a leading space is dropped right
    // after BOS (as SentencePiece and llama2.c do); the unknown token gives its
    // piece text. BPE: normal tokens give their bytes, user-defined ones their
    // text, others "". May be a partial UTF-8 sequence (see
    // utf8_complete_prefix). Throws gloas::error if `id` is out of range.
    std::string token_to_piece(int32_t prev, int32_t id) const;
    // Concatenated pieces of `ids` (BOS and control tokens give no text).
    std::string decode(const std::vector<int32_t> & ids) const;

    // Id of the piece with exactly this text among the pieces encode() can
    // produce by merging (SPM: normal and user-defined ones, "▁" for spaces;
    // BPE: any token, in byte-to-unicode text), -1 if none.
    int32_t find_piece(std::string_view piece) const;

    int32_t n_vocab() const { return int32_t(v_.pieces.size()); }
    int32_t bos() const { return v_.bos; }
    int32_t eos() const { return v_.eos; }
    int32_t eot() const { return v_.eot; }
    // End of generation: EOS or end of turn.
    bool is_eog(int32_t id) const { return id >= 0 && (id == v_.eos || id == v_.eot); }
    bool add_bos() const { return v_.add_bos; }
    vocab_kind kind() const { return v_.kind; }
    const vocab & get_vocab() const { return v_; }

private:
    struct bpe_data;  // decoder/tokenizer-bpe.cpp

    // A piece of the text to encode: a special token (id >= 0) or plain text
    // (id -1) at [off, off + len).
    struct fragment {
        size_t off, len;
        int32_t id;
    };
    std::vector<fragment> partition_special(std::string_view text, bool parse_special) const;

    void init_bpe();  // builds bpe_ (constructor of a BPE vocabulary)
    // Appends the ids of `text` without special-token handling.
    void encode_spm(std::string_view text, bool space_prefix, std::vector<int32_t> & out) const;
    void encode_bpe(std::string_view text, std::vector<int32_t> & out) const;
    std::string bpe_token_to_piece(int32_t id) const;
    int32_t bpe_find_piece(std::string_view piece) const;

    vocab v_;
    // Control, user-defined and unknown tokens with non-empty text, longest
    // text first (then lowest id): the order encode() cuts them out in.
    std::vector<int32_t> special_;
    std::shared_ptr<const bpe_data> bpe_;  // BPE vocabularies only
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
