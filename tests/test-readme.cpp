// README.md's examples run as written: every command line of its ```sh
// blocks that starts with build/bin/ is run by bash from the source tree (so that
// models/... paths resolve) with this build's tools in place of build/bin/,
// and must exit with status 0. Nothing is added to a command; only its output
// files (the value of -o, --output, --save-logits, and a model file named
// after the first one, as in gloas-quantize IN OUT TYPE) are moved into a
// temporary folder, so that no command writes into the source tree.
//
// Every command sees GLOAS_KV_DIR set to a temporary folder: the README's
// K/V examples run against a folder of the test's own.
//
// A command whose input file (the value of -m, -z, -f, --config, ..., or the
// first argument naming a model file) is not there is skipped with the file
// it lacks, as require_model does: a path is looked up as written, a bare file
// name in models/ and $GLOAS_MODELS, where gloas looks for it. A command that
// cannot run anywhere is listed in k_not_run with the reason.
#include "test-util.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace test = gloas::test;

namespace {

struct not_run {
    const char * needle;  // a command containing this is not run
    const char * reason;
};

// Commands no test can run, by a piece of their text.
const not_run k_not_run[] = {
    {"model-instruct.gguf", "a placeholder for the reader's own instruct model (--chat reads stdin, the server runs until stopped)"},
    {"-m model.gguf", "a placeholder for the reader's own model and prompt file"},
    {"tinyllama-1.1b-chat", "a download of about 670 MB from Hugging Face, which tests do not make"},
    {"Llama-3.2-1B-Instruct", "a download of about 810 MB from Hugging Face, which tests do not make"},
};

// Flags whose value is a file the command reads, and those it writes.
const char * const k_input_flags[] = {"-m", "--model", "-z", "--tokenizer", "-f", "--file", "--config", "--kl-base"};
const char * const k_output_flags[] = {"-o", "--output", "--save-logits"};

bool is_one_of(const std::string & s, const char * const * list, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (s == list[i]) return true;
    return false;
}

bool ends_with(const std::string & s, const std::string & e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

bool exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}

std::string trim(const std::string & s) {
    const size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return {};
    const size_t e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

// The command lines of the ```sh blocks that start with build/bin/, with
// continued lines joined.
std::vector<std::string> readme_commands(const std::string & text) {
    std::vector<std::string> cmds;
    std::istringstream in(text);
    std::string line, pending;
    bool in_sh = false;
    while (std::getline(in, line)) {
        const std::string t = trim(line);
        if (!in_sh) {
            in_sh = t == "```sh" || t == "```bash" || t == "```shell";
            continue;
        }
        if (t.rfind("```", 0) == 0) {
            in_sh = false;
            pending.clear();
            continue;
        }
        if (!t.empty() && t.back() == '\\') {
            pending += t.substr(0, t.size() - 1) + " ";
            continue;
        }
        const std::string cmd = trim(pending + t);
        pending.clear();
        if (cmd.rfind("build/bin/", 0) == 0) cmds.push_back(cmd);
    }
    return cmds;
}

// Splits a command as sh would (quotes, backslashes), dropping a trailing
// comment. Sets `plain` false if it holds shell syntax beyond words
// (pipes, redirections, variables, ...).
std::vector<std::string> split_words(const std::string & cmd, bool & plain) {
    std::vector<std::string> words;
    std::string w;
    bool in_word = false;
    plain = true;
    for (size_t i = 0; i < cmd.size(); ++i) {
        const char c = cmd[i];
        if (c == ' ' || c == '\t') {
            if (in_word) words.push_back(w), w.clear(), in_word = false;
        } else if (c == '#' && !in_word) {
            break;
        } else if (c == '\'') {
            const size_t e = cmd.find('\'', i + 1);
            if (e == std::string::npos) { plain = false; break; }
            w += cmd.substr(i + 1, e - i - 1);
            i = e;
            in_word = true;
        } else if (c == '"') {
            size_t j = i + 1;
            for (; j < cmd.size() && cmd[j] != '"'; ++j) {
                if (cmd[j] == '$' || cmd[j] == '`') plain = false;
                if (cmd[j] == '\\' && j + 1 < cmd.size() && std::string("\"\\$`").find(cmd[j + 1]) != std::string::npos) ++j;
                w += cmd[j];
            }
            if (j == cmd.size()) { plain = false; break; }
            i = j;
            in_word = true;
        } else if (c == '\\' && i + 1 < cmd.size()) {
            w += cmd[++i];
            in_word = true;
        } else {
            if (std::string("|&;<>()$`*?[~").find(c) != std::string::npos) plain = false;
            w += c;
            in_word = true;
        }
    }
    if (in_word) words.push_back(w);
    return words;
}

std::string sh_quote(const std::string & s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// Where an input file named in a command is, or "" with `need` set to the
// file it lacks and `how` to how to get it.
std::string find_input(const std::string & arg, std::string & need, std::string & how) {
    const std::string src = GLOAS_SOURCE_DIR;
    if (arg.find('/') != std::string::npos) {
        const std::string p = arg[0] == '/' ? arg : src + "/" + arg;
        if (exists(p)) return p;
        need = arg;
        how = arg.rfind("models/", 0) == 0 ? "models/fetch.sh " + arg.substr(7) : "the README names it";
        return {};
    }
    if (exists(src + "/models/" + arg)) return src + "/models/" + arg;
    if (const char * env = std::getenv("GLOAS_MODELS"); env && *env && exists(std::string(env) + "/" + arg))
        return std::string(env) + "/" + arg;
    need = "models/" + arg;
    how = "models/fetch.sh " + arg + ", or GLOAS_MODELS";
    return {};
}

bool names_model_file(const std::string & w) {
    for (const char * e : {".gguf", ".bin", ".model", ".safetensors"})
        if (ends_with(w, e)) return true;
    return false;
}

} // namespace

TEST_CASE("readme: every build/bin/ command of README.md's sh blocks exits 0") {
    const std::string readme = test::read_file(std::string(GLOAS_SOURCE_DIR) + "/README.md");
    const std::vector<std::string> cmds = readme_commands(readme);
    REQUIRE_MESSAGE(!cmds.empty(), "README.md has no ```sh block with a build/bin/ command");

    const std::string out_dir = test::temp_dir("readme");
    std::vector<bool> needle_used(std::size(k_not_run), false);
    int ran = 0;
    for (const std::string & cmd : cmds) {
        INFO("README command: " << cmd);
        const not_run * skip = nullptr;
        for (size_t i = 0; i < std::size(k_not_run); ++i)
            if (cmd.find(k_not_run[i].needle) != std::string::npos) {
                skip = &k_not_run[i];
                needle_used[i] = true;
            }
        if (skip) {
            std::printf("not run (%s): %s\n", skip->reason, cmd.c_str());
            continue;
        }

        bool plain = true;
        std::vector<std::string> words = split_words(cmd, plain);
        REQUIRE(!words.empty());
        bool missing = false, positional_seen = false;
        for (size_t i = 1; i < words.size(); ++i) {
            const std::string & w = words[i];
            const bool flag_value = words[i - 1][0] == '-' && words[i - 1] != "-";
            const bool positional = !flag_value && w[0] != '-' && names_model_file(w);
            bool output = is_one_of(words[i - 1], k_output_flags, std::size(k_output_flags));
            bool input = is_one_of(words[i - 1], k_input_flags, std::size(k_input_flags));
            if (positional) {
                (positional_seen ? output : input) = true;
                positional_seen = true;
            }
            if (output && plain) {
                words[i] = out_dir + "/" + w.substr(w.find_last_of('/') + 1);
            } else if (input && w != "-") {
                std::string need, how;
                if (find_input(w, need, how).empty()) {
                    test::note_missing(need, how);
                    missing = true;
                }
            }
        }
        if (missing) continue;

        // Run by bash from the source tree (pipefail: a pipe fails when any
        // command in it does), build/bin/ replaced by this build's tools
        // (in a cross build, wrappers that run them under the emulator).
        std::string line;
        if (plain) {
            line = sh_quote(std::string(GLOAS_SHELL_BIN_DIR) + "/" + words[0].substr(10));
            for (size_t i = 1; i < words.size(); ++i) line += " " + sh_quote(words[i]);
        } else {
            line = std::string(GLOAS_SHELL_BIN_DIR) + "/" + cmd.substr(10);
        }
        // The K/V folder is the test's own, so that no command (gloas-kv clear)
        // touches the user's.
        const std::string script = "set -o pipefail; export GLOAS_KV_DIR=" + sh_quote(out_dir + "/kv") + "; cd " +
                                   sh_quote(GLOAS_SOURCE_DIR) + " && " + line;
        auto r = test::run_tool("/bin/bash", {"-c", script});
        INFO("stderr: " << r.err);
        CHECK_MESSAGE(r.status == 0, "exit status " << r.status);
        std::printf("ran (exit %d): %s\n", r.status, cmd.c_str());
        ++ran;
    }
    for (size_t i = 0; i < std::size(k_not_run); ++i)
        if (!needle_used[i]) MESSAGE("k_not_run entry '" << k_not_run[i].needle << "' matches no README command: remove it");
    std::printf("%d of %zu README commands ran\n", ran, cmds.size());
}
