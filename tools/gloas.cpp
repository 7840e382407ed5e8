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
#include "decoder/sampler.h"
#include "decoder/strategy.h"
#include "decoder/tokenizer.h"
#include "kvcache/kv-folder.h"
#include "quant/isa.h"
#include "tensor/error.h"
#include "tensor/mmap.h"
#include "tensor/ops.h"
#include "tensor/profile.h"
#include "tools/chat-loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

const char * USAGE = R"(usage: gloas [options]

Generates text from a prompt with a Llama-family model (GGUF or llama2.c).
stdout gets the prompt and the generated text; stderr gets timings.

model:
  -m, --model FILE        GGUF file or llama2.c checkpoint (default: stories260K,
                          looked up in ./models, <gloas>/models, $GLOAS_MODELS)
  -z, --tokenizer FILE    tokenizer.bin for a llama2.c checkpoint (default:
                          tok<vocab>.bin, then tokenizer.bin beside the model)

generation:
  -p, --prompt TEXT       prompt (default: empty, generation starts from BOS)
  -f, --file FILE         read the prompt from FILE
  -n, --n-predict N       tokens to generate (default: 256; stops earlier at the
                          end of the context, unless --ctx-slide, or at an
                          end-of-sequence token)
      --ignore-eos        keep generating past end-of-sequence tokens
  -c, --ctx-size N        context size in tokens (default: the model's)
      --ctx-slide         at the end of the context, keep going: keep the first
                          K/V page (attention sinks) and slide a window over the
                          latest positions (StreamingLLM); a long prompt slides
                          too (alias: --context-shift; default: off, stop there)
  -b, --ubatch N          PREFILL runs the prompt in chunks of N tokens, so
                          activation memory stays bounded however long it is
                          (default: 512); DECODE then runs one token at a time;
                          a prompt partly in the K/V store (HYBRID) prefills only
                          its uncached tail and decodes from the reused pages
  -t, --threads N         CPU threads (default: all)

sampling:
      --temp T            temperature; 0 is greedy (default: 0.8)
      --top-k K           keep the K most likely tokens; 0 disables (default: 40)
      --top-p P           nucleus sampling; 1.0 disables (default: 0.95)
      --min-p P           drop tokens below P x the top probability (default: 0)
      --repeat-penalty R  penalize the last --repeat-last-n tokens (default: 1.0 = off)
      --repeat-last-n N   (default: 64)
  -s, --seed N            random seed (default: from the clock; printed)

chat:
      --chat              interactive chat: one user message per line of stdin
                          (a trailing \ continues the line), each reply on
                          stdout; turns keep the conversation's K/V, so each
                          prefills only its own text; -n bounds each reply;
                          Ctrl-C stops a reply, Ctrl-C twice at the prompt or
                          end of input quits
      --system TEXT       the chat's system message
      --chat-template NAME  the prompt format (default: recognized from the
                          model's tokenizer.chat_template): chatml, llama2,
                          llama2-sys, llama2-sys-bos, llama2-sys-strip,
                          mistral-v1, mistral-v3, mistral-v3-tekken,
                          mistral-v7, llama3, zephyr, phi3, gemma, deepseek,
                          deepseek2, deepseek3
      --verbose-prompt    print each turn's exact prompt text on stderr

K/V cache:
      --strategy S        speed (f16 pages, dense), balanced (q8_0, dense),
                          aggressive (q4_0, sparse decode attention), or auto:
                          chosen from the model, context and free RAM
                          (default: speed); the flags below override it
      --sparse-ratio R    share of K/V pages a decoded token attends to, plus
                          the first and latest pages (default: 1 = dense)
      --kv-type T         page type: f32, f16, q8_0, q4_0
      --kv-dir DIR        folder of page files, reused across runs (default:
                          $GLOAS_KV_DIR, else ~/.cache/gloas/kv); 'none' keeps
                          pages in memory only
      --kv-page N         tokens per page (default: 32)
      --kv-capacity SIZE  bound on the K/V folder (the page files of every
                          model and K/V type): bytes with a k/M/G suffix,
                          pages with 'p', tokens with 't' (default: 4G)
      --kv-policy P       eviction: lru, lfu, fifo, adaptive, compressed
                          (default: lru)
      --kv-ram SIZE       bound on the K/V pages resident in RAM (page-file pages
                          mapped by this process; the fixed buffers of open
                          pages, scratch and summaries come on top), in the
                          units of --kv-capacity; least recently read pages
                          are unmapped after each pass and the page file holds
                          them (default: the strategy's, 8M for aggressive;
                          0 = unbounded)
      --kv-read MODE      how decode reads pages of a page file: map (through
                          the mapping) or copy (copies only the pieces it
                          selected, so they are never mapped: resident K/V
                          stays within --kv-ram; default: the strategy's,
                          copy for aggressive)
      --metrics FMT       also print the run's metrics as json on stderr

configuration:
      --config FILE       settings in the YAML shape of the specification
                          (examples/gloas.yaml); flags given too override it
      --auto              choose strategy, K/V type, page size, K/V RAM budget,
                          threads and ubatch from the model, the context and
                          the machine (flags given too override each choice)
      --explain           with --auto: print the choices and the numbers behind
                          them, then exit without generating

other:
      --tokenize          print the prompt's token ids (space-separated) and exit;
                          works with vocabulary-only GGUF files
      --profile           time every op of the forward pass: a table per op type
                          and per layer on stderr at the end
  -v, --verbose           print model details
  -h, --help              this text
)";

struct options {
    std::string model_path;
    std::string tokenizer_path;
    std::string prompt;
    int32_t n_predict = 256;
    int32_t n_ctx = 0;
    int32_t n_ubatch = 0;      // 0: the configuration's (512)
    int32_t n_threads = 0;
    bool ignore_eos = false;
    bool ctx_slide = false;
    bool tokenize_only = false;
    bool verbose = false;
    bool profile = false;        // --profile
    bool chat = false;                  // --chat
    chat_cli::chat_options chat_opts;   // --system, --chat-template, --verbose-prompt
    bool metrics_json = false;
    sampler_params sp;
    kv_store_params kv;
    kv_capacity capacity;     // --kv-capacity; resolved once the page size is known
    kv_capacity kv_ram;       // --kv-ram; likewise
    bool kv_ram_given = false;
    int kv_read = -1;         // --kv-read: -1 the strategy's, 0 map, 1 copy
    memory_strategy strategy = memory_strategy::SPEED;
    bool strategy_given = false;
    bool kv_type_given = false;
    bool kv_page_given = false;
    bool kv_policy_given = false;
    bool kv_dir_given = false;
    std::string config_path;
    float sparse_ratio = -1.0f;  // < 0: the strategy's
    bool auto_config = false;    // --auto
    bool explain = false;        // --explain
};

[[noreturn]] void usage_error(const std::string & msg) {
    std::fprintf(stderr, "gloas: %s\nTry 'gloas --help'.\n", msg.c_str());
    std::exit(2);
}

bool is_file(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string exe_dir() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return {};
    buf[n] = '\0';
    std::string p(buf);
    return p.substr(0, p.find_last_of('/'));
}

// The default model: stories260K in ./models, the source tree's models/ (the
// binary lives in build/bin), then $GLOAS_MODELS.
std::string find_default_model() {
    std::vector<std::string> dirs = {"models"};
    std::string ed = exe_dir();
    if (!ed.empty()) dirs.push_back(ed + "/../../models");
    if (const char * env = std::getenv("GLOAS_MODELS")) dirs.push_back(env);
    for (const auto & d : dirs)
        for (const char * f : {"stories260K.gguf", "stories260K.bin"})
            if (is_file(d + "/" + f)) return d + "/" + f;
    return {};
}

// $GLOAS_KV_DIR, else $XDG_CACHE_HOME/gloas/kv, else ~/.cache/gloas/kv.
std::string default_kv_dir() { return kv_default_dir(); }

int32_t parse_int(const char * flag, const char * v, int32_t lo, int32_t hi) {
    char * end = nullptr;
    errno = 0;
    long long x = std::strtoll(v, &end, 10);
    if (errno || !end || *end || end == v || x < lo || x > hi)
        usage_error(format("%s expects an integer in [%d, %d], got '%s'", flag, lo, hi, v));
    return int32_t(x);
}

float parse_float(const char * flag, const char * v, float lo, float hi) {
    char * end = nullptr;
    float x = std::strtof(v, &end);
    if (!end || *end || end == v || !(x >= lo && x <= hi))
        usage_error(format("%s expects a number in [%g, %g], got '%s'", flag, lo, hi, v));
    return x;
}

options parse_args(int argc, char ** argv) {
    options o;
    o.kv.kv_type = type::F16;
    std::string prompt_file;
    bool have_prompt = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char * {
            if (i + 1 >= argc) usage_error(format("%s needs a value", a.c_str()));
            return argv[++i];
        };
        if (a == "-h" || a == "--help") { std::fputs(USAGE, stdout); std::exit(0); }
        else if (a == "-m" || a == "--model") o.model_path = value();
        else if (a == "-z" || a == "--tokenizer") o.tokenizer_path = value();
        else if (a == "-p" || a == "--prompt") { o.prompt = value(); have_prompt = true; }
        else if (a == "-f" || a == "--file") prompt_file = value();
        else if (a == "-n" || a == "--n-predict") o.n_predict = parse_int("-n", value(), 0, 1 << 30);
        else if (a == "-c" || a == "--ctx-size") o.n_ctx = parse_int("-c", value(), 1, 1 << 24);
        else if (a == "-b" || a == "--ubatch") o.n_ubatch = parse_int("-b", value(), 1, 1 << 16);
        else if (a == "-t" || a == "--threads") o.n_threads = parse_int("-t", value(), 1, 1024);
        else if (a == "--temp") o.sp.temp = parse_float("--temp", value(), 0.0f, 100.0f);
        else if (a == "--top-k") o.sp.top_k = parse_int("--top-k", value(), 0, 1 << 30);
        else if (a == "--top-p") o.sp.top_p = parse_float("--top-p", value(), 0.0f, 1.0f);
        else if (a == "--min-p") o.sp.min_p = parse_float("--min-p", value(), 0.0f, 1.0f);
        else if (a == "--repeat-penalty") o.sp.repeat_penalty = parse_float("--repeat-penalty", value(), 0.0f, 100.0f);
        else if (a == "--repeat-last-n") o.sp.repeat_last_n = parse_int("--repeat-last-n", value(), 0, 1 << 20);
        else if (a == "-s" || a == "--seed") {
            const char * v = value();
            char * end = nullptr;
            errno = 0;
            unsigned long long s = std::strtoull(v, &end, 10);
            if (errno || !end || *end || end == v || v[0] == '-') usage_error(format("--seed expects a non-negative integer, got '%s'", v));
            o.sp.seed = s;
        }
        else if (a == "--kv-type") {
            const char * v = value();
            if (!type_from_name(v, &o.kv.kv_type) || (o.kv.kv_type != type::F32 && o.kv.kv_type != type::F16 &&
                                                      o.kv.kv_type != type::Q8_0 && o.kv.kv_type != type::Q4_0))
                usage_error(format("--kv-type must be f32, f16, q8_0 or q4_0, got '%s'", v));
            o.kv_type_given = true;
        }
        else if (a == "--strategy") {
            const char * v = value();
            if (!memory_strategy_from_name(v, &o.strategy))
                usage_error(format("--strategy must be speed, balanced, aggressive or auto, got '%s'", v));
            o.strategy_given = true;
        }
        else if (a == "--sparse-ratio") o.sparse_ratio = parse_float("--sparse-ratio", value(), 0.001f, 1.0f);
        else if (a == "--kv-dir") {
            std::string v = value();
            o.kv.dir = v == "none" ? std::string() : v;
            o.kv_dir_given = true;
        }
        else if (a == "--kv-page") {
            o.kv.page_tokens = parse_int("--kv-page", value(), 1, 4096);
            o.kv_page_given = true;
        }
        else if (a == "--config") o.config_path = value();
        else if (a == "--auto") o.auto_config = true;
        else if (a == "--explain") o.explain = true;
        else if (a == "--kv-ram") {
            const char * v = value();
            try {
                o.kv_ram = std::strcmp(v, "0") == 0 ? kv_capacity{kv_capacity::unit::BYTES, 0} : parse_kv_capacity(a, v);
            } catch (const error & e) {
                usage_error(e.what());
            }
            o.kv_ram_given = true;
        }
        else if (a == "--kv-read") {
            const std::string v = value();
            if (v != "map" && v != "copy") usage_error("--kv-read takes map or copy, got '" + v + "'");
            o.kv_read = v == "copy";
        }
        else if (a == "--kv-capacity") {
            const char * v = value();
            try {
                o.capacity = parse_kv_capacity(a, v);
            } catch (const error & e) {
                usage_error(e.what());
            }
        }
        else if (a == "--kv-policy") {
            const char * v = value();
            if (!evict_policy_from_name(v, &o.kv.policy))
                usage_error(format("--kv-policy must be lru, lfu, fifo, adaptive or compressed, got '%s'", v));
            o.kv_policy_given = true;
        }
        else if (a == "--metrics") {
            std::string v = value();
            if (v != "json") usage_error(format("--metrics takes 'json', got '%s'", v.c_str()));
            o.metrics_json = true;
        }
        else if (a == "--ignore-eos") o.ignore_eos = true;
        else if (a == "--ctx-slide" || a == "--context-shift") o.ctx_slide = true;
        else if (a == "--tokenize") o.tokenize_only = true;
        else if (a == "--chat") o.chat = true;
        else if (a == "--system") o.chat_opts.system = value();
        else if (a == "--chat-template") {
            const char * v = value();
            chat_template t;
            if (!chat_template_from_name(v, &t))
                usage_error(format("--chat-template: unknown template '%s'; known: %s", v, chat_template_names().c_str()));
            o.chat_opts.template_name = v;
        }
        else if (a == "--verbose-prompt") o.chat_opts.verbose_prompt = true;
        else if (a == "-v" || a == "--verbose") o.verbose = true;
        else if (a == "--profile") o.profile = true;
        else usage_error(format("unknown option '%s'", a.c_str()));
    }
    if (o.chat && (have_prompt || !prompt_file.empty()))
        usage_error("--chat reads the user's messages from stdin; give a system message with --system, not -p or -f");
    if (!o.chat && (!o.chat_opts.system.empty() || !o.chat_opts.template_name.empty() || o.chat_opts.verbose_prompt))
        usage_error("--system, --chat-template and --verbose-prompt go with --chat");
    if (!prompt_file.empty()) {
        if (have_prompt) usage_error("give the prompt with -p or -f, not both");
        o.prompt = read_whole_file(prompt_file);
    }
    if (!o.kv_dir_given) o.kv.dir = default_kv_dir();
    if (o.model_path.empty()) {
        o.model_path = find_default_model();
        if (o.model_path.empty())
            throw error("no model given (-m) and the default model stories260K was not found in ./models, "
                        "<gloas>/models or $GLOAS_MODELS; run models/fetch.sh --default");
    }
    return o;
}

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
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
    tokenizer tok;
    FILE * f = std::fopen(o.model_path.c_str(), "rb");
    if (!f) throw error(format("%s: cannot open: %s", o.model_path.c_str(), std::strerror(errno)));
    char magic[4] = {};
    size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (n == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
        tok = tokenizer::from_gguf(*gguf_file::open(o.model_path));
    } else {
        tok = model::load({o.model_path, o.tokenizer_path})->tok;
    }
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
    if (o.n_threads > 0) ops::set_n_threads(o.n_threads);
    if (o.tokenize_only) return tokenize_only(o);

    const double t_load0 = now_s();
    std::unique_ptr<model> m = model::load({o.model_path, o.tokenizer_path});
    const hparams & hp = m->hp;
    // Precedence: the memory strategy's defaults, then the configuration
    // file's own settings, then the flags given.
    context_params cp;
    cp.kv = o.kv;
    memory_strategy strategy = o.strategy;
    std::unique_ptr<run_config> cfg;
    if (!o.config_path.empty()) {
        cfg = std::make_unique<run_config>(config_load(o.config_path));
        for (const auto & w : cfg->warnings) std::fprintf(stderr, "gloas: warning: %s\n", w.c_str());
        config_check_model(*cfg, hp, m->path);
        if (!o.strategy_given && !memory_strategy_from_name(cfg->strategy.c_str(), &strategy)) strategy = memory_strategy::SPEED;
    }
    std::unique_ptr<auto_config> ac;
    if (o.auto_config || o.explain) {
        auto_config_input in;
        in.n_ctx = o.n_ctx;
        in.ram_available = available_ram_bytes();
        ac = std::make_unique<auto_config>(choose_config(*m, in));
        if (!o.strategy_given) strategy = ac->strategy;
    }
    if (strategy == memory_strategy::AUTO) {
        std::string why;
        strategy = choose_strategy(*m, o.n_ctx > 0 ? o.n_ctx : hp.n_ctx_train, available_ram_bytes(), &why);
        std::fprintf(stderr, "gloas: strategy auto: %s\n", why.c_str());
    }
    apply_strategy(strategy, cp);
    if (cfg) {
        const context_params fc = config_context_params(*cfg, hp, o.kv.dir);
        const sparse_params sp = cp.sparse;
        const size_t ram = cp.kv.ram_bytes;  // the strategy's; the file has no such keys
        const bool copy = cp.kv.read_copy;
        cp = fc;
        cp.sparse = sp;
        cp.kv.ram_bytes = ram;
        cp.kv.read_copy = copy;
        if (cfg->use_sparse_attention) cp.sparse.ratio = float(cfg->sparse_ratio);
        if (o.kv_dir_given) cp.kv.dir = o.kv.dir;
    }
    if (ac) {
        // --auto's choices, under the flags given
        cp.n_ctx = ac->n_ctx;
        cp.n_ubatch = ac->n_ubatch;
        cp.n_threads = ac->n_threads;
        cp.kv.page_tokens = ac->page_tokens;
        cp.kv.ram_bytes = ac->kv_ram_bytes;
    }
    if (o.n_ctx > 0) cp.n_ctx = o.n_ctx;
    cp.slide.on = o.ctx_slide;
    if (o.n_ubatch > 0) cp.n_ubatch = o.n_ubatch;
    if (o.n_threads > 0) cp.n_threads = o.n_threads;
    if (o.kv_type_given) cp.kv.kv_type = o.kv.kv_type;
    if (o.kv_page_given) cp.kv.page_tokens = o.kv.page_tokens;
    if (o.kv_policy_given) cp.kv.policy = o.kv.policy;
    if (o.sparse_ratio > 0) cp.sparse.ratio = o.sparse_ratio;
    if (o.kv_read >= 0) cp.kv.read_copy = o.kv_read == 1;
    {
        const page_geometry pg{cp.kv.page_tokens, hp.n_layer, hp.n_head_kv, hp.head_dim};
        cp.kv.capacity_bytes = kv_capacity_bytes(o.capacity, pg.page_bytes(cp.kv.kv_type), cp.kv.page_tokens, cp.kv.capacity_bytes);
        if (o.kv_ram_given) cp.kv.ram_bytes = kv_capacity_bytes(o.kv_ram, pg.page_bytes(cp.kv.kv_type), cp.kv.page_tokens, 0);
    }
    if (cp.n_threads > 0) ops::set_n_threads(cp.n_threads);
    if (o.explain) {
        std::fputs(ac->explanation.c_str(), stdout);
        std::printf("settings: --strategy %s --kv-type %s --sparse-ratio %g --kv-page %d --kv-ram %zu --kv-read %s -c %d -b %d -t %d\n",
                    memory_strategy_name(strategy), type_name(cp.kv.kv_type), double(cp.sparse.ratio), cp.kv.page_tokens,
                    cp.kv.ram_bytes, cp.kv.read_copy ? "copy" : "map", cp.n_ctx > 0 ? cp.n_ctx : hp.n_ctx_train, cp.n_ubatch, ops::n_threads());
        return 0;
    }
    if (ac)
        std::fprintf(stderr, "gloas: auto: %s, %s pages of %d tokens, K/V RAM budget %s, %d threads (--explain says why)\n",
                     memory_strategy_name(strategy), type_name(cp.kv.kv_type), cp.kv.page_tokens,
                     cp.kv.ram_bytes ? format("%.0f MiB", double(cp.kv.ram_bytes) / 1048576.0).c_str() : "unbounded",
                     ops::n_threads());
    cp.kv.dir_required = o.kv_dir_given;  // the default folder, if unusable, leaves the pages in memory
    cp.kv.on_notice = [](const std::string & n) { std::fprintf(stderr, "gloas: warning: %s\n", n.c_str()); };
    context ctx(*m, cp);
    kv_store & store = ctx.store();
    for (std::string n = store.take_notices(); !n.empty();) {
        size_t e = n.find('\n');
        std::fprintf(stderr, "gloas: warning: %s\n", n.substr(0, e).c_str());
        n = e == std::string::npos ? std::string() : n.substr(e + 1);
    }
    const double t_load = now_s() - t_load0;
    std::fprintf(stderr, "gloas: loaded %s (%s, %s weights, %.1f M params, %.1f MiB) in %.2f s; context %d, %d threads, simd %s\n",
                 m->path.c_str(), m->file_format.c_str(), type_name(m->weight_type), double(m->n_params) / 1e6,
                 double(m->weight_bytes) / (1024.0 * 1024.0), t_load, ctx.n_ctx(), ops::n_threads(), isa::active_name());
    if (o.verbose)
        std::fprintf(stderr, "gloas: %s: layers %d, dim %d, ffn %d, heads %d (kv %d), head_dim %d, rope %s dims %d base %g, "
                     "vocab %d, trained context %d\n", m->arch.c_str(), hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head,
                     hp.n_head_kv, hp.head_dim, ops::rope_style_name(hp.rope_type), hp.n_rot, double(hp.rope_freq_base),
                     hp.n_vocab, hp.n_ctx_train);
    if (o.profile) profile::enable(true);

    if (o.chat) {
        chat_cli::chat_options co = o.chat_opts;
        co.n_predict = o.n_predict;
        co.ignore_eos = o.ignore_eos;
        const int rc = chat_cli::chat_loop(*m, ctx, o.sp, co);
        if (o.profile) profile::print(stderr);
        return rc;
    }

    std::vector<int32_t> prompt = m->tok.encode(o.prompt, true);
    if (prompt.empty()) prompt.push_back(m->tok.bos());
    if (int64_t(prompt.size()) > ctx.n_ctx() && !ctx.slides())
        throw error(format("the prompt is %zu tokens but the context holds %d (raise -c or add --ctx-slide)",
                           prompt.size(), ctx.n_ctx()));

    // The prompt is echoed as its tokens decode, as llama2.c prints it.
    for (size_t i = 0; i < prompt.size(); ++i) {
        std::string piece = m->tok.token_to_piece(i ? prompt[i - 1] : -1, prompt[i]);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
    }
    std::fflush(stdout);

    sampler smp(o.sp, hp.n_vocab);
    for (int32_t t : prompt) smp.accept(t);

    const double t0 = now_s();
    const float * logits = ctx.eval_prompt(prompt.data(), int32_t(prompt.size()));
    const double t_prefill = now_s() - t0;

    std::vector<double> itl;
    itl.reserve(size_t(std::max(0, o.n_predict)));
    double t_first = 0.0, t_last = 0.0;
    int32_t n_gen = 0;
    int32_t prev = prompt.back();
    const char * stop = "";
    std::string pending;  // bytes of an unfinished UTF-8 character
    while (n_gen < o.n_predict) {
        const int32_t tok = smp.sample(logits);
        const double t = now_s();
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
        pending += m->tok.token_to_piece(prev, tok);
        const size_t ready = utf8_complete_prefix(pending);
        std::fwrite(pending.data(), 1, ready, stdout);
        std::fflush(stdout);
        pending.erase(0, ready);
        prev = tok;
        if (n_gen == o.n_predict) break;
        if (ctx.n_past() >= ctx.n_ctx() && !ctx.slides()) {
            stop = " (context full; --ctx-slide keeps going)";
            break;
        }
        logits = ctx.eval(&tok, 1);
    }
    std::fwrite(pending.data(), 1, pending.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);

    const double decode_s = t_last - t0 - t_first;
    const int32_t n_prefilled = int32_t(prompt.size()) - ctx.n_reused();
    std::fprintf(stderr, "gloas: prompt %zu tokens (%d reused from the K/V store, %d prefilled), prefill %.1f tokens/s, time to first token %.1f ms\n",
                 prompt.size(), ctx.n_reused(), n_prefilled, double(n_prefilled) / t_prefill, t_first * 1e3);
    if (n_gen > 1)
        std::fprintf(stderr, "gloas: generated %d tokens%s, decode %.1f tokens/s, inter-token latency p50 %.2f ms, p95 %.2f ms\n",
                     n_gen, stop, double(n_gen - 1) / decode_s, percentile(itl, 0.50) * 1e3, percentile(itl, 0.95) * 1e3);
    else
        std::fprintf(stderr, "gloas: generated %d tokens%s\n", n_gen, stop);
    if (o.sp.temp > 0) std::fprintf(stderr, "gloas: seed %llu\n", (unsigned long long) smp.seed());
    if (ctx.kv().n_dropped() > 0)
        std::fprintf(stderr, "gloas: context slid past %d positions: %d pages of %d tokens dropped after the sink page(s)\n",
                     ctx.n_ctx(), ctx.kv().n_dropped(), store.geometry().page_tokens);

    store.flush();
    const kv_metrics & km = store.metrics();
    const double kv_per_token = double(store.page_bytes()) / double(store.geometry().page_tokens);
    if (cp.sparse.ratio < 1.0f)
        std::fprintf(stderr, "gloas: sparse decode attention: ratio %.3g, %llu page reads\n", double(cp.sparse.ratio),
                     (unsigned long long) ctx.kv().page_reads());
    std::fprintf(stderr, "gloas: kv %s pages of %d tokens in %s: %llu hit, %llu missed (hit rate %.0f%%), %llu written, "
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
        std::fprintf(stderr, "gloas: kv RAM budget %.1f MiB: %.1f MiB of pages resident (and %.1f MiB of fixed buffers), "
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
    try {
        return run(parse_args(argc, argv));
    } catch (const error & e) {
        std::fflush(stdout);
        std::fprintf(stderr, "gloas: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "gloas: error: out of memory\n");
        return 1;
    }
}
