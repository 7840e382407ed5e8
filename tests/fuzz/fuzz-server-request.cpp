// Fuzz target for gloas-server's request bodies (tools/server/api.h).
//
// Input: the body of a POST, tried as /v1/chat/completions and as
// /v1/completions on stories260K's tokenizer with a 256-position context.
// parse_generation must give a request within the context's bounds or throw
// an api_error with a 4xx status and a message (never crash, hang or throw
// anything else); the response and stream chunk of a job for an accepted
// request must serialize.
#include "decoder/model.h"
#include "fuzz-common.h"
#include "tools/server/api.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace {

const gloas::model & the_model() {
    static const std::unique_ptr<gloas::model> m =
        gloas::model::load({gloas::fuzz::need_model("stories260K.bin"), ""});
    return *m;
}

void check(gloas::server::endpoint ep, const std::string & body) {
    using namespace gloas::server;
    const gloas::model & m = the_model();
    api_config cfg;
    cfg.model_id = "stories260K";
    cfg.n_ctx = 256;
    try {
        const gen_request r = parse_generation(ep, body, m, cfg);
        const int32_t n = int32_t(r.prompt.size());
        if (n < 1 || n >= cfg.n_ctx) __builtin_trap();
        for (int32_t t : r.prompt)
            if (t < 0 || t >= m.tok.n_vocab()) __builtin_trap();
        if (r.p.max_tokens < 1 || r.p.max_tokens > cfg.n_ctx - n) __builtin_trap();
        if (r.p.logprobs < -1 || r.p.logprobs > 20) __builtin_trap();
        for (const std::string & s : r.p.stop)
            if (s.empty()) __builtin_trap();
        job j;
        j.text = "a";
        j.marks = {1};
        j.done = true;
        j.finish_reason = "stop";
        (void) dump(completion_response(r, "id", 0, cfg.model_id, j));
        (void) dump(stream_chunk(r, "id", 0, cfg.model_id, j.text, j, 0, 0, "stop", true));
    } catch (const api_error & e) {
        if (e.status < 400 || e.status > 499 || e.message.empty()) __builtin_trap();
        (void) dump(error_body(e));
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const std::string body(reinterpret_cast<const char *>(data), size);
    check(gloas::server::endpoint::CHAT, body);
    check(gloas::server::endpoint::COMPLETION, body);
    return 0;
}
