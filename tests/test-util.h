// Helpers shared by the tests: finding models and data, reading files,
// running the command-line tools, random inputs.
#pragma once

#include "decoder/llama-gguf.h"
#include "quant/types.h"

#include "tensor/backend.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

namespace gloas {
class context;
struct tensor;
}

namespace gloas::test {

// A backend buffer holding v (uploaded), and a buffer's first n floats on the
// host: how the backend tests move data.
template <class T>
buffer put(backend & be, const std::vector<T> & v) {
    buffer b = be.alloc(v.size() * sizeof(T));
    be.upload(b.data(), v.data(), v.size() * sizeof(T));
    return b;
}
std::vector<float> get(backend & be, const buffer & b, int64_t n);

inline bool contains(const std::string & s, const std::string & sub) { return s.find(sub) != std::string::npos; }
// One check per part: text contains it (a failure names the part).
void check_contains(const std::string & text, std::initializer_list<std::string> parts);
bool file_exists(const std::string & path);

// Token ids as text, each after a space (" 1 15043"): what a failed
// comparison of two id lists prints.
std::string ids_str(const std::vector<int32_t> & ids);

// s as the inside of a JSON string: '"' and '\\' escaped, control bytes as
// \u00XX, every other byte as it is.
std::string json_escape(const std::string & s);

// n gaussian floats of mean 0.
std::vector<float> randn(std::mt19937 & rng, int64_t n, float sigma = 1.0f);
// n_rows rows of n values of type t, quantized by the reference quantizer
// from gaussian floats (sigma 0.5), followed by `pad` zero bytes.
std::vector<char> random_rows(type t, int64_t n_rows, int64_t n, std::mt19937 & rng, size_t pad = 0);

// The message of the gloas::error that f throws, or "" when it returns.
std::string error_of(const std::function<void()> & f);

// Calls body(n) after ops::set_n_threads(n) for each n of counts; the
// thread count is restored afterwards, also when body throws.
void for_thread_counts(std::initializer_list<int> counts, const std::function<void(int)> & body);

// Elements of y (n_tok, n_out) = x · w^T that differ from matmul_ref's yr by
// more than 2e-5 * |w_r|_2 |x_t|_2; with fp16_offsets, by more than that plus
// |w_r|_1 |x_t|_inf 2^-11 1e-3 * 32 (the fp16 offsets of Q4_1 and Q5_1).
int matmul_mismatches(const tensor & w, const std::vector<float> & x, int64_t n_tok, const std::vector<float> & y,
                      const std::vector<float> & yr, bool fp16_offsets);

// The shape of the small random-weight models the tests write: 400 tokens,
// 128 positions, width 64, FFN 96, 4 heads on 2 K/V heads, Q8_0 weights.
llama_gguf_hparams small_model_hparams(const std::string & arch, const std::string & name, int64_t n_layer);

// llama2.c's run.c greedy loop on a fresh context: `steps` counts positions,
// BOS and prompt included; returns the pieces of every token after BOS,
// stopping at BOS — what its stdout holds, without the final newline. The
// prompt goes through eval_prompt, so stored pages are reused. `ids`, if
// given, receives the generated token ids.
std::string generate_like_llama2c(context & ctx, const std::string & prompt, int steps,
                                  std::vector<int32_t> * ids = nullptr);

// Dense attention of one query token over n_kv contiguous positions, all
// heads, in double: the oracle the paged kernels are tested against.
//   q   (n_head, head_dim)
//   k,v (n_kv, kv_stride) f32, head h_kv at offset h_kv*head_dim in each row
//   out (n_head, head_dim)
// Query head h reads KV head h / (n_head / n_head_kv); `scale` multiplies q·k
// before the softmax.
void attention_ref(float * out, const float * q, const float * k, const float * v, int64_t n_kv, int64_t n_head,
                   int64_t n_head_kv, int64_t head_dim, int64_t kv_stride, float scale);

// The token of the largest logit (the lowest id on ties).
int32_t top_token(const float * logits, int32_t n_vocab);

// How often two runs agree on the top token, position by position.
struct top1_agreement {
    int agree = 0, n = 0;
    void add(int32_t a, int32_t b) {
        agree += a == b;
        ++n;
    }
    // Prints "WHAT: top-1 agreement with REF R% over N positions" and checks
    // that the rate is at least min_rate.
    void check(const std::string & what, const std::string & ref, double min_rate) const;
};

// Files a test needs. Three kinds:
//  - test data kept in the repository, tests/data/NAME (goldens, tokenizer
//    corpora, reference hashes): data_file() gives its path; a missing one is
//    a test failure, since the checkout is broken;
//  - model files, from models/fetch.sh or a shared store: model_path() looks
//    in <source>/models, then $GLOAS_MODELS, then <source>/../shared/models;
//  - data files too large to keep (../shared/data, or $GLOAS_DATA).
// A model or data file that cannot be had ends the test case as skipped, never
// passed or failed: require_model / require_data print one line
//     SKIPPED: needs models/NAME (models/fetch.sh NAME, or GLOAS_MODELS)
// and end the case; the other cases of the executable still run, and it exits
// with 77 (ctest's SKIP_RETURN_CODE) when no case failed and one was skipped.
// "SKIPPED: needs " marks exactly these skips (.ci/run fails on it, since CI
// has ../shared); a skip for another reason (no GPU) goes through skip_case
// with its own words after "SKIPPED: ".
std::string data_file(const std::string & name);
std::string model_path(const std::string & name);
std::string require_model(const std::string & name);
std::string require_data(const std::string & name);
// The default model (stories260K) where gloas looks for it when no -m is
// given (<bin>/../../models, that is the source tree's models/ for a build in
// build/, then $GLOAS_MODELS): its path, or the case ends as skipped.
std::string require_default_model();

// The start of every skip line, and of those for a missing file.
inline constexpr const char k_skip_marker[] = "SKIPPED: ";
inline constexpr const char k_missing_marker[] = "SKIPPED: needs ";
// What a skip throws to end the case (not a std::exception, so that no test's
// catch clause takes it for the code's own error).
struct skipped_case {
    std::string message;  // the SKIPPED line
};
// Prints "SKIPPED: <reason>" and records it for the current case. note_skip
// lets the case go on (it ends as skipped unless something fails); skip_case
// ends it.
void note_skip(const std::string & reason);
[[noreturn]] void skip_case(const std::string & reason);
// The same for a missing file: "SKIPPED: needs FILE (HOW to get it)".
void note_missing(const std::string & file, const std::string & how);
[[noreturn]] void skip_missing(const std::string & file, const std::string & how);

// The state of the current test case, kept by test-main.cpp's listener.
struct case_state {
    std::string name;                   // the running test case
    std::vector<std::string> skips;     // its SKIPPED lines
    bool skip_thrown = false;           // skip_case ended it
    bool other_exception = false;       // it threw something else
    int real_failed_asserts = 0;        // failed checks, not counting skips
};
case_state & current_case();

std::string read_file(const std::string & path);
void write_file(const std::string & path, const void * data, size_t n);
inline void write_file(const std::string & path, const std::string & s) { write_file(path, s.data(), s.size()); }

// A fresh empty directory under the build's temp area, removed by the caller
// or left for inspection.
std::string temp_dir(const std::string & tag);

struct run_result {
    int status = -1;     // exit code (128+signal if killed)
    std::string out;     // stdout
    std::string err;     // stderr
};
// Runs a tool from the build's bin/ directory with arguments (no shell); a
// tool given as an absolute path runs that program instead.
run_result run_tool(const std::string & tool, const std::vector<std::string> & args,
                    const std::string & stdin_data = {});
// Runs gloas with args, requires exit status 0 and checks that it prints
// what `ref` printed (the run it is compared with); returns the run.
run_result run_gloas_like(const run_result & ref, const std::vector<std::string> & args);
// base followed by extra: one command line of a family sharing base arguments.
inline std::vector<std::string> with_args(std::vector<std::string> base, const std::vector<std::string> & extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
}

// llama.cpp's tokenizer corpus of the vocabulary VOCAB, named as in models/
// ("vocab/ggml-vocab-llama-spm.gguf") and kept in tests/data: VOCAB.inp holds
// cases each ending with "\n__ggml_vocab_test__\n"; VOCAB.out one line of ids
// per case (no BOS). Needs no model file.
struct vocab_case {
    std::string text;
    std::vector<int32_t> ids;
};
std::vector<vocab_case> read_vocab_cases(const std::string & vocab);

// Starts a tool (as run_tool names it) in the background with stdout and
// stderr sent to files; returns its pid. wait_tool() returns its exit code (128+signal if killed).
int spawn_tool(const std::string & tool, const std::vector<std::string> & args,
               const std::string & out_path, const std::string & err_path);
int wait_tool(int pid);

// execv(exe, argv) for a forked child (argv[0] == exe, null-terminated);
// _exit(127) where it fails. In a cross build whose tests run under an
// emulator (cmake/aarch64-linux-gnu.cmake), a program of the target
// architecture is started under it. run_tool and spawn_tool use it.
[[noreturn]] void exec_program(const std::string & exe, std::vector<char *> argv);

} // namespace gloas::test
