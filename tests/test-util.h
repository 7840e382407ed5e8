// Helpers shared by the tests: finding models and data, reading files,
// running the command-line tools.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gloas {
class context;
}

namespace gloas::test {

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

// Path of a model file (or folder) by name, looked up in <source>/models, then
// $GLOAS_MODELS, then <source>/../shared/models. Empty if not found.
std::string model_path(const std::string & name);
// Like model_path, but a test failure (with what to do) if not found.
std::string require_model(const std::string & name);
// Path of a file under ../shared/data (or $GLOAS_DATA); failure if not found.
std::string require_data(const std::string & name);

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
// Runs a tool from the build's bin/ directory with arguments (no shell).
run_result run_tool(const std::string & tool, const std::vector<std::string> & args,
                    const std::string & stdin_data = {});
// base followed by extra: one command line of a family sharing base arguments.
inline std::vector<std::string> with_args(std::vector<std::string> base, const std::vector<std::string> & extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
}

// llama.cpp's tokenizer corpora: BASE.inp holds cases each ending with
// "\n__ggml_vocab_test__\n"; BASE.out one line of ids per case (no BOS).
struct vocab_case {
    std::string text;
    std::vector<int32_t> ids;
};
std::vector<vocab_case> read_vocab_cases(const std::string & base);

// Starts a tool in the background with stdout and stderr sent to files;
// returns its pid. wait_tool() returns its exit code (128+signal if killed).
int spawn_tool(const std::string & tool, const std::vector<std::string> & args,
               const std::string & out_path, const std::string & err_path);
int wait_tool(int pid);

} // namespace gloas::test
