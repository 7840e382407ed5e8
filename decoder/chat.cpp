#include "decoder/chat.h"

#include "base/error.h"

#include <cctype>
#include <cstring>

namespace gloas {

namespace {

struct template_name {
    const char * name;
    chat_template t;
};

// Canonical names first, in enum order (entry i names template i); aliases after.
constexpr template_name k_names[] = {
    {"chatml", chat_template::CHATML},
    {"llama2", chat_template::LLAMA2},
    {"llama2-sys", chat_template::LLAMA2_SYS},
    {"llama2-sys-bos", chat_template::LLAMA2_SYS_BOS},
    {"llama2-sys-strip", chat_template::LLAMA2_SYS_STRIP},
    {"mistral-v1", chat_template::MISTRAL_V1},
    {"mistral-v3", chat_template::MISTRAL_V3},
    {"mistral-v3-tekken", chat_template::MISTRAL_V3_TEKKEN},
    {"mistral-v7", chat_template::MISTRAL_V7},
    {"llama3", chat_template::LLAMA3},
    {"zephyr", chat_template::ZEPHYR},
    {"phi3", chat_template::PHI3},
    {"gemma", chat_template::GEMMA},
    {"deepseek", chat_template::DEEPSEEK},
    {"deepseek2", chat_template::DEEPSEEK2},
    {"deepseek3", chat_template::DEEPSEEK3},
    {"llama-2", chat_template::LLAMA2},
    {"llama-3", chat_template::LLAMA3},
    {"phi-3", chat_template::PHI3},
    {"mistral", chat_template::LLAMA2},
};
constexpr size_t k_n_canonical = size_t(chat_template::UNKNOWN);

constexpr bool names_in_enum_order() {
    for (size_t i = 0; i < k_n_canonical; ++i)
        if (size_t(k_names[i].t) != i) return false;
    return true;
}
static_assert(names_in_enum_order(), "k_names must list template i at index i");

const char * const k_end_of_sentence = "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>";  // <｜end▁of▁sentence｜>
const char * const k_ds_user = "<\xef\xbd\x9c" "User\xef\xbd\x9c>";            // <｜User｜>
const char * const k_ds_assistant = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";  // <｜Assistant｜>

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string trim(std::string_view s) {
    size_t b = 0, e = s.size();
    while (b < e && is_space(s[b])) ++b;
    while (e > b && is_space(s[e - 1])) --e;
    return std::string(s.substr(b, e - b));
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// llama2 and its variants.
void format_llama2(chat_template t, const std::vector<chat_message> & msgs, std::string & out) {
    const bool sys = t != chat_template::LLAMA2;
    const bool bos_inside = t == chat_template::LLAMA2_SYS_BOS;
    const bool strip = t == chat_template::LLAMA2_SYS_STRIP;
    bool in_turn = true;
    out += "[INST] ";
    for (const chat_message & m : msgs) {
        const std::string c = strip ? trim(m.content) : m.content;
        if (!in_turn) {
            out += bos_inside ? "<s>[INST] " : "[INST] ";
            in_turn = true;
        }
        if (m.role == "system") out += sys ? "<<SYS>>\n" + c + "\n<</SYS>>\n\n" : c + "\n";
        else if (m.role == "user") out += c + " [/INST]";
        else {
            out += c + "</s>";
            in_turn = false;
        }
    }
}

// mistral-v1, -v3 and -v3-tekken.
void format_mistral(chat_template t, const std::vector<chat_message> & msgs, std::string & out) {
    const char * lead = t == chat_template::MISTRAL_V1 ? " " : "";
    const char * trail = t == chat_template::MISTRAL_V3_TEKKEN ? "" : " ";
    const bool trim_reply = t == chat_template::MISTRAL_V3;
    bool in_turn = false;
    for (const chat_message & m : msgs) {
        if (!in_turn) {
            out += lead;
            out += "[INST]";
            out += trail;
            in_turn = true;
        }
        if (m.role == "system") out += m.content + "\n\n";
        else if (m.role == "user") {
            out += m.content;
            out += lead;
            out += "[/INST]";
        } else {
            out += trail;
            out += trim_reply ? trim(m.content) : m.content;
            out += "</s>";
            in_turn = false;
        }
    }
}

void format_gemma(const std::vector<chat_message> & msgs, bool add_ass, std::string & out) {
    std::string system;
    for (const chat_message & m : msgs) {
        if (m.role == "system") {
            system += trim(m.content);
            continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        out += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") {
            out += system + "\n\n";
            system.clear();
        }
        out += trim(m.content) + "<end_of_turn>\n";
    }
    if (add_ass) out += "<start_of_turn>model\n";
}

// Formats where each message is `open(role) content close` and the assistant
// prompt is open("assistant"): chatml, llama3, zephyr, phi3.
void format_tagged(chat_template t, const std::vector<chat_message> & msgs, bool add_ass, std::string & out) {
    auto open = [t](const std::string & role) {
        switch (t) {
        case chat_template::CHATML: return "<|im_start|>" + role + "\n";
        case chat_template::LLAMA3: return "<|start_header_id|>" + role + "<|end_header_id|>\n\n";
        default: return "<|" + role + "|>\n";
        }
    };
    const char * close = t == chat_template::CHATML ? "<|im_end|>\n"
                       : t == chat_template::LLAMA3 ? "<|eot_id|>"
                       : t == chat_template::ZEPHYR ? "<|endoftext|>\n"
                                                    : "<|end|>\n";
    for (const chat_message & m : msgs) {
        out += open(m.role);
        out += t == chat_template::LLAMA3 ? trim(m.content) : m.content;
        out += close;
    }
    if (add_ass) out += open("assistant");
}

void format_deepseek(chat_template t, const std::vector<chat_message> & msgs, bool add_ass, std::string & out) {
    for (const chat_message & m : msgs) {
        const bool sys = m.role == "system", user = m.role == "user";
        switch (t) {
        case chat_template::DEEPSEEK:
            if (sys) out += m.content;
            else if (user) out += "### Instruction:\n" + m.content + "\n";
            else out += "### Response:\n" + m.content + "\n<|EOT|>\n";
            break;
        case chat_template::DEEPSEEK2:
            if (sys) out += m.content + "\n\n";
            else if (user) out += "User: " + m.content + "\n\n";
            else out += "Assistant: " + m.content + k_end_of_sentence;
            break;
        default:  // DEEPSEEK3
            if (sys) out += m.content + "\n\n";
            else if (user) out += k_ds_user + m.content;
            else out += k_ds_assistant + m.content + k_end_of_sentence;
            break;
        }
    }
    if (add_ass) {
        out += t == chat_template::DEEPSEEK ? "### Response:\n" : t == chat_template::DEEPSEEK2 ? "Assistant:" : k_ds_assistant;
    }
}

} // namespace

const char * chat_template_name(chat_template t) {
    return size_t(t) < k_n_canonical ? k_names[size_t(t)].name : "unknown";
}

bool chat_template_from_name(std::string_view name, chat_template * out) {
    for (const template_name & n : k_names)
        if (name == n.name) {
            *out = n.t;
            return true;
        }
    return false;
}

std::string chat_template_names() {
    std::string s;
    for (size_t i = 0; i < k_n_canonical; ++i) {
        if (i) s += ", ";
        s += k_names[i].name;
    }
    return s;
}

chat_template chat_template_detect(std::string_view jinja, std::string * other) {
    if (other) other->clear();
    chat_template named;
    if (chat_template_from_name(jinja, &named)) return named;
    auto has = [jinja](const char * s) { return jinja.find(s) != std::string_view::npos; };
    auto not_ours = [other](const char * family) {
        if (other) *other = family;
        return chat_template::UNKNOWN;
    };
    // llama.cpp's order: a family is tested only after every family before it
    // failed, so families gloas does not write are still tested in their place.
    if (has("<|im_start|>")) {
        if (has("<|im_sep|>")) return not_ours("phi4");
        if (has("<end_of_utterance>")) return not_ours("smolvlm");
        return chat_template::CHATML;
    }
    if (starts_with(jinja, "mistral") || has("[INST]")) {
        if (has("[SYSTEM_PROMPT]")) return chat_template::MISTRAL_V7;
        if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
            if (has(" [INST]")) return chat_template::MISTRAL_V1;
            if (has("\"[INST]\"")) return chat_template::MISTRAL_V3_TEKKEN;
            return chat_template::MISTRAL_V3;
        }
        if (has("content.strip()")) return chat_template::LLAMA2_SYS_STRIP;
        if (has("bos_token + '[INST]")) return chat_template::LLAMA2_SYS_BOS;
        if (has("<<SYS>>")) return chat_template::LLAMA2_SYS;
        return chat_template::LLAMA2;
    }
    if (has("<|assistant|>") && has("<|end|>")) return chat_template::PHI3;
    if (has("[gMASK]<sop>")) return not_ours("chatglm4");
    if (has("<|assistant|>") && has("<|user|>")) return not_ours(has("</s>") ? "falcon3" : "glmedge");
    if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return not_ours("glmedge");
    if (has("<|user|>") && has("<|endoftext|>")) return chat_template::ZEPHYR;
    if (has("bos_token + message['role']")) return not_ours("monarch");
    if (has("<start_of_turn>")) return chat_template::GEMMA;
    if (has("'\\n\\nAssistant: ' + eos_token")) return not_ours("orion");
    if (has("GPT4 Correct ")) return not_ours("openchat");
    if (has("USER: ") && has("ASSISTANT: ")) return not_ours("vicuna");
    if (has("### Instruction:") && has("<|EOT|>")) return chat_template::DEEPSEEK;
    if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return not_ours("command-r");
    if (has("<|start_header_id|>") && has("<|end_header_id|>")) return chat_template::LLAMA3;
    if (has("[gMASK]sop")) return not_ours("chatglm3");
    if (has("<\xe7\x94\xa8\xe6\x88\xb7>")) return not_ours("minicpm");  // <用户>
    if (has("'Assistant: ' + message['content'] + eos_token")) return chat_template::DEEPSEEK2;
    if (has(k_ds_assistant) && has(k_ds_user) && has(k_end_of_sentence)) return chat_template::DEEPSEEK3;
    return chat_template::UNKNOWN;
}

chat_template chat_template_choose(const std::string & name, const std::string & jinja, const std::string & model_path,
                                   std::string * note) {
    if (note) note->clear();
    chat_template t = chat_template::UNKNOWN;
    if (!name.empty()) {
        if (!chat_template_from_name(name, &t))
            throw error(format("--chat-template: unknown template '%s'; known: %s", name.c_str(),
                               chat_template_names().c_str()));
        return t;
    }
    if (jinja.empty()) {
        if (note)
            *note = format("%s: the model has no chat template (tokenizer.chat_template); using chatml "
                           "(--chat-template NAME chooses another: %s)", model_path.c_str(), chat_template_names().c_str());
        return chat_template::CHATML;
    }
    std::string other;
    t = chat_template_detect(jinja, &other);
    if (t == chat_template::UNKNOWN) {
        const std::string what = other.empty() ? std::string("is not one of the known formats")
                                               : "looks like " + other + ", a format gloas does not write";
        throw error(format("%s: the model's chat template (tokenizer.chat_template) %s; choose a format with "
                           "--chat-template NAME (one of %s)", model_path.c_str(), what.c_str(),
                           chat_template_names().c_str()));
    }
    return t;
}

std::string chat_format(chat_template t, const std::vector<chat_message> & msgs, bool add_assistant_prompt) {
    std::string out;
    switch (t) {
    case chat_template::CHATML:
    case chat_template::LLAMA3:
    case chat_template::ZEPHYR:
    case chat_template::PHI3:
        format_tagged(t, msgs, add_assistant_prompt, out);
        break;
    case chat_template::LLAMA2:
    case chat_template::LLAMA2_SYS:
    case chat_template::LLAMA2_SYS_BOS:
    case chat_template::LLAMA2_SYS_STRIP:
        format_llama2(t, msgs, out);
        break;
    case chat_template::MISTRAL_V1:
    case chat_template::MISTRAL_V3:
    case chat_template::MISTRAL_V3_TEKKEN:
        format_mistral(t, msgs, out);
        break;
    case chat_template::MISTRAL_V7:
        for (const chat_message & m : msgs) {
            if (m.role == "system") out += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
            else if (m.role == "user") out += "[INST] " + m.content + "[/INST]";
            else out += " " + m.content + "</s>";
        }
        break;
    case chat_template::GEMMA:
        format_gemma(msgs, add_assistant_prompt, out);
        break;
    case chat_template::DEEPSEEK:
    case chat_template::DEEPSEEK2:
    case chat_template::DEEPSEEK3:
        format_deepseek(t, msgs, add_assistant_prompt, out);
        break;
    case chat_template::UNKNOWN:
        GLOAS_ASSERT(!"chat_format: no format for UNKNOWN");
    }
    return out;
}

std::string chat_assistant_suffix(chat_template t) {
    // Formats a reply made of a sentinel no template trims and takes what
    // follows it.
    static const std::string sentinel = "\x01gloas-reply\x01";
    const std::string s = chat_format(t, {{"user", "u"}, {"assistant", sentinel}}, false);
    const size_t at = s.rfind(sentinel);
    GLOAS_ASSERT(at != std::string::npos);
    return s.substr(at + sentinel.size());
}

std::string chat_end_marker(chat_template t) { return trim(chat_assistant_suffix(t)); }

chat_session::chat_session(chat_template t, std::string system) : t_(t) {
    GLOAS_ASSERT(t != chat_template::UNKNOWN);
    if (!system.empty()) msgs_.push_back({"system", std::move(system)});
}

std::string chat_session::add_user(std::string content) {
    std::string text = std::move(close_);
    close_.clear();
    // The first turn formats everything from the start (llama2 writes "[INST] "
    // even for no message); later ones the difference.
    const std::string past = n_turns_ == 0 ? std::string() : chat_format(t_, msgs_, false);
    msgs_.push_back({"user", std::move(content)});
    const std::string now = chat_format(t_, msgs_, true);
    // Every format appends: the conversation without the new message is a
    // prefix of the conversation with it.
    GLOAS_ASSERT(starts_with(now, past));
    text += now.substr(past.size());
    ++n_turns_;
    return text;
}

void chat_session::add_assistant(std::string content, const std::string & evaluated) {
    GLOAS_ASSERT(!msgs_.empty() && msgs_.back().role == "user");
    std::string full = content + chat_assistant_suffix(t_);
    close_ = starts_with(full, evaluated) ? full.substr(evaluated.size()) : chat_assistant_suffix(t_);
    msgs_.push_back({"assistant", std::move(content)});
}

} // namespace gloas
