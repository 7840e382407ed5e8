// Reader of SentencePiece's tokenizer.model (a serialized ModelProto).
//
// Protobuf wire format: a message is a sequence of fields, each a varint key
// (field_number << 3 | wire_type) then a value: wire type 0 a varint, 1 eight
// bytes, 2 a varint length + that many bytes (strings, nested messages), 5 four
// bytes. Groups (3, 4) are refused. Fields read here (sentencepiece_model.proto):
//   ModelProto:     1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece:  1 piece (string), 2 score (float), 3 type (enum, default NORMAL=1:
//                   1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE)
//   TrainerSpec:    3 model_type (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR), 35 byte_fallback,
//                   40 unk_id (default 0), 41 bos_id (1), 42 eos_id (2), 43 pad_id (-1)
//   NormalizerSpec: 3 add_dummy_prefix (default true)
// Every other field is skipped by its wire type. Lengths, varints (at most 10
// bytes), field numbers, wire types, piece types and special ids are checked;
// a bad file throws gloas::error naming the file, the field and the byte offset.
#pragma once

#include "decoder/tokenizer.h"

#include <cstdint>
#include <string>

namespace gloas {

struct spm_model {
    vocab v;                 // pieces (spaces as "▁", as SentencePiece stores them), scores, types, ids
    int32_t model_type = 1;  // TrainerSpec.model_type: 1 unigram, 2 bpe, 3 word, 4 char
    bool byte_fallback = false;
    int32_t pad_id = -1;

    // Throws gloas::error naming the file and what is wrong.
    static spm_model load(const std::string & path);
    static spm_model parse(const uint8_t * data, size_t size, const std::string & name);
};

} // namespace gloas
