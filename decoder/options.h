// The command-line options the tools share: context, K/V cache, sparse
// attention, sliding, sampling, threads and model loading.
//
// One table (SHARED_OPTIONS, listed in options.def) describes each option:
// every spelling (gloas's and, where the meaning is the same, llama.cpp's),
// its value and range, its --help text. The parser (config_apply_flag) and
// the help (options_usage) both read it, so what a tool accepts and what its
// --help says cannot drift apart. A tool keeps its own options in a table of the same shape and reads
// both with the same functions; a tool that takes only some shared options,
// or takes lists of values, names them in option_use entries. The
// configuration file's keys that are flags are read by the same rows
// (decoder/config.h), and the C API checks its K/V fields with
// kv_options_problem.
//
// Flags fill a run_config (decoder/config.h) and mark what they set in
// run_config::given; config_override then lays only the given settings over
// context parameters built from defaults, a memory strategy, a configuration
// file or --auto. Errors are cli_error ("FLAG: what is wrong"), which tools
// report as a bad command line (exit status 2).
#pragma once

#include "decoder/config.h"
#include "kvcache/policy.h"
#include "quant/types.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gloas {

// A bad command line: the message names the flag as typed and what is wrong.
// Tools print it with a pointer to --help and exit with status 2.
struct cli_error : error {
    using error::error;
};

enum class opt_kind : uint8_t {
    SWITCH,  // no value
    INT,     // an integer in [lo, hi]
    FLOAT,   // a number in [lo, hi] ((lo, hi] when lo_open)
    WORD,    // one of `words`
    SIZE,    // a K/V size: bytes with k/M/G, pages with p, tokens with t
    TEXT,    // any text
};

struct option_def {
    int id;                // the table's own enumeration (shared_opt for SHARED_OPTIONS)
    const char * names;    // spellings separated by '|', the main one first: "-c|--ctx-size"
    const char * arg;      // the value's name in --help ("N"); nullptr for a switch
    opt_kind kind;
    double lo, hi;         // INT and FLOAT: the accepted range
    bool lo_open;          // FLOAT: lo itself is refused
    const char * words;    // WORD: the accepted values, '|'-separated
    const char * group;    // --help section
    const char * help;     // --help text: one paragraph, wrapped by options_usage
};

// The row whose spellings include `flag`; nullptr if none.
const option_def * option_find(const option_def * table, size_t n, const std::string & flag);

// A value read for a row.
struct option_value {
    int64_t i = 0;       // INT
    double f = 0;        // FLOAT
    std::string s;       // WORD, SIZE, TEXT (and the text of any value)
};
// Reads the value given after `flag` (the spelling typed) for row d, checked
// against its kind and range. Throws cli_error naming the flag, the value and
// what was expected.
option_value option_read(const option_def & d, const std::string & flag, const std::string & value);

// --help lines of the rows of `group`, in table order: the spellings and the
// value's name from column 3 (column 7 when the first spelling is long),
// the help text from column 27, wrapped before column 80. "{words}" in the
// help text of a WORD row stands for its accepted values ("a, b or c").
std::string options_usage(const option_def * table, size_t n, const char * group);

// The shared options, by id (SHARED_OPTIONS[id].id == id), both made from
// the one list in decoder/options.def.
enum shared_opt : int {
#define GLOAS_OPTION(id, ...) id,
#include "decoder/options.def"
#undef GLOAS_OPTION
    N_SHARED_OPTS
};
static_assert(N_SHARED_OPTS <= 64, "run_config::given is a 64-bit mask");
extern const option_def SHARED_OPTIONS[N_SHARED_OPTS];

// --help sections of the shared options, in the order tools print them.
constexpr const char * OPT_GROUP_CONTEXT = "context";
constexpr const char * OPT_GROUP_KV = "K/V cache";
constexpr const char * OPT_GROUP_SAMPLING = "sampling";
constexpr const char * OPT_GROUP_MODEL = "model loading";

// A tool's use of a shared option: the row (shared_opt), whether the tool
// takes a comma-separated list of values ("-ctk f16,q8_0"; each element is
// read as the row reads one value), and the tool's own help text where its
// meaning or default differs from gloas's (nullptr: the row's).
struct option_use {
    int id;
    bool list = false;
    const char * help = nullptr;
};

// --help lines of the shared rows in `uses` that belong to `group`, in
// `uses` order, formatted as options_usage formats them; a list row's value
// is "T[,T...]".
std::string options_usage(const option_use * uses, size_t n, const char * group);

// The entry of `uses` whose row has the spelling `flag`; nullptr if none. A
// tool reads such a flag with config_apply_flag, or config_apply_list when
// the entry is a list.
const option_use * option_use_find(const option_use * uses, size_t n, const std::string & flag);

// Reads the comma-separated value of the shared flag args[i] (args[i+1]):
// each element is applied, as config_apply_flag applies one value, to a copy
// of `base`; returns the copies in order. Throws cli_error naming the flag
// for a missing value or a bad element (an empty one included, where the
// row refuses an empty value).
std::vector<run_config> config_apply_list(const run_config & base, const std::vector<std::string> & args, size_t i);

// K/V page types the page store supports: the values --kv-type takes (f32,
// f16, q8_0, q4_0 and q4_kivi). Every reader of a K/V type (the flags, the YAML
// file, the C API) asks this.
bool kv_type_supported(type t);
// Those types in words: "f32, f16, q8_0, q4_0 or q4_kivi".
std::string kv_type_list();

// The names the user gave the three K/V settings kv_options_problem speaks of
// and how a name joins its value: the flags ("--kv-type q8_0"), the C API's
// fields ("kv_type q8_0"), the YAML keys ("cache_chunk_size: 16").
struct kv_option_names {
    const char * type = "--kv-type";
    const char * page = "--kv-page";
    const char * policy = "--kv-policy";
    const char * sep = " ";
};
constexpr kv_option_names KV_FLAG_NAMES{};
// Whether pages of type t, page_tokens tokens each, evicted by `policy` can
// work: empty when they can, else why not, naming the flags (--kv-type,
// --kv-page, --kv-policy). A page stores each channel's page_tokens values as
// one row, so a block type's blocks (32 values for q8_0 and q4_0) run along
// the tokens of a page: the page size must be a multiple of the block. The
// compressed policy re-quantizes evicted pages to q4_0, so it needs that too.
std::string kv_options_problem(type t, int32_t page_tokens, evict_policy policy);
// The same, naming the settings as `names` does.
std::string kv_options_problem(type t, int32_t page_tokens, evict_policy policy, const kv_option_names & names);

// Applies the shared flag at args[i] (with its value at args[i+1] if it
// takes one) to cfg and marks it in cfg.given, so that flags given after
// --config override the file. Returns the number of arguments used, 0 when
// args[i] is not a shared flag. Throws cli_error for a bad or missing value,
// and for a policy or strategy that cfg's file disables. --config FILE is the
// caller's: it loads the file first (config_load), whatever its position,
// and then applies the other flags in order.
size_t config_apply_flag(run_config & cfg, const std::vector<std::string> & args, size_t i);

// Checks what no single flag can: -ctk and -ctv must agree (K and V pages
// have one type). Throws cli_error.
void config_flags_check(const run_config & flags);

// Lays the settings whose flags were given (flags.given) over cp: context,
// prefill chunk (at most -b), threads, sliding, every K/V setting (sizes
// resolved with hp's page geometry), sparse attention. Then checks the
// result: the K/V type and page size (kv_options_problem) and room for a
// sliding window. Throws cli_error naming the flags.
void config_override(const run_config & flags, const hparams & hp, context_params & cp);

// The sampling settings of the flags, with --repeat-last-n -1 (the whole
// context) resolved to n_ctx.
sampler_params config_sampling(const run_config & flags, int32_t n_ctx);

} // namespace gloas

namespace gloas {

// Where -m NAME and -z NAME are looked for. A name with a '/' is a path and
// is used as given; so is a file of that name in the current folder. Else
// each folder, in order: ./models, the source tree's models/ (the tools live
// in <source>/build/bin), $GLOAS_MODELS, and ../shared/models beside the
// source tree (models/README.md); in each, NAME itself, the file the
// manifest (models/manifest.tsv) gives for NAME ("stories260K" ->
// stories260K.bin), then NAME.gguf and NAME.bin.
struct model_search {
    std::string path;                 // what was found; empty: nothing
    std::vector<std::string> tried;   // the folders looked in, in order
    std::string manifest_file;        // the manifest's file for NAME, if it lists it
};
model_search model_find(const std::string & name);
// The error for a name model_find did not find: the folders it looked in
// and how to get the file (models/fetch.sh NAME).
std::string model_not_found(const std::string & name, const model_search & s, const char * what = "model");

} // namespace gloas
