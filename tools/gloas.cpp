// gloas: generate text with a Llama-family model.
//
// stdout carries the prompt followed by the generated text and nothing else, so
// runs can be diffed; everything else (load and speed figures, errors) goes to
// stderr.
#include "decoder/autoconfig.h"
#include "decoder/config.h"
#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "decoder/sampler.h"
#include "decoder/strategy.h"
#include "decoder/tokenizer.h"
#include "kvcache/kv-folder.h"
#include "quant/isa.h"
#include "base/error.h"
#include "tensor/mmap.h"
#include "tensor/ops.h"
#include "tensor/profile.h"
#include "tools/common/chat-loop.h"
#include "tools/common/cli.h"
#include "tools/common/files.h"
#include "tools/common/run-setup.h"
#include "tools/common/weights.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

// gloas's own options; the shared ones (context, K/V cache, sampling, model
// loading) are SHARED_OPTIONS (decoder/options.h). --help is written from
// both tables.
enum gloas_opt : int {
    G_MODEL, G_TOKENIZER,
    G_PROMPT, G_FILE, G_ESCAPE, G_NO_ESCAPE, G_N_PREDICT, G_IGNORE_EOS, G_REVERSE_PROMPT, G_NO_DISPLAY_PROMPT,
    G_CHAT, G_SYSTEM, G_CHAT_TEMPLATE, G_VERBOSE_PROMPT,
    G_CONFIG, G_AUTO, G_EXPLAIN,
    G_TOKENIZE, G_PROFILE, G_METRICS, G_VERBOSE, G_QUIET, G_VERSION, G_HELP,
    N_GLOAS_OPTS
};

// The --help groups of gloas's own options.
constexpr const char *MODEL = "model", *GEN = "generation", *CHAT = "chat", *CONF = "configuration", *OTHER = "other";

// --help: its head, then its sections (own rows, then shared ones).
constexpr const char * HELP_HEAD =
    "usage: gloas [options]\n\n"
    "Generates text from a prompt with a Llama-family model (GGUF or llama2.c).\n"
    "stdout gets the prompt and the generated text; stderr gets timings.\n"
    "Where llama.cpp's llama-cli has an option of the same meaning, gloas takes its spelling too.\n";
constexpr cli::help_section HELP_SECTIONS[] = {
    {"model", MODEL, OPT_GROUP_MODEL}, {"generation", GEN, nullptr},
    {"context", nullptr, OPT_GROUP_CONTEXT}, {"sampling", nullptr, OPT_GROUP_SAMPLING},
    {"chat", CHAT, nullptr}, {"K/V cache", nullptr, OPT_GROUP_KV},
    {"configuration", CONF, nullptr}, {"other", OTHER, nullptr}
};

// clang-format off
const option_def GLOAS_OPTIONS[N_GLOAS_OPTS] = {
    cli::opt_text(G_MODEL, "-m|--model", "FILE", MODEL,
                  "GGUF file or llama2.c checkpoint: a path, or a name looked up in ./models, the source tree's "
                  "models/, $GLOAS_MODELS and ../shared/models, with .gguf or .bin added or as models/manifest.tsv "
                  "names it (default: stories260K)"),
    cli::opt_text(G_TOKENIZER, "-z|--tokenizer", "FILE", MODEL,
                  "tokenizer.bin for a llama2.c checkpoint, looked up as -m is (default: tok<vocab>.bin, then "
                  "tokenizer.bin beside the model); its pieces must match the model's vocabulary"),

    cli::opt_text(G_PROMPT, "-p|--prompt", "TEXT", GEN, "prompt (default: empty, generation starts from BOS)"),
    cli::opt_text(G_FILE, "-f|--file", "FILE", GEN, "read the prompt from FILE; '-' reads it from stdin"),
    cli::opt_switch(G_ESCAPE, "-e|--escape", GEN,
                    "process escapes in the prompt, -r and --system: \\n \\r \\t \\' \\\" \\\\ \\xHH (default: off)"),
    cli::opt_switch(G_NO_ESCAPE, "--no-escape", GEN, "take the prompt as written (the default)"),
    cli::opt_int(G_N_PREDICT, "-n|--n-predict", "N", -1, 1 << 30, GEN,
                 "tokens to generate; -1: until the context is full, or with --ctx-slide until end of sequence or "
                 "Ctrl-C (default: 256; stops earlier at the end of the context, unless --ctx-slide, or at an "
                 "end-of-sequence token)"),
    cli::opt_switch(G_IGNORE_EOS, "--ignore-eos", GEN, "keep generating past end-of-sequence tokens"),
    cli::opt_text(G_REVERSE_PROMPT, "-r|--reverse-prompt", "TEXT", GEN,
                  "stop when the generated text ends with TEXT (which is printed); may be given more than once"),
    cli::opt_switch(G_NO_DISPLAY_PROMPT, "--no-display-prompt", GEN,
                    "print only the generated text on stdout, not the prompt"),

    cli::opt_switch(G_CHAT, "--chat", CHAT,
                    "interactive chat: one user message per line of stdin (a trailing \\ continues the line), each "
                    "reply on stdout; turns keep the conversation's K/V, so each prefills only its own text; -n "
                    "bounds each reply; Ctrl-C stops a reply, Ctrl-C twice at the prompt or end of input quits"),
    cli::opt_text(G_SYSTEM, "--system|-sys|--system-prompt", "TEXT", CHAT, "the chat's system message"),
    cli::opt_text(G_CHAT_TEMPLATE, "--chat-template", "NAME", CHAT,
                  "the prompt format (default: recognized from the model's tokenizer.chat_template; chatml, with a "
                  "warning, when the model has none): chatml, llama2, llama2-sys, llama2-sys-bos, "
                  "llama2-sys-strip, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, llama3, zephyr, phi3, "
                  "gemma, deepseek, deepseek2, deepseek3"),
    cli::opt_switch(G_VERBOSE_PROMPT, "--verbose-prompt", CHAT, "print each turn's exact prompt text on stderr"),

    cli::opt_text(G_CONFIG, "--config", "FILE", CONF,
                  "settings in the YAML shape of the specification (examples/gloas.yaml); "
                  "flags given too override it"),
    cli::opt_switch(G_AUTO, "--auto", CONF,
                    "choose strategy, K/V type, page size, K/V RAM budget, threads and ubatch from the model, the "
                    "context and the machine (flags given too override each choice)"),
    cli::opt_switch(G_EXPLAIN, "--explain", CONF,
                    "with --auto: print the choices and the numbers behind them, then exit without generating"),

    cli::opt_switch(G_TOKENIZE, "--tokenize", OTHER,
                    "print the prompt's token ids (space-separated) and exit; works with vocabulary-only GGUF files"),
    cli::opt_switch(G_PROFILE, "--profile", OTHER,
                    "time every op of the forward pass: a table per op type and per layer on stderr at the end"),
    cli::opt_word(G_METRICS, "--metrics", "FMT", "json", OTHER, "also print the run's metrics as json on stderr"),
    cli::opt_switch(G_VERBOSE, "-v|--verbose", OTHER, "print model details"),
    cli::opt_switch(G_QUIET, "-q|--quiet|--log-disable", OTHER,
                    "print only warnings and errors on stderr (no load, speed or K/V figures)"),
    cli::opt_switch(G_VERSION, "--version", OTHER, "print the version and exit"),
    cli::opt_switch(G_HELP, "-h|--help", OTHER, "this text"),
};
// clang-format on


struct options {
    std::string model_path;
    std::string tokenizer_path;
    std::string prompt;
    int32_t n_predict = 256;     // -1: no limit
    bool ignore_eos = false;
    bool tokenize_only = false;
    bool verbose = false;
    bool quiet = false;          // -q
    bool profile = false;        // --profile
    bool display_prompt = true;  // --no-display-prompt
    std::vector<std::string> reverse_prompts;  // -r
    bool chat = false;                  // --chat
    chat_cli::chat_options chat_opts;   // --system, --chat-template, --verbose-prompt
    bool metrics_json = false;
    run_config flags;            // the shared options given (decoder/options.h)
    std::string default_kv_dir;  // the page folder when --kv-dir is not given
    std::string config_path;
    bool auto_config = false;    // --auto
    bool explain = false;        // --explain
};

using cli::usage_error;

// llama.cpp's escapes (string_process_escapes): \n \r \t \' \" \\ and \xHH;
// any other backslash stays as written.
std::string process_escapes(const std::string & s) {
    std::string r;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            r += s[i];
            continue;
        }
        const char c = s[++i];
        switch (c) {
            case 'n': r += '\n'; break;
            case 'r': r += '\r'; break;
            case 't': r += '\t'; break;
            case '\'': case '"': case '\\': r += c; break;
            case 'x':
                if (i + 2 < s.size() && std::isxdigit((unsigned char) s[i + 1]) && std::isxdigit((unsigned char) s[i + 2])) {
                    r += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
                    i += 2;
                    break;
                }
                [[fallthrough]];
            default: r += '\\'; r += c;
        }
    }
    return r;
}

options parse_args(int argc, char ** argv) {
    options o;
    std::string prompt_file;
    bool have_prompt = false, escape = false;
    const auto own = [&](const option_def & d, const std::string & a, const option_value & v) {
        switch (gloas_opt(d.id)) {
            case G_MODEL: o.model_path = v.s; break;
            case G_TOKENIZER: o.tokenizer_path = v.s; break;
            case G_PROMPT: o.prompt = v.s; have_prompt = true; break;
            case G_FILE: prompt_file = v.s; break;
            case G_ESCAPE: escape = true; break;
            case G_NO_ESCAPE: escape = false; break;
            case G_N_PREDICT: o.n_predict = int32_t(v.i); break;
            case G_IGNORE_EOS: o.ignore_eos = true; break;
            case G_REVERSE_PROMPT:
                if (v.s.empty()) usage_error(format("%s: the text must not be empty", a.c_str()));
                o.reverse_prompts.push_back(v.s);
                break;
            case G_NO_DISPLAY_PROMPT: o.display_prompt = false; break;
            case G_CHAT: o.chat = true; break;
            case G_SYSTEM: o.chat_opts.system = v.s; break;
            case G_CHAT_TEMPLATE: o.chat_opts.template_name = cli::chat_template_arg(a, v.s); break;
            case G_VERBOSE_PROMPT: o.chat_opts.verbose_prompt = true; break;
            case G_CONFIG: break;  // read above
            case G_AUTO: o.auto_config = true; break;
            case G_EXPLAIN: o.explain = true; break;
            case G_TOKENIZE: o.tokenize_only = true; break;
            case G_PROFILE: o.profile = true; break;
            case G_METRICS: o.metrics_json = true; break;
            case G_VERBOSE: o.verbose = true; break;
            case G_QUIET: o.quiet = true; break;
            case G_VERSION: std::printf("gloas %s\n", GLOAS_VERSION); std::exit(0);
            case G_HELP: cli::print_help(HELP_HEAD, GLOAS_OPTIONS, N_GLOAS_OPTS, HELP_SECTIONS);
            case N_GLOAS_OPTS: GLOAS_ASSERT(false);
        }
    };
    // --config is read first, wherever it is, so that the flags override it;
    // its policy and strategy switches then limit what the flags may pick.
    cli::parse_options(std::vector<std::string>(argv + 1, argv + argc), GLOAS_OPTIONS, N_GLOAS_OPTS, o.flags,
                       o.config_path, own);
    if (o.chat && (have_prompt || !prompt_file.empty()))
        usage_error("--chat reads the user's messages from stdin; give a system message with --system, not -p or -f");
    if (!o.chat && (!o.chat_opts.system.empty() || !o.chat_opts.template_name.empty() || o.chat_opts.verbose_prompt))
        usage_error("--system, --chat-template and --verbose-prompt go with --chat");
    if (o.chat && !o.reverse_prompts.empty())
        usage_error("-r goes without --chat (a chat reply ends at its format's end marker)");
    if (!o.chat && !o.display_prompt && o.tokenize_only)
        usage_error("--no-display-prompt goes with generation, not --tokenize");
    if (!prompt_file.empty()) {
        if (have_prompt) usage_error("give the prompt with -p or -f, not both");
        o.prompt = prompt_file == "-" ? cli::read_stdin("-f -") : read_whole_file(prompt_file);
    }
    if (escape) {
        o.prompt = process_escapes(o.prompt);
        o.chat_opts.system = process_escapes(o.chat_opts.system);
        for (std::string & r : o.reverse_prompts) r = process_escapes(r);
    }
    o.chat_opts.quiet = o.quiet;
    o.default_kv_dir = kv_default_dir();
    cli::resolve_model_paths(o.model_path, o.tokenizer_path);
    return o;
}

// An informational line on stderr, unless -q.
__attribute__((format(printf, 2, 3))) void info(bool quiet, const char * fmt, ...) {
    if (quiet) return;
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    double r = p * double(v.size() - 1);
    size_t i = size_t(r);
    double f = r - double(i);
    return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

// --tokenize: only the tokenizer is loaded, so vocabulary-only GGUFs work.
int tokenize_only(const options & o) {
    const tokenizer tok = cli::is_gguf_file(o.model_path) ? tokenizer::from_gguf(*gguf_file::open(o.model_path))
                                                           : model::load({o.model_path, o.tokenizer_path})->tok;
    std::vector<int32_t> ids = tok.encode(o.prompt, tok.add_bos());
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i) line += ' ';
        line += std::to_string(ids[i]);
    }
    std::printf("%s\n", line.c_str());
    return 0;
}

int run(const options & o) {
    const run_config & fl = o.flags;
    const bool quiet = o.quiet;
    if (fl.flag_given(OPT_THREADS) && fl.ctx.n_threads > 0) ops::set_n_threads(fl.ctx.n_threads);
    if (o.tokenize_only) return tokenize_only(o);

    const double t_load0 = cli::now_s();
    std::unique_ptr<model> m = model::load({o.model_path, o.tokenizer_path});
    const hparams & hp = m->hp;
    // Precedence: the memory strategy's defaults, then the configuration
    // file's own settings, then --auto's choices, then the flags given.
    context_params cp;
    cp.kv.dir = o.default_kv_dir;
    cli::context_setup setup = cli::setup_begin(fl, o.config_path, *m);
    const int32_t n_ctx_given = fl.flag_given(OPT_CTX_SIZE) ? fl.ctx.n_ctx : 0;
    std::unique_ptr<auto_config> ac;
    if (o.auto_config || o.explain) {
        auto_config_input in;
        in.n_ctx = n_ctx_given;
        in.ram_available = available_ram_bytes();
        ac = std::make_unique<auto_config>(choose_config(*m, in));
        if (!setup.strategy_given) setup.strategy = ac->strategy;
    }
    cli::setup_params(setup, *m, n_ctx_given > 0 ? n_ctx_given : hp.n_ctx_train, o.default_kv_dir, quiet, cp);
    const memory_strategy strategy = setup.strategy;
    if (ac) {
        // --auto's choices, under the flags given
        cp.n_ctx = ac->n_ctx;
        cp.n_ubatch = ac->n_ubatch;
        cp.n_threads = ac->n_threads;
        cp.kv.page_tokens = ac->page_tokens;
        cp.kv.ram_bytes = ac->kv_ram_bytes;
    }
    config_override(fl, hp, cp);
    if (cp.n_threads > 0) ops::set_n_threads(cp.n_threads);
    const bool copy_weights = cli::copy_weights(fl, *m);  // --auto's rule is the default
    if (o.explain) {
        std::fputs(ac->explanation.c_str(), stdout);
        std::printf("settings: --strategy %s --kv-type %s --sparse-ratio %g --kv-page %d --kv-ram %zu --kv-read %s -c %d -ub %d -t %d%s\n",
                    memory_strategy_name(strategy), type_name(cp.kv.kv_type), double(cp.sparse.ratio), cp.kv.page_tokens,
                    cp.kv.ram_bytes, cp.kv.read_copy ? "copy" : "map", cp.n_ctx > 0 ? cp.n_ctx : hp.n_ctx_train, cp.n_ubatch,
                    ops::n_threads(), copy_weights ? " --no-mmap" : "");
        return 0;
    }
    if (copy_weights || fl.mlock) cli::place_weights(*m, copy_weights, fl.mlock, "gloas");
    if (fl.flag_given(OPT_THREADS) && fl.ctx.n_threads > 0) cli::warn_threads(fl.ctx.n_threads);
    cli::warn_context(cp.n_ctx, hp.n_ctx_train, fl.flag_given(OPT_CTX_SIZE) ? "-c" : "the context");
    if (ac && !quiet)
        std::fprintf(stderr, "gloas: auto: %s, %s pages of %d tokens, K/V RAM budget %s, %d threads, weights %s "
                     "(--explain says why)\n",
                     memory_strategy_name(strategy), type_name(cp.kv.kv_type), cp.kv.page_tokens,
                     cp.kv.ram_bytes ? format("%.0f MiB", double(cp.kv.ram_bytes) / 1048576.0).c_str() : "unbounded",
                     ops::n_threads(), copy_weights ? "in memory" : "mapped");
    cp.kv.dir_required = fl.flag_given(OPT_KV_DIR);  // the default folder, if unusable, leaves the pages in memory
    cp.kv.on_notice = cli::warning;
    context ctx(*m, cp);
    kv_store & store = ctx.store();
    cli::warn_lines(store.take_notices());
    const double t_load = cli::now_s() - t_load0;
    if (!quiet)
        std::fprintf(stderr, "gloas: loaded %s (%s, %s weights, %.1f M params, %.1f MiB %s) in %.2f s; context %d, %d threads, "
                     "simd %s\n", m->path.c_str(), m->file_format.c_str(), type_name(m->weight_type), double(m->n_params) / 1e6,
                     double(m->weight_bytes) / (1024.0 * 1024.0), copy_weights ? "in memory" : "mapped", t_load, ctx.n_ctx(),
                     ops::n_threads(), isa::active_name());
    const sampler_params sparams = config_sampling(fl, ctx.n_ctx());
    if (o.verbose)
        std::fprintf(stderr, "gloas: %s: layers %d, dim %d, ffn %d, heads %d (kv %d), head_dim %d, rope %s dims %d base %g, "
                     "vocab %d, trained context %d\n", m->arch.c_str(), hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head,
                     hp.n_head_kv, hp.head_dim, ops::rope_style_name(hp.rope_type), hp.n_rot, double(hp.rope_freq_base),
                     hp.n_vocab, hp.n_ctx_train);
    if (o.profile) profile::enable(true);

    if (o.chat) {
        chat_cli::chat_options co = o.chat_opts;
        co.n_predict = o.n_predict < 0 ? INT32_MAX : o.n_predict;  // -1: until end of turn or a full context
        co.ignore_eos = o.ignore_eos;
        const int rc = chat_cli::chat_loop(*m, ctx, sparams, co);
        if (o.profile) profile::print(stderr);
        return rc;
    }

    std::vector<int32_t> prompt = m->tok.encode(o.prompt, true);
    if (prompt.empty()) prompt.push_back(m->tok.bos());
    if (int64_t(prompt.size()) > ctx.n_ctx() && !ctx.slides())
        throw error(format("the prompt is %zu tokens but the context holds %d (raise -c or add --ctx-slide)",
                           prompt.size(), ctx.n_ctx()));

    // The prompt is echoed as its tokens decode, as llama2.c prints it.
    for (size_t i = 0; o.display_prompt && i < prompt.size(); ++i) {
        std::string piece = m->tok.token_to_piece(i ? prompt[i - 1] : -1, prompt[i]);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
    }
    std::fflush(stdout);

    sampler smp(sparams, hp.n_vocab);
    for (int32_t t : prompt) smp.accept(t);

    const double t0 = cli::now_s();
    const float * logits = ctx.eval_prompt(prompt.data(), int32_t(prompt.size()));
    const double t_prefill = cli::now_s() - t0;

    std::vector<double> itl;
    const int64_t n_predict = o.n_predict < 0 ? INT64_MAX : o.n_predict;
    itl.reserve(size_t(std::min<int64_t>(n_predict, 1 << 16)));
    size_t rp_max = 0;  // the longest reverse prompt: how much of the text to keep
    for (const std::string & r : o.reverse_prompts) rp_max = std::max(rp_max, r.size());
    std::string tail;   // the generated text's last bytes, for -r
    double t_first = 0.0, t_last = 0.0;
    int32_t n_gen = 0;
    int32_t prev = prompt.back();
    const char * stop = "";
    std::string pending;  // bytes of an unfinished UTF-8 character
    while (n_gen < n_predict) {
        const int32_t tok = smp.sample(logits);
        const double t = cli::now_s();
        if (n_gen == 0) t_first = t - t0;
        else itl.push_back(t - t_last);
        t_last = t;
        ++n_gen;
        if (!o.ignore_eos && (tok == m->tok.eos() || tok == m->tok.bos())) {
            stop = " (end of sequence)";
            break;
        }
        smp.accept(tok);
        // A token may end inside a UTF-8 character (byte-level BPE, byte
        // fallback): print whole characters, keep the rest for the next token.
        const std::string piece = m->tok.token_to_piece(prev, tok);
        pending += piece;
        const size_t ready = utf8_complete_prefix(pending);
        std::fwrite(pending.data(), 1, ready, stdout);
        std::fflush(stdout);
        if (rp_max > 0) {
            tail += piece;
            if (tail.size() > 2 * rp_max) tail.erase(0, tail.size() - rp_max);
            bool hit = false;
            for (const std::string & r : o.reverse_prompts)
                hit = hit || (tail.size() >= r.size() && tail.compare(tail.size() - r.size(), r.size(), r) == 0);
            if (hit) {
                pending.erase(0, ready);
                stop = " (reverse prompt)";
                break;
            }
        }
        pending.erase(0, ready);
        prev = tok;
        if (n_gen == n_predict) break;
        if (ctx.n_past() >= ctx.n_ctx() && !ctx.slides()) {
            stop = " (context full; --ctx-slide keeps going)";
            break;
        }
        logits = ctx.eval(&tok, 1);
    }
    std::fwrite(pending.data(), 1, pending.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);

    store.flush();
    const double decode_s = t_last - t0 - t_first;
    const int32_t n_prefilled = int32_t(prompt.size()) - ctx.n_reused();
    info(quiet, "gloas: prompt %zu tokens (%d reused from the K/V store, %d prefilled), prefill %.1f tokens/s, time to first token %.1f ms\n",
                 prompt.size(), ctx.n_reused(), n_prefilled, double(n_prefilled) / t_prefill, t_first * 1e3);
    if (n_gen > 1)
        info(quiet, "gloas: generated %d tokens%s, decode %.1f tokens/s, inter-token latency p50 %.2f ms, p95 %.2f ms\n",
                     n_gen, stop, double(n_gen - 1) / decode_s, percentile(itl, 0.50) * 1e3, percentile(itl, 0.95) * 1e3);
    else
        info(quiet, "gloas: generated %d tokens%s\n", n_gen, stop);
    if (sparams.temp > 0) info(quiet, "gloas: seed %llu\n", (unsigned long long) smp.seed());
    if (ctx.kv().n_dropped() > 0)
        info(quiet, "gloas: context slid past %d positions: %d pages of %d tokens dropped after the sink page(s)\n",
                     ctx.n_ctx(), ctx.kv().n_dropped(), store.geometry().page_tokens);

    const kv_metrics & km = store.metrics();
    const double kv_per_token = double(store.page_bytes()) / double(store.geometry().page_tokens);
    if (cp.sparse.ratio < 1.0f)
        info(quiet, "gloas: sparse decode attention: ratio %.3g, %llu page reads\n", double(cp.sparse.ratio),
                     (unsigned long long) ctx.kv().page_reads());
    info(quiet, "gloas: kv %s pages of %d tokens in %s: %llu hit, %llu missed (hit rate %.0f%%), %llu written, "
                 "%llu evicted (%s), %llu compressed, %llu corrupt; %.0f bytes/token; store %.1f MiB, file %.1f MiB on disk\n",
                 type_name(store.kv_type()), store.geometry().page_tokens, store.persistent() ? store.path().c_str() : "memory",
                 (unsigned long long) km.pages_hit, (unsigned long long) km.pages_missed, 100.0 * km.hit_rate(),
                 (unsigned long long) km.pages_written, (unsigned long long) km.pages_evicted,
                 evict_policy_name(store.params().policy), (unsigned long long) km.pages_compressed,
                 (unsigned long long) km.pages_corrupt, kv_per_token, double(store.stored_bytes()) / 1048576.0,
                 double(store.file_bytes()) / 1048576.0);
    // Page-file pages mapped in this process (kv-store.h: what "resident" means).
    const size_t resident = store.resident_bytes();
    if (cp.kv.ram_bytes > 0)
        info(quiet, "gloas: kv RAM budget %.1f MiB: %.1f MiB of pages resident (and %.1f MiB of fixed buffers), "
                     "%.1f MiB mapped at most at a pass end, %llu trims\n", double(cp.kv.ram_bytes) / 1048576.0,
                     double(resident) / 1048576.0, double(store.fixed_ram_bytes()) / 1048576.0,
                     double(km.resident_peak) / 1048576.0, (unsigned long long) km.ram_trims);
    if (o.metrics_json) {
        std::fprintf(stderr,
                     "{\"prompt_tokens\": %zu, \"reused_tokens\": %d, \"generated_tokens\": %d, \"load_s\": %.4f, "
                     "\"prefill_tokens_per_s\": %.2f, \"ttft_ms\": %.3f, \"decode_tokens_per_s\": %.2f, "
                     "\"itl_p50_ms\": %.3f, \"itl_p95_ms\": %.3f, \"itl_p99_ms\": %.3f, "
                     "\"kv_type\": \"%s\", \"page_tokens\": %d, \"pages_hit\": %llu, \"pages_missed\": %llu, "
                     "\"hit_rate\": %.4f, \"tokens_reused\": %llu, \"pages_written\": %llu, \"pages_evicted\": %llu, "
                     "\"pages_compressed\": %llu, \"pages_corrupt\": %llu, \"prefetch_resident\": %llu, "
                     "\"kv_bytes_per_token\": %.1f, \"kv_ram_bytes\": %zu, \"kv_store_bytes\": %zu, \"kv_file_bytes\": %zu, "
                     "\"kv_ram_budget\": %zu, \"kv_resident_bytes\": %zu, \"kv_fixed_ram_bytes\": %zu, "
                     "\"kv_resident_peak_bytes\": %zu, \"kv_ram_trims\": %llu, \"simd\": \"%s\"}\n",
                     prompt.size(), ctx.n_reused(), n_gen, t_load, double(n_prefilled) / t_prefill, t_first * 1e3,
                     n_gen > 1 ? double(n_gen - 1) / decode_s : 0.0, percentile(itl, 0.50) * 1e3, percentile(itl, 0.95) * 1e3,
                     percentile(itl, 0.99) * 1e3, type_name(store.kv_type()), store.geometry().page_tokens,
                     (unsigned long long) km.pages_hit, (unsigned long long) km.pages_missed, km.hit_rate(),
                     (unsigned long long) km.tokens_reused, (unsigned long long) km.pages_written,
                     (unsigned long long) km.pages_evicted, (unsigned long long) km.pages_compressed,
                     (unsigned long long) km.pages_corrupt, (unsigned long long) km.prefetch_resident, kv_per_token,
                     ctx.kv().ram_bytes(), store.stored_bytes(), store.file_bytes(), cp.kv.ram_bytes, resident,
                     store.fixed_ram_bytes(), km.resident_peak, (unsigned long long) km.ram_trims, isa::active_name());
    }
    if (o.profile) profile::print(stderr);
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    cli::prog = "gloas";
    return cli::run_main([&] { return run(parse_args(argc, argv)); });
}
