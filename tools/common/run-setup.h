// The start of a tool that generates, shared by gloas and gloas-server: its
// --help from its own option table and the shared one, its command line read
// against both, the model found, and the context parameters built in one
// order of precedence: the memory strategy's defaults, then the
// configuration file's settings (--config), then what the tool chooses
// itself (gloas --auto), then the flags given.
#pragma once

#include "decoder/config.h"
#include "decoder/llama.h"
#include "decoder/options.h"
#include "decoder/strategy.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace gloas::cli {

// Rows of a tool's own option table, each giving only what is its own: a
// switch, a value of any text, an integer in [lo, hi], one of `words`
// ('|'-separated).
constexpr option_def opt_switch(int id, const char * names, const char * group, const char * help) {
    return {id, names, nullptr, opt_kind::SWITCH, 0, 0, false, nullptr, group, help};
}
constexpr option_def opt_text(int id, const char * names, const char * arg, const char * group, const char * help) {
    return {id, names, arg, opt_kind::TEXT, 0, 0, false, nullptr, group, help};
}
constexpr option_def opt_int(int id, const char * names, const char * arg, double lo, double hi, const char * group,
                             const char * help) {
    return {id, names, arg, opt_kind::INT, lo, hi, false, nullptr, group, help};
}
constexpr option_def opt_word(int id, const char * names, const char * arg, const char * words, const char * group,
                              const char * help) {
    return {id, names, arg, opt_kind::WORD, 0, 0, false, words, group, help};
}

// A --help section: the tool's own rows of group `own` and the shared rows
// of group `shared` (either may be nullptr).
struct help_section {
    const char * title;
    const char * own;
    const char * shared;
};
// --help: `head`, then each of the n_sections sections as "\nTITLE:\n" and
// its rows.
std::string options_help(const char * head, const option_def * own, size_t n_own, const help_section * sections,
                         size_t n_sections);
// Prints options_help on stdout and exits with status 0.
template <size_t N>
[[noreturn]] void print_help(const char * head, const option_def * own, size_t n_own, const help_section (&sections)[N]) {
    std::fputs(options_help(head, own, n_own, sections, N).c_str(), stdout);
    std::exit(0);
}

// Reads the command line `args` (argv without the tool's name). --config
// FILE is read first, wherever it stands, into `flags`, so that the flags
// given override it. Each argument is then a row of `own`, passed to
// `on_own` with the spelling typed and its value read (option_read; none for
// a switch), or a shared flag applied to `flags` (config_apply_flag). An
// unknown option, a missing value or a bad one is a usage error (exit 2).
using own_option_fn = std::function<void(const option_def & d, const std::string & flag, const option_value & v)>;
void parse_options(const std::vector<std::string> & args, const option_def * own, size_t n_own,
                   run_config & flags, std::string & config_path, const own_option_fn & on_own);

// The value of --chat-template: a template name chat_template_from_name
// knows; a usage error naming `flag` and the known names otherwise.
std::string chat_template_arg(const std::string & flag, const std::string & name);

// -m and -z: a path or a name looked up in the model folders (model_find);
// no -m is the default model, stories260K. A name not found is a
// gloas::error saying where it was looked for.
void resolve_model_paths(std::string & model_path, std::string & tokenizer_path);

// The memory strategy and the configuration file, before the context
// parameters are built.
struct context_setup {
    memory_strategy strategy = memory_strategy::SPEED;  // --strategy, else the file's, else speed
    bool strategy_given = false;                        // by --strategy
    std::unique_ptr<run_config> file;                   // --config's settings; null without one
};

// The strategy the flags give, then the configuration file at config_path
// (when not empty): its warnings printed, its model shape checked against
// m, its strategy taken unless --strategy was given.
context_setup setup_begin(const run_config & flags, const std::string & config_path, const model & m);

// cp from the setup: strategy auto resolved for n_ctx positions (printing
// why, unless quiet), the strategy's defaults, then the file's settings
// (context, K/V folder under kv_dir, sparse attention when it turns it on).
void setup_params(context_setup & s, const model & m, int64_t n_ctx, const std::string & kv_dir, bool quiet,
                  context_params & cp);

} // namespace gloas::cli
