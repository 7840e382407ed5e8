// Fuzz target for chat templates (decoder/chat.h): detection of a Jinja
// template's family, the choice of format from a --chat-template name and a
// model's template, formatting a conversation, and a chat session's turns.
//
// Input: byte 0 picks the format for the conversation (modulo the number of
// formats) and bit 7 of byte 1 whether to add the assistant prompt; the rest
// is split at NUL bytes: the first part is a Jinja template text (detected,
// and chosen as a model's template and as a --chat-template name), the
// others are message contents for system, user and assistant in turn.
// Detection must give a known value, choose must answer or throw
// gloas::error, and a chat session over the messages must hold its promise
// that each turn extends what was evaluated (no position evaluated twice).
#include "decoder/chat.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 2) return 0;
    const int n_formats = int(gloas::chat_template::UNKNOWN);
    const auto t = gloas::chat_template(data[0] % n_formats);
    const bool assistant_prompt = data[1] & 0x80;
    std::vector<std::string> parts(1);
    for (size_t i = 2; i < size; ++i) {
        if (data[i] == 0) parts.emplace_back();
        else parts.back() += char(data[i]);
    }

    std::string other;
    const gloas::chat_template d = gloas::chat_template_detect(parts[0], &other);
    if (int(d) > n_formats) __builtin_trap();
    if (d != gloas::chat_template::UNKNOWN && !other.empty()) __builtin_trap();
    (void) gloas::chat_template_name(d);
    gloas::chat_template named;
    if (gloas::chat_template_from_name(parts[0], &named) && int(named) >= n_formats) __builtin_trap();
    for (int k = 0; k < 2; ++k) {
        try {
            const gloas::chat_template c = k ? gloas::chat_template_choose(parts[0], "", "fuzz.gguf")
                                             : gloas::chat_template_choose("", parts[0], "fuzz.gguf");
            if (int(c) >= n_formats) __builtin_trap();
        } catch (const gloas::error &) {
        }
    }

    static const char * const roles[] = {"system", "user", "assistant"};
    std::vector<gloas::chat_message> msgs;
    for (size_t i = 1; i < parts.size(); ++i) msgs.push_back({roles[(i - 1) % 3], parts[i]});
    (void) gloas::chat_format(t, msgs, assistant_prompt);
    (void) gloas::chat_assistant_suffix(t);
    (void) gloas::chat_end_marker(t);

    // A session: a system message, then user / assistant turns, each reply
    // evaluated as it is. The first turn is the conversation formatted with
    // the assistant prompt; each later one must extend the formatted
    // conversation (chat_session checks that every format appends).
    const std::string system = parts.size() > 1 ? parts[1] : std::string();
    gloas::chat_session s(t, system);
    std::vector<gloas::chat_message> conv;
    if (!system.empty()) conv.push_back({"system", system});
    for (size_t i = 2; i < parts.size(); i += 2) {
        const std::string turn = s.add_user(parts[i]);
        conv.push_back({"user", parts[i]});
        if (i == 2 && turn != gloas::chat_format(t, conv, true)) __builtin_trap();
        if (i + 1 >= parts.size()) break;
        s.add_assistant(parts[i + 1], parts[i + 1]);
        conv.push_back({"assistant", parts[i + 1]});
    }
    if (s.messages().size() != conv.size()) __builtin_trap();
    return 0;
}
