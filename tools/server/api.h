// gloas-server's OpenAI API: request bodies to checked generation
// parameters, and jobs to response objects and stream chunks.
//
// Every check failure is an api_error whose message and `param` name the
// field as the client wrote it ("messages[1].content", "max_tokens"); the
// HTTP layer sends it as OpenAI's error object with its status.
#pragma once

#include "decoder/chat.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "tools/server/engine.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace gloas::server {

using json = nlohmann::json;

struct api_error {
    int status = 400;
    std::string message;
    std::string param;                          // the field at fault; empty: none
    std::string type = "invalid_request_error";
    std::string code;                           // empty: null
};

// JSON text; bytes that are not UTF-8 (a token may hold part of a
// character) become U+FFFD instead of failing.
inline std::string dump(const json & j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A 400 invalid_request_error blaming `param`.
api_error invalid(const std::string & param, const std::string & message);

// {"error": {"message", "type", "param", "code"}}
json error_body(const api_error & e);

// What requests default to and are checked against.
struct api_config {
    std::string model_id;       // what /v1/models lists and "model" must name when given
    sampler_params sampling;    // the server's sampling flags
    int32_t n_predict = -1;     // -n: default max_tokens; -1: until the context is full
    int32_t n_ctx = 0;          // positions per sequence
    chat_template tmpl = chat_template::CHATML;
};

enum class endpoint { CHAT, COMPLETION };

struct gen_request {
    endpoint ep = endpoint::COMPLETION;
    bool stream = false;
    bool include_usage = false;        // stream_options.include_usage
    std::vector<int32_t> prompt;
    gen_params p;
    std::string prompt_field;          // "messages" or "prompt": the field a too-long prompt blames
};

// Parses and checks a /v1/chat/completions or /v1/completions body.
// Throws api_error.
gen_request parse_generation(endpoint ep, const std::string & body, const model & m, const api_config & cfg);

// Parses a body as a JSON object; throws api_error for anything else.
json parse_object(const std::string & body);

// The response of a finished job (non-streamed).
json completion_response(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                         const job & j);
// One stream chunk: `text` and the logprobs of tokens [lp_from, lp_to) of j
// (under j.mu, by the caller); `finish` empty for none; `role` for the
// first chat chunk.
json stream_chunk(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                  const std::string & text, const job & j, size_t lp_from, size_t lp_to, const std::string & finish,
                  bool role);
// The usage object of a job.
json usage_of(const job & j);
// The final chunk with usage and no choices (stream_options.include_usage).
json usage_chunk(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                 const job & j);

// A fresh response id: "chatcmpl-..." or "cmpl-...".
std::string new_id(endpoint ep);

} // namespace gloas::server
