// gloas --chat: an interactive, multi-turn conversation on one sequence.
//
// stdin: one line per user message (a line ending in '\' continues on the
// next line, the backslash becoming a newline; '\r' before '\n' is dropped;
// empty lines are skipped). stdout: each reply as it streams, then a newline
// — nothing else, so a piped session can be read back. stderr: the format,
// per turn the tokens prefilled and the positions kept, and with
// verbose_prompt the exact prompt text of each turn ("gloas: turn N prompt,
// B bytes:", a newline, the B bytes, a newline).
//
// Each turn evaluates only its own text (chat_session in decoder/chat.h)
// after everything already in the sequence: earlier turns are never computed
// again. The first turn goes through eval_prompt, so a system prompt already
// in the K/V store (an earlier run) is reused. A reply ends at an
// end-of-generation token (EOS, end of turn, BOS), when the format's end
// marker appears in its text (not shown), at n_predict tokens, on Ctrl-C, or
// when the context is full (which also ends the chat; a sliding context
// never is). Ctrl-C at the prompt asks for a second one, which exits; so
// does end of input.
#pragma once

#include "decoder/sampler.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace gloas {
class context;
class model;
} // namespace gloas

namespace gloas::chat_cli {

struct chat_options {
    std::string system;          // --system; empty: none
    std::string template_name;   // --chat-template; empty: the model's tokenizer.chat_template
    bool verbose_prompt = false; // --verbose-prompt
    int32_t n_predict = 256;     // tokens per reply at most
    bool ignore_eos = false;
    bool quiet = false;          // -q: no format, per-turn or end-of-chat lines on stderr
};

// A reply's text as its tokens arrive. Its content ends where the format's
// end marker first appears (the marker is not part of it). While it streams,
// bytes are shown only once they can be neither the start of the marker nor
// part of an unfinished UTF-8 character.
class reply_text {
public:
    explicit reply_text(std::string marker) : marker_(std::move(marker)) {}

    // Appends a token's text; true when the end marker is complete (the
    // reply is then over: add must not be called again).
    bool add(std::string_view piece);
    bool ended() const { return end_ != std::string::npos; }
    // Every byte added, marker included.
    const std::string & text() const { return text_; }
    // The text before the marker (all of it while none appeared).
    std::string content() const { return text_.substr(0, ended() ? end_ : text_.size()); }
    // The bytes to show now that were not shown yet; `last`: the rest of
    // the content, held or not.
    std::string take_showable(bool last);

private:
    // Bytes of `s` that may be shown: all but a tail that could begin the
    // marker, and then all but an unfinished UTF-8 character.
    size_t showable(std::string_view s) const;

    std::string marker_;
    std::string text_;
    size_t end_ = std::string::npos;  // where the marker starts
    size_t shown_ = 0;
};

// Runs the chat on a fresh context until end of input, a second Ctrl-C at the
// prompt or a full context. Returns the exit status. A model without a chat
// template gets chatml, with a warning (as llama.cpp does); an unrecognized
// template is a gloas::error.
int chat_loop(const model & m, context & ctx, const sampler_params & sp, const chat_options & co);

} // namespace gloas::chat_cli
