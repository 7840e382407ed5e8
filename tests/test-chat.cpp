// Chat formats: every family against hand-written prompt texts, detection
// from template snippets, the errors that suggest --chat-template, and the
// per-turn texts of a chat_session. Then gloas --chat itself: the format
// read from a GGUF, and Ctrl-C (the two-turn stdin session is in test-cli).
#include "decoder/chat.h"
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "base/error.h"
#include "test-util.h"
#include "tools/common/chat-loop.h"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace gloas;

namespace {

// <｜end▁of▁sentence｜>, <｜User｜>, <｜Assistant｜> (full-width bars, U+2581).
const std::string EOS_DS = "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>";
const std::string USER_DS = "<\xef\xbd\x9c" "User\xef\xbd\x9c>";
const std::string ASSISTANT_DS = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";

// system + user + assistant + user.
const std::vector<chat_message> k_conv = {
    {"system", "You are kind."},
    {"user", "Hello"},
    {"assistant", "Hi!"},
    {"user", "More?"},
};

chat_template by_name(const char * name) {
    chat_template t = chat_template::UNKNOWN;
    REQUIRE(chat_template_from_name(name, &t));
    return t;
}

std::string fmt(const char * name, bool add_ass = true) { return chat_format(by_name(name), k_conv, add_ass); }

} // namespace

TEST_CASE("every family formats system + user + assistant + user as written by hand") {
    struct want {
        const char * name;
        std::string text;
    };
    const want w[] = {
        {"chatml",
         "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
         "<|im_start|>assistant\nHi!<|im_end|>\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n"},
        {"llama2", "[INST] You are kind.\nHello [/INST]Hi!</s>[INST] More? [/INST]"},
        {"llama2-sys", "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHello [/INST]Hi!</s>[INST] More? [/INST]"},
        {"llama2-sys-bos",
         "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHello [/INST]Hi!</s><s>[INST] More? [/INST]"},
        {"llama2-sys-strip",
         "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHello [/INST]Hi!</s>[INST] More? [/INST]"},
        {"mistral-v1", " [INST] You are kind.\n\nHello [/INST] Hi!</s> [INST] More? [/INST]"},
        {"mistral-v3", "[INST] You are kind.\n\nHello[/INST] Hi!</s>[INST] More?[/INST]"},
        {"mistral-v3-tekken", "[INST]You are kind.\n\nHello[/INST]Hi!</s>[INST]More?[/INST]"},
        {"mistral-v7",
         "[SYSTEM_PROMPT] You are kind.[/SYSTEM_PROMPT][INST] Hello[/INST] Hi!</s>[INST] More?[/INST]"},
        {"llama3",
         "<|start_header_id|>system<|end_header_id|>\n\nYou are kind.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nMore?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {"zephyr",
         "<|system|>\nYou are kind.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
         "<|assistant|>\nHi!<|endoftext|>\n<|user|>\nMore?<|endoftext|>\n<|assistant|>\n"},
        {"phi3",
         "<|system|>\nYou are kind.<|end|>\n<|user|>\nHello<|end|>\n"
         "<|assistant|>\nHi!<|end|>\n<|user|>\nMore?<|end|>\n<|assistant|>\n"},
        {"gemma",
         "<start_of_turn>user\nYou are kind.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi!<end_of_turn>\n"
         "<start_of_turn>user\nMore?<end_of_turn>\n<start_of_turn>model\n"},
        {"deepseek",
         "You are kind.### Instruction:\nHello\n### Response:\nHi!\n<|EOT|>\n### Instruction:\nMore?\n### Response:\n"},
        {"deepseek2", "You are kind.\n\nUser: Hello\n\nAssistant: Hi!" + EOS_DS + "User: More?\n\nAssistant:"},
        {"deepseek3",
         "You are kind.\n\n" + USER_DS + "Hello" + ASSISTANT_DS + "Hi!" + EOS_DS + USER_DS + "More?" +
         ASSISTANT_DS},
    };
    for (const want & x : w) {
        INFO(std::string(x.name));
        CHECK(fmt(x.name) == x.text);
    }
}

TEST_CASE("without the assistant prompt; formats without one ignore it") {
    CHECK(fmt("chatml", false) ==
          "<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
          "<|im_start|>assistant\nHi!<|im_end|>\n<|im_start|>user\nMore?<|im_end|>\n");
    CHECK(fmt("gemma", false) ==
          "<start_of_turn>user\nYou are kind.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi!<end_of_turn>\n"
          "<start_of_turn>user\nMore?<end_of_turn>\n");
    CHECK(fmt("deepseek2", false) == "You are kind.\n\nUser: Hello\n\nAssistant: Hi!" + EOS_DS + "User: More?\n\n");
    for (const char * n : {"llama2", "llama2-sys", "mistral-v1", "mistral-v3", "mistral-v7"}) {
        INFO(std::string(n));
        CHECK(fmt(n, false) == fmt(n, true));
    }
}

TEST_CASE("trimming families trim, the others keep whitespace") {
    const std::vector<chat_message> c = {{"system", " S "}, {"user", "  hi\n"}, {"assistant", " yo "}};
    CHECK(chat_format(by_name("llama3"), c, false) ==
          "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>");
    CHECK(chat_format(by_name("gemma"), c, false) ==
          "<start_of_turn>user\nS\n\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n");
    CHECK(chat_format(by_name("llama2-sys-strip"), c, false) == "[INST] <<SYS>>\nS\n<</SYS>>\n\nhi [/INST]yo</s>");
    CHECK(chat_format(by_name("mistral-v3"), c, false) == "[INST]  S \n\n  hi\n[/INST] yo</s>");
    CHECK(chat_format(by_name("chatml"), c, false) ==
          "<|im_start|>system\n S <|im_end|>\n<|im_start|>user\n  hi\n<|im_end|>\n<|im_start|>assistant\n yo <|im_end|>\n");
}

TEST_CASE("gemma without a system message; llama2 without one") {
    const std::vector<chat_message> c = {{"user", "a"}, {"assistant", "b"}};
    CHECK(chat_format(by_name("gemma"), c, true) ==
          "<start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>model\n");
    CHECK(chat_format(by_name("llama2-sys"), c, true) == "[INST] a [/INST]b</s>");
    CHECK(chat_format(by_name("chatml"), {}, true) == "<|im_start|>assistant\n");
}

TEST_CASE("assistant suffixes and end markers") {
    struct want {
        const char * name;
        std::string suffix, marker;
    };
    const want w[] = {
        {"chatml", "<|im_end|>\n", "<|im_end|>"},   {"llama2", "</s>", "</s>"},
        {"llama2-sys-bos", "</s>", "</s>"},         {"mistral-v1", "</s>", "</s>"},
        {"mistral-v7", "</s>", "</s>"},             {"llama3", "<|eot_id|>", "<|eot_id|>"},
        {"zephyr", "<|endoftext|>\n", "<|endoftext|>"}, {"phi3", "<|end|>\n", "<|end|>"},
        {"gemma", "<end_of_turn>\n", "<end_of_turn>"},  {"deepseek", "\n<|EOT|>\n", "<|EOT|>"},
        {"deepseek2", EOS_DS, EOS_DS},              {"deepseek3", EOS_DS, EOS_DS},
    };
    for (const want & x : w) {
        INFO(std::string(x.name));
        CHECK(chat_assistant_suffix(by_name(x.name)) == x.suffix);
        CHECK(chat_end_marker(by_name(x.name)) == x.marker);
    }
}

TEST_CASE("names, aliases and the list of known names") {
    chat_template t;
    const std::pair<const char *, chat_template> aliases[] = {{"llama-3", chat_template::LLAMA3},
                                                              {"llama-2", chat_template::LLAMA2},
                                                              {"phi-3", chat_template::PHI3},
                                                              {"mistral", chat_template::LLAMA2}};
    for (const auto & a : aliases) {  // no structured binding: INFO captures it, which clang 14 refuses
        const char * alias = a.first;
        INFO(alias);
        CHECK(chat_template_from_name(alias, &t));
        CHECK(t == a.second);
    }
    for (const char * unknown : {"chatgpt", ""}) CHECK_FALSE(chat_template_from_name(unknown, &t));
    CHECK(chat_template_names() ==
          "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, mistral-v3, mistral-v3-tekken, "
          "mistral-v7, llama3, zephyr, phi3, gemma, deepseek, deepseek2, deepseek3");
    for (int i = 0; i < int(chat_template::UNKNOWN); ++i) {
        const chat_template ti = chat_template(i);
        CHECK(chat_template_from_name(chat_template_name(ti), &t));
        CHECK(t == ti);
    }
    CHECK(std::string(chat_template_name(chat_template::UNKNOWN)) == "unknown");
}

TEST_CASE("detection from template snippets, by llama.cpp's markers") {
    struct snippet {
        const char * jinja;
        chat_template t;
    };
    const std::string ds3 = "{{'" + USER_DS + "' + message['content']}}{{'" + ASSISTANT_DS + "' + message['content'] + '" +
                            EOS_DS + "'}}";
    const snippet s[] = {
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
         "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
         chat_template::CHATML},
        {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
         "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
         chat_template::LLAMA2},
        {"{% if system %}{{ '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}", chat_template::LLAMA2_SYS},
        {"{{ bos_token + '[INST] ' + '<<SYS>>\\n' + content + ' [/INST]' }}", chat_template::LLAMA2_SYS_BOS},
        {"{{ bos_token + '[INST] <<SYS>>\\n' + content.strip() + ' [/INST]' }}", chat_template::LLAMA2_SYS_STRIP},
        {"{{ ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}", chat_template::MISTRAL_V1},
        {"{%- if tools %}[AVAILABLE_TOOLS]{%- endif %}{{- '[INST]' + message['content'] + '[/INST]' }}",
         chat_template::MISTRAL_V3},
        {"{%- if tools %}[AVAILABLE_TOOLS]{%- endif %}{{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}",
         chat_template::MISTRAL_V3_TEKKEN},
        {"{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{{- '[INST]' + content + '[/INST]' }}",
         chat_template::MISTRAL_V7},
        {"mistral", chat_template::LLAMA2},
        {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
         "+ '<|eot_id|>' %}",
         chat_template::LLAMA3},
        {"{{ '<|user|>\\n' + message['content'] + '<|endoftext|>' }}", chat_template::ZEPHYR},
        {"{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n'}}{{ '<|assistant|>\\n' }}",
         chat_template::PHI3},
        {"{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}", chat_template::GEMMA},
        {"{{'### Instruction:\\n' + message['content'] + '\\n'}}{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}",
         chat_template::DEEPSEEK},
        {"{{ 'User: ' + message['content'] + '\\n\\n' }}{{ 'Assistant: ' + message['content'] + eos_token }}",
         chat_template::DEEPSEEK2},
        {ds3.c_str(), chat_template::DEEPSEEK3},
        {"chatml", chat_template::CHATML},
        {"llama-3", chat_template::LLAMA3},
    };
    for (const snippet & x : s) {
        INFO(std::string(x.jinja));
        std::string other = "stale";
        CHECK(chat_template_detect(x.jinja, &other) == x.t);
        CHECK(other.empty());
    }
}

TEST_CASE("families gloas does not write are named, not taken for a later family") {
    struct snippet {
        const char * jinja;
        const char * family;
    };
    const snippet s[] = {
        {"{{'<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>'}}", "phi4"},
        // falcon3 also has <|endoftext|>: without llama.cpp's order it would pass for zephyr.
        {"{{ '<|user|>\\n' + message['content'] + '<|endoftext|>' }}{{ '<|assistant|>\\n' + content + '</s>' }}", "falcon3"},
        {"{{ 'USER: ' + message['content'] + ' ASSISTANT: ' }}", "vicuna"},
        {"{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + message['content'] + '<|start_header_id|><|end_header_id|>' }}",
         "command-r"},
    };
    for (const snippet & x : s) {
        INFO(std::string(x.jinja));
        std::string other;
        CHECK(chat_template_detect(x.jinja, &other) == chat_template::UNKNOWN);
        CHECK(other == x.family);
    }
    std::string other = "stale";
    CHECK(chat_template_detect("{{ messages | tojson }}", &other) == chat_template::UNKNOWN);
    CHECK(other.empty());
    CHECK(chat_template_detect("", &other) == chat_template::UNKNOWN);
}

TEST_CASE("choosing the format: --chat-template wins, else detection, else chatml; errors suggest --chat-template") {
    CHECK(chat_template_choose("llama3", "<|im_start|>", "m.gguf") == chat_template::LLAMA3);
    CHECK(chat_template_choose("", "{{ '<|im_start|>' }}", "m.gguf") == chat_template::CHATML);

    auto message = [](const std::string & name, const std::string & jinja) {
        try {
            chat_template_choose(name, jinja, "m.gguf");
        } catch (const error & e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string unknown_name = message("chatgpt", "");
    CHECK(unknown_name.find("--chat-template") == 0);
    CHECK(unknown_name.find("'chatgpt'") != std::string::npos);
    CHECK(unknown_name.find(chat_template_names()) != std::string::npos);

    // No template at all: chatml, as llama.cpp falls back to it, with a note.
    std::string note = "stale";
    CHECK(chat_template_choose("", "", "m.gguf", &note) == chat_template::CHATML);
    CHECK(note.find("m.gguf: ") == 0);
    CHECK(note.find("no chat template") != std::string::npos);
    CHECK(note.find("using chatml") != std::string::npos);
    CHECK(note.find("--chat-template NAME") != std::string::npos);
    CHECK(chat_template_choose("", "{{ '<|im_start|>' }}", "m.gguf", &note) == chat_template::CHATML);
    CHECK(note.empty());

    const std::string unrecognized = message("", "{{ messages | tojson }}");
    CHECK(unrecognized.find("m.gguf: ") == 0);
    CHECK(unrecognized.find("not one of the known formats") != std::string::npos);
    CHECK(unrecognized.find("--chat-template NAME (one of chatml, llama2") != std::string::npos);

    const std::string other = message("", "{{ 'GPT4 Correct User: ' }}");
    CHECK(other.find("looks like openchat") != std::string::npos);
    CHECK(other.find("--chat-template") != std::string::npos);
}

TEST_CASE("a chatml session: each turn's text, as written by hand") {
    chat_session s(chat_template::CHATML, "Be brief.");
    CHECK(s.add_user("Hello") ==
          "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    // The whole reply was evaluated: the next turn closes it, then asks.
    s.add_assistant("Hi!", "Hi!");
    CHECK(s.add_user("More?") == "<|im_end|>\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n");
    // The marker came as text and part of it was evaluated: only the rest follows.
    s.add_assistant("Sure", "Sure<|im_");
    CHECK(s.add_user("Thanks") == "end|>\n<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n");
    // The reply's last token was not evaluated: its text comes first.
    s.add_assistant("Bye now", "Bye");
    CHECK(s.add_user("x") == " now<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    CHECK(s.n_turns() == 4);
    CHECK(s.messages().size() == 8);
}

TEST_CASE("a llama3 session without a system message") {
    chat_session s(chat_template::LLAMA3);
    CHECK(s.add_user("Hello") ==
          "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    s.add_assistant("Hi!", "Hi!");
    CHECK(s.add_user("More?") ==
          "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nMore?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST_CASE("in every family the turns add up to the whole conversation") {
    for (int i = 0; i < int(chat_template::UNKNOWN); ++i) {
        const chat_template t = chat_template(i);
        INFO(std::string(chat_template_name(t)));
        // The mistral families (but tekken) and deepseek2 write a space
        // before the reply's content that their assistant prompt lacks: the
        // model writes it (as its first token's leading space), so the reply
        // "Hi!" comes as " Hi!".
        const bool spaced = t == chat_template::MISTRAL_V1 || t == chat_template::MISTRAL_V3 ||
                            t == chat_template::MISTRAL_V7 || t == chat_template::DEEPSEEK2;
        const std::string reply = spaced ? " Hi!" : "Hi!";
        chat_session s(t, "You are kind.");
        std::string all = s.add_user("Hello");
        all += reply;
        s.add_assistant(reply, reply);
        all += s.add_user("More?");
        CHECK(all == chat_format(t, k_conv, true));
    }
}

TEST_CASE("gloas --chat takes the format from the GGUF's tokenizer.chat_template; --chat-template overrides it") {
    const auto src = gguf_file::open(test::require_model("stories260K_f32.gguf"));
    const std::string dir = test::temp_dir("chat-gguf");
    auto write_with = [&](const std::string & path, const std::string & jinja) {
        gguf_writer w;
        w.copy_metadata(*src);
        w.set_str("tokenizer.chat_template", jinja);
        for (const gguf_tensor_info & ti : src->tensors()) w.add_tensor(ti.name, ti.t, ti.n_dims, ti.ne, ti.data);
        w.write(path);
    };
    write_with(dir + "/llama3.gguf",
               "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + "
               "'<|eot_id|>' }}");
    const std::vector<std::string> common = {"--chat", "-m", dir + "/llama3.gguf", "--verbose-prompt", "--temp", "0",
                                             "-n", "4", "--kv-dir", "none"};
    auto r = test::run_tool("gloas", common, "Hi\n");
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.find("chat format llama3 (from the model's tokenizer.chat_template)") != std::string::npos);
    const std::string want = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    CHECK(r.err.find("gloas: turn 1 prompt, " + std::to_string(want.size()) + " bytes:\n" + want + "\n") != std::string::npos);

    std::vector<std::string> args = common;
    args.insert(args.end(), {"--chat-template", "chatml"});
    auto o = test::run_tool("gloas", args, "Hi\n");
    REQUIRE(o.status == 0);
    CHECK(o.err.find("chat format chatml (--chat-template)") != std::string::npos);
    CHECK(o.err.find("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") != std::string::npos);

    write_with(dir + "/odd.gguf", "{{ messages | tojson }}");
    auto bad = test::run_tool("gloas", {"--chat", "-m", dir + "/odd.gguf", "--kv-dir", "none"}, "Hi\n");
    CHECK(bad.status == 1);
    CHECK(bad.out.empty());
    CHECK(bad.err.find("odd.gguf: the model's chat template (tokenizer.chat_template) is not one of the known formats; "
                       "choose a format with --chat-template NAME") != std::string::npos);
}

TEST_CASE("gloas --chat: Ctrl-C stops a reply, not the chat; twice at the prompt it quits") {
    const std::string dir = test::temp_dir("chat-sigint");
    const std::string out = dir + "/out", err = dir + "/err";
    test::write_file(out, std::string());
    test::write_file(err, std::string());
    // Replies that would run for thousands of tokens: only Ctrl-C ends them.
    const std::string exe = std::string(GLOAS_BIN_DIR) + "/gloas";
    const std::vector<std::string> args = {exe, "--chat", "-m", test::require_model("stories260K.bin"), "--chat-template",
                                           "chatml", "--temp", "0", "--ignore-eos", "-n", "100000", "-c", "4096",
                                           "--kv-dir", "none", "-t", "1"};
    int in[2];
    REQUIRE(::pipe(in) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(in[0], 0);
        ::close(in[0]);
        ::close(in[1]);
        const int o = ::open(out.c_str(), O_WRONLY | O_TRUNC), e = ::open(err.c_str(), O_WRONLY | O_TRUNC);
        ::dup2(o, 1);
        ::dup2(e, 2);
        std::vector<char *> argv;
        for (const std::string & a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        test::exec_program(exe, argv);
    }
    ::close(in[0]);
    int status = -1;
    bool exited = false;
    struct reaper {  // a failed REQUIRE leaves no child behind
        pid_t pid;
        int fd;
        bool * exited;
        ~reaper() {
            if (fd >= 0) ::close(fd);
            if (!*exited) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } guard{pid, in[1], &exited};
    auto say = [&](const std::string & line) { REQUIRE(::write(in[1], line.data(), line.size()) == ssize_t(line.size())); };
    auto count = [](const std::string & s, const std::string & what) {
        size_t n = 0;
        for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
        return n;
    };
    // Waits (two minutes at most) until stderr holds `what` n times or the
    // process ended.
    auto wait_for = [&](const std::string & what, size_t n) {
        for (int i = 0; i < 12000; ++i) {
            if (count(test::read_file(err), what) >= n) return true;
            if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
            if (exited) return count(test::read_file(err), what) >= n;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    };

    say("Tell me a story.\n");
    REQUIRE(wait_for("gloas: turn 1: ", 1));  // prefilled, now replying
    ::kill(pid, SIGINT);
    REQUIRE(wait_for("gloas: turn 1: reply", 1));
    CHECK(test::read_file(err).find("(interrupted)") != std::string::npos);
    ::kill(pid, SIGINT);  // at the prompt: asks for another
    REQUIRE(wait_for("(Ctrl-C again or Ctrl-D to quit)", 1));
    CHECK_FALSE(exited);
    say("And then?\n");
    REQUIRE(wait_for("gloas: turn 2: ", 1));
    ::kill(pid, SIGINT);
    REQUIRE(wait_for("gloas: turn 2: reply", 1));
    ::kill(pid, SIGINT);
    REQUIRE(wait_for("(Ctrl-C again or Ctrl-D to quit)", 2));
    ::kill(pid, SIGINT);
    REQUIRE(wait_for("chat ended after 2 turns", 1));
    for (int i = 0; i < 12000 && !exited; ++i) {
        if (::waitpid(pid, &status, WNOHANG) == pid) exited = true;
        else std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(exited);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    const std::string e = test::read_file(err);
    INFO("stderr: " << e);
    CHECK(count(e, "(interrupted)") == 2);
    CHECK(!test::read_file(out).empty());
}

TEST_CASE("gloas --chat: a full context says so and ends the chat cleanly") {
    const std::vector<std::string> common = {"--chat", "-m", test::require_model("stories260K.bin"), "--chat-template",
                                             "chatml", "--temp", "0", "--ignore-eos", "-n", "1000", "--kv-dir", "none"};
    std::vector<std::string> args = common;
    args.insert(args.end(), {"-c", "64"});
    auto r = test::run_tool("gloas", args, "Tell me a story.\nAnd then?\n");
    INFO("stderr: " << r.err);
    CHECK(r.status == 0);
    test::check_contains(r.err, {"gloas: turn 1: reply ", " tokens (context full)",
                                 "the context is full (64 positions); chat ended", "chat ended after 1 turns, 64 positions"});

    // A first message longer than the context.
    args = common;
    args.insert(args.end(), {"-c", "16"});
    auto s = test::run_tool("gloas", args, "Tell me a story.\n");
    CHECK(s.status == 0);
    CHECK(s.err.find("the context is full: this turn needs") != std::string::npos);
    CHECK(s.err.find("16 of 16 are left") != std::string::npos);
}

TEST_CASE("a streaming reply ends at the end marker, which is never shown") {
    using chat_cli::reply_text;
    reply_text r("<|im_end|>");
    CHECK_FALSE(r.add("Hello"));
    CHECK(r.take_showable(false) == "Hello");
    CHECK_FALSE(r.add(" <|im"));  // could be the marker: held
    CHECK(r.take_showable(false) == " ");
    CHECK(r.add("_end|>\nmore"));
    CHECK(r.ended());
    CHECK(r.content() == "Hello ");
    CHECK(r.text() == "Hello <|im_end|>\nmore");
    CHECK(r.take_showable(true).empty());

    reply_text n("<|im_end|>");  // a held start that is not the marker after all
    CHECK_FALSE(n.add("a<|i"));
    CHECK(n.take_showable(false) == "a");
    CHECK_FALSE(n.add("x"));
    CHECK(n.take_showable(false) == "<|ix");

    reply_text m("<|im_end|>");  // the marker over three tokens, from the start
    CHECK_FALSE(m.add("<"));
    CHECK_FALSE(m.add("|im_end"));
    CHECK(m.take_showable(false).empty());
    CHECK(m.add("|>"));
    CHECK(m.content().empty());

    reply_text u("</s>");  // whole UTF-8 characters only; the end shows what was held
    CHECK_FALSE(u.add("caf\xc3"));
    CHECK(u.take_showable(false) == "caf");
    CHECK_FALSE(u.add("\xa9 </"));
    CHECK(u.take_showable(false) == "\xc3\xa9 ");
    CHECK(u.take_showable(true) == "</");
    CHECK(u.content() == "caf\xc3\xa9 </");

    reply_text none("");
    CHECK_FALSE(none.add("<|im_end|>"));
    CHECK(none.take_showable(false) == "<|im_end|>");
}

TEST_CASE("gloas --chat reads one message per line: a trailing backslash continues it, empty lines are skipped") {
    auto r = test::run_tool("gloas", {"--chat", "-m", test::require_model("stories260K.bin"), "--chat-template", "chatml",
                                      "--verbose-prompt", "--temp", "0", "-n", "2", "--kv-dir", "none"},
                            "first\\\nsecond\n\n\r\nthird\r\nlast line without a newline");
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    test::check_contains(r.err, {"<|im_start|>user\nfirst\nsecond<|im_end|>\n", "<|im_start|>user\nthird<|im_end|>\n",
                                 "<|im_start|>user\nlast line without a newline<|im_end|>\n", "chat ended after 3 turns"});
}
