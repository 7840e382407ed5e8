// Chat prompt formats: a conversation (a list of {role, content} messages) to
// the prompt text a chat-tuned model was trained on.
//
// GGUF files carry the format as a Jinja template (tokenizer.chat_template).
// gloas does not run Jinja: like llama.cpp, it recognizes the common families
// by marker substrings of the template and formats them with its own code.
// The families, by name (what --chat-template takes), each message written as
// below with c its content ("trim" strips leading and trailing whitespace):
//
//   chatml             "<|im_start|>" role "\n" c "<|im_end|>\n"
//                      prompt "<|im_start|>assistant\n"
//   llama2             "[INST] " first; system: c "\n"; user: c " [/INST]";
//                      assistant: c "</s>", and the next message opens "[INST] "
//   llama2-sys         llama2 with system: "<<SYS>>\n" c "\n<</SYS>>\n\n"
//   llama2-sys-bos     llama2-sys, later turns open "<s>[INST] "
//   llama2-sys-strip   llama2-sys with every content trimmed
//   mistral-v1         " [INST] " opens a turn; system: c "\n\n"; user: c
//                      " [/INST]"; assistant: " " c "</s>" (closes the turn)
//   mistral-v3         as v1 without the leading spaces ("[INST] ", c "[/INST]"),
//                      assistant trimmed
//   mistral-v3-tekken  as v3 without the spaces after [INST] and before the
//                      assistant, assistant not trimmed
//   mistral-v7         system: "[SYSTEM_PROMPT] " c "[/SYSTEM_PROMPT]"; user:
//                      "[INST] " c "[/INST]"; assistant: " " c "</s>"
//   llama3             "<|start_header_id|>" role "<|end_header_id|>\n\n" trim(c)
//                      "<|eot_id|>"; prompt "<|start_header_id|>assistant<|end_header_id|>\n\n"
//   zephyr             "<|" role "|>\n" c "<|endoftext|>\n"; prompt "<|assistant|>\n"
//   phi3               "<|" role "|>\n" c "<|end|>\n"; prompt "<|assistant|>\n"
//   gemma              "<start_of_turn>" role "\n" trim(c) "<end_of_turn>\n", role
//                      "model" for the assistant; the system's trimmed content
//                      opens the next user message followed by "\n\n";
//                      prompt "<start_of_turn>model\n"
//   deepseek           system: c; user: "### Instruction:\n" c "\n"; assistant:
//                      "### Response:\n" c "\n<|EOT|>\n"; prompt "### Response:\n"
//   deepseek2          system: c "\n\n"; user: "User: " c "\n\n"; assistant:
//                      "Assistant: " c "<｜end▁of▁sentence｜>"; prompt "Assistant:"
//   deepseek3          system: c "\n\n"; user: "<｜User｜>" c; assistant:
//                      "<｜Assistant｜>" c "<｜end▁of▁sentence｜>"; prompt "<｜Assistant｜>"
//
// The llama2 and mistral families have no assistant prompt (the model answers
// right after [/INST]). No format writes BOS: the tokenizer adds it to the
// first turn. Aliases: llama-2 = llama2, llama-3 = llama3, phi-3 = phi3, and
// mistral = llama2 (the [INST] format of Mistral 7B Instruct v0.1/v0.2, as
// llama.cpp treats the name).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

enum class chat_template : uint8_t {
    CHATML,
    LLAMA2,
    LLAMA2_SYS,
    LLAMA2_SYS_BOS,
    LLAMA2_SYS_STRIP,
    MISTRAL_V1,
    MISTRAL_V3,
    MISTRAL_V3_TEKKEN,
    MISTRAL_V7,
    LLAMA3,
    ZEPHYR,
    PHI3,
    GEMMA,
    DEEPSEEK,
    DEEPSEEK2,
    DEEPSEEK3,
    UNKNOWN,  // not a format gloas writes
};

struct chat_message {
    std::string role;     // "system", "user" or "assistant"
    std::string content;
};

// Canonical name ("chatml", ...); "unknown" for UNKNOWN.
const char * chat_template_name(chat_template t);
// The template of a name or alias; false if none.
bool chat_template_from_name(std::string_view name, chat_template * out);
// The canonical names, comma-separated, for messages.
std::string chat_template_names();

// The family of a Jinja template, by the marker substrings llama.cpp tests, in
// its order (a template text that is itself a name is that template). UNKNOWN
// when nothing matches; also when the template is of a family llama.cpp knows
// but gloas does not write (phi4, falcon3, vicuna, command-r, ...): then
// `other`, if given, receives that family's name (else it is cleared).
chat_template chat_template_detect(std::string_view jinja, std::string * other = nullptr);

// The format to use: `name` (the --chat-template value) when non-empty, else
// the family of `jinja` (the model's tokenizer.chat_template), else, when the
// model has no template (jinja empty), chatml, as llama.cpp falls back to it:
// then `note`, if given, receives a one-line warning naming `model_path` and
// --chat-template (else it is cleared). Throws gloas::error for an unknown
// name (listing the known ones) and for an unrecognized template (naming
// `model_path` and suggesting --chat-template).
chat_template chat_template_choose(const std::string & name, const std::string & jinja,
                                   const std::string & model_path, std::string * note = nullptr);

// The prompt text of `msgs`, followed by the assistant prompt when
// add_assistant_prompt (formats without one ignore it).
std::string chat_format(chat_template t, const std::vector<chat_message> & msgs, bool add_assistant_prompt);

// The text that closes an assistant message after its content ("<|im_end|>\n",
// "<|eot_id|>", "</s>", "\n<|EOT|>\n", ...).
std::string chat_assistant_suffix(chat_template t);
// That suffix trimmed: the end marker whose appearance in a reply ends it
// ("<|im_end|>", "<|eot_id|>", ...).
std::string chat_end_marker(chat_template t);

// A conversation and the prompt text of each of its turns. The text of a
// turn is what the model must read next, given that everything before was
// evaluated: what closes the previous reply (the rest of its content and the
// assistant suffix, see add_assistant), then the difference between the
// conversation formatted with the new user message (and the assistant
// prompt) and without it. The first turn is the whole formatted
// conversation, system message included. Evaluating the turns one after the
// other never evaluates a position twice.
class chat_session {
public:
    // `system`: the system message, none if empty.
    explicit chat_session(chat_template t, std::string system = {});

    // Adds a user message; returns the text of its turn.
    std::string add_user(std::string content);
    // Adds the assistant's reply to the last user message. `content` is the
    // reply as shown (without an end marker); `evaluated` the text of the
    // reply's tokens already in the K/V cache: the next turn starts with
    // (content + assistant suffix) less that prefix. `evaluated` must be a
    // prefix of content + suffix (else the whole suffix follows).
    void add_assistant(std::string content, const std::string & evaluated);

    chat_template get_template() const { return t_; }
    const std::vector<chat_message> & messages() const { return msgs_; }
    int32_t n_turns() const { return n_turns_; }

private:
    chat_template t_;
    std::vector<chat_message> msgs_;
    std::string close_;  // what closes the last reply, opening the next turn
    int32_t n_turns_ = 0;
};

} // namespace gloas
