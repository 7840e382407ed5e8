// gloas-server: an OpenAI-compatible HTTP server over one model.
//
// Routes (tools/server/api.h parses and writes the bodies):
//   POST /v1/chat/completions, /v1/completions   generation, streamed by SSE or not
//   GET  /v1/models, /v1/models/ID               the one model served
//   GET  /health                                 status and sequences in use (no key needed)
//   GET  /metrics                                Prometheus text (tools/server/metrics.h)
//   POST /tokenize, /detokenize                  llama-server's shapes
// Generation runs on one scheduler thread that batches every request's next
// token and prefill chunks of new ones into one forward pass
// (tools/server/engine.h); the HTTP threads parse, submit, and wait or stream.
// A client that disconnects is noticed through its socket (closed by the
// peer) and its generation stops before the next step.
//
// stderr carries the startup lines and one access-log line per request.
#include "decoder/chat.h"
#include "decoder/config.h"
#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "decoder/strategy.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tools/server/api.h"
#include "tools/server/engine.h"
#include "tools/server/http.h"
#include "tools/server/metrics.h"

#include <httplib.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <thread>

using namespace gloas;
using namespace gloas::server;

namespace {

enum server_opt : int {
    S_MODEL, S_TOKENIZER, S_ALIAS,
    S_HOST, S_PORT, S_API_KEY, S_CORS, S_MAX_BODY, S_THREADS_HTTP,
    S_PARALLEL, S_QUEUE, S_N_PREDICT, S_CHAT_TEMPLATE,
    S_CONFIG, S_LOG_FORMAT, S_QUIET, S_HELP,
    N_SERVER_OPTS
};

constexpr const char * MODEL = "model";
constexpr const char * HTTP = "http";
constexpr const char * SCHED = "scheduling";
constexpr const char * OTHER = "other";
using K = opt_kind;

// clang-format off
const option_def SERVER_OPTIONS[N_SERVER_OPTS] = {
    {S_MODEL, "-m|--model", "FILE", K::TEXT, 0, 0, false, nullptr, MODEL,
     "GGUF file or llama2.c checkpoint, a path or a name looked up as gloas -m does (default: stories260K)"},
    {S_TOKENIZER, "-z|--tokenizer", "FILE", K::TEXT, 0, 0, false, nullptr, MODEL,
     "tokenizer.bin for a llama2.c checkpoint (default: found beside the model)"},
    {S_ALIAS, "-a|--alias", "NAME", K::TEXT, 0, 0, false, nullptr, MODEL,
     "the model's id in /v1/models and the requests' \"model\" field (default: the file name without its "
     "extension)"},

    {S_HOST, "--host", "ADDR", K::TEXT, 0, 0, false, nullptr, HTTP,
     "address to listen on (default: 127.0.0.1; 0.0.0.0 opens the server to the network)"},
    {S_PORT, "--port", "N", K::INT, 0, 65535, false, nullptr, HTTP,
     "port to listen on; 0 picks a free one, printed on stderr (default: 8080)"},
    {S_API_KEY, "--api-key", "KEY", K::TEXT, 0, 0, false, nullptr, HTTP,
     "require 'Authorization: Bearer KEY' on every route but /health (401 otherwise)"},
    {S_CORS, "--cors", nullptr, K::SWITCH, 0, 0, false, nullptr, HTTP,
     "answer cross-origin requests from any origin (Access-Control-Allow-Origin: *; default: off)"},
    {S_MAX_BODY, "--max-body", "BYTES", K::TEXT, 0, 0, false, nullptr, HTTP,
     "largest request body, with k, M or G (default: 8M); larger ones get 413"},
    {S_THREADS_HTTP, "--threads-http", "N", K::INT, 1, 1024, false, nullptr, HTTP,
     "HTTP connection threads (default: --parallel + --queue + 8); each open connection holds one"},

    {S_PARALLEL, "-np|--parallel", "N", K::INT, 1, 256, false, nullptr, SCHED,
     "sequences generated together in one batch, each with --ctx-size positions (default: 4)"},
    {S_QUEUE, "--queue", "N", K::INT, 0, 1 << 20, false, nullptr, SCHED,
     "requests that may wait for a free sequence; past that, 503 with Retry-After (default: 64)"},
    {S_N_PREDICT, "-n|--n-predict", "N", K::INT, -1, 1 << 30, false, nullptr, SCHED,
     "max_tokens of requests that give none; -1: until the context is full (default: -1)"},
    {S_CHAT_TEMPLATE, "--chat-template", "NAME", K::TEXT, 0, 0, false, nullptr, SCHED,
     "the chat prompt format (default: recognized from the model's tokenizer.chat_template; chatml when it has "
     "none): chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, mistral-v3, "
     "mistral-v3-tekken, mistral-v7, llama3, zephyr, phi3, gemma, deepseek, deepseek2, deepseek3"},

    {S_CONFIG, "--config", "FILE", K::TEXT, 0, 0, false, nullptr, OTHER,
     "settings in the YAML shape of the specification (examples/gloas.yaml); flags given too override it"},
    {S_LOG_FORMAT, "--log-format", "FMT", K::WORD, 0, 0, false, "text|json", OTHER,
     "access-log lines on stderr as text or one JSON object each (default: text)"},
    {S_QUIET, "-q|--quiet", nullptr, K::SWITCH, 0, 0, false, nullptr, OTHER,
     "no startup figures; access-log lines and errors only"},
    {S_HELP, "-h|--help", nullptr, K::SWITCH, 0, 0, false, nullptr, OTHER,
     "this text"},
};
// clang-format on

std::string usage() {
    std::string u = "usage: gloas-server [options]\n\n"
                    "Serves a Llama-family model over the OpenAI HTTP API (chat and completions, streamed or not).\n"
                    "Requests share one context: --parallel sequences generate together, prompts with a common\n"
                    "prefix share K/V pages (also across restarts, with the page folder --kv-dir).\n";
    auto section = [&](const char * title, const char * own, const char * shared) {
        u += std::string("\n") + title + ":\n";
        if (own) u += options_usage(SERVER_OPTIONS, N_SERVER_OPTS, own);
        if (shared) u += options_usage(SHARED_OPTIONS, N_SHARED_OPTS, shared);
    };
    section("model", MODEL, OPT_GROUP_MODEL);
    section("HTTP", HTTP, nullptr);
    section("scheduling", SCHED, nullptr);
    section("context", nullptr, OPT_GROUP_CONTEXT);
    section("sampling (defaults of requests that give none)", nullptr, OPT_GROUP_SAMPLING);
    section("K/V cache", nullptr, OPT_GROUP_KV);
    section("other", OTHER, nullptr);
    return u;
}

struct options {
    std::string model_path, tokenizer_path, alias;
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string api_key;
    bool cors = false;
    size_t max_body = size_t(8) << 20;
    int threads_http = 0;
    int32_t parallel = 4;
    int32_t queue = 64;
    int32_t n_predict = -1;
    std::string chat_template;
    std::string config_path;
    bool log_json = false;
    bool quiet = false;
    run_config flags;
};

[[noreturn]] void usage_error(const std::string & msg) {
    std::fprintf(stderr, "gloas-server: %s\nTry 'gloas-server --help'.\n", msg.c_str());
    std::exit(2);
}

size_t parse_bytes(const std::string & flag, const std::string & s) {
    char * end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    double mul = 1;
    if (end && *end) {
        const std::string suf = end;
        if (suf == "k" || suf == "K") mul = 1024.0;
        else if (suf == "M") mul = 1024.0 * 1024.0;
        else if (suf == "G") mul = 1024.0 * 1024.0 * 1024.0;
        else mul = -1;
    }
    if (errno || end == s.c_str() || mul < 0 || !(v >= 1) || v * mul > 1e15)
        usage_error(format("%s: '%s' is not a size in bytes (a positive number with k, M or G)", flag.c_str(), s.c_str()));
    return size_t(v * mul);
}

std::string default_kv_dir() {
    if (const char * d = std::getenv("GLOAS_KV_DIR")) return std::strcmp(d, "none") == 0 ? std::string() : std::string(d);
    if (const char * x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/gloas/kv";
    if (const char * h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/gloas/kv";
    return std::string();
}

std::string resolve_model(const std::string & name, const char * what) {
    const model_search s = model_find(name);
    if (s.path.empty()) throw error(model_not_found(name, s, what));
    return s.path;
}

options parse_args(int argc, char ** argv) {
    options o;
    const std::vector<std::string> args(argv + 1, argv + argc);
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--config") o.config_path = args[i + 1];
    if (!o.config_path.empty()) {
        o.flags = config_load(o.config_path);
        o.flags.warnings.clear();
        o.flags.given = 0;
    }
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string & a = args[i];
        const option_def * d = option_find(SERVER_OPTIONS, N_SERVER_OPTS, a);
        if (!d) {
            const size_t used = config_apply_flag(o.flags, args, i);
            if (used == 0) usage_error(format("unknown option '%s'", a.c_str()));
            i += used - 1;
            continue;
        }
        option_value v;
        if (d->kind != opt_kind::SWITCH) {
            if (i + 1 >= args.size()) usage_error(format("%s needs a value (%s)", a.c_str(), d->arg));
            v = option_read(*d, a, args[++i]);
        }
        switch (server_opt(d->id)) {
            case S_MODEL: o.model_path = v.s; break;
            case S_TOKENIZER: o.tokenizer_path = v.s; break;
            case S_ALIAS:
                if (v.s.empty()) usage_error(format("%s: the name must not be empty", a.c_str()));
                o.alias = v.s;
                break;
            case S_HOST: o.host = v.s; break;
            case S_PORT: o.port = int(v.i); break;
            case S_API_KEY:
                if (v.s.empty()) usage_error(format("%s: the key must not be empty", a.c_str()));
                o.api_key = v.s;
                break;
            case S_CORS: o.cors = true; break;
            case S_MAX_BODY: o.max_body = parse_bytes(a, v.s); break;
            case S_THREADS_HTTP: o.threads_http = int(v.i); break;
            case S_PARALLEL: o.parallel = int32_t(v.i); break;
            case S_QUEUE: o.queue = int32_t(v.i); break;
            case S_N_PREDICT:
                if (v.i == 0) usage_error(format("%s: 0 tokens; give at least 1, or -1 for no limit", a.c_str()));
                o.n_predict = int32_t(v.i);
                break;
            case S_CHAT_TEMPLATE: {
                chat_template t;
                if (!chat_template_from_name(v.s, &t))
                    usage_error(format("%s: unknown template '%s'; known: %s", a.c_str(), v.s.c_str(),
                                       chat_template_names().c_str()));
                o.chat_template = v.s;
                break;
            }
            case S_CONFIG: break;  // read above
            case S_LOG_FORMAT: o.log_json = v.s == "json"; break;
            case S_QUIET: o.quiet = true; break;
            case S_HELP: std::fputs(usage().c_str(), stdout); std::exit(0);
            case N_SERVER_OPTS: GLOAS_ASSERT(false);
        }
    }
    config_flags_check(o.flags);
    if (o.model_path.empty()) {
        const model_search s = model_find("stories260K");
        if (s.path.empty())
            throw error("no model given (-m) and the default model stories260K was not found: " +
                        model_not_found("stories260K", s) + " (models/fetch.sh --default)");
        o.model_path = s.path;
    } else {
        o.model_path = resolve_model(o.model_path, "model");
    }
    if (!o.tokenizer_path.empty()) o.tokenizer_path = resolve_model(o.tokenizer_path, "tokenizer");
    return o;
}

int run(const options & o) {
    const run_config & fl = o.flags;
    if (fl.flag_given(OPT_THREADS) && fl.ctx.n_threads > 0) ops::set_n_threads(fl.ctx.n_threads);
    if ((fl.mlock || fl.no_mmap) && !o.quiet)
        std::fprintf(stderr, "gloas-server: note: --mlock and --no-mmap are ignored: the server maps the weights as they are\n");
    std::unique_ptr<model> m = model::load({o.model_path, o.tokenizer_path});
    const hparams & hp = m->hp;

    // Precedence as gloas: the memory strategy, the configuration file, the flags given.
    context_params cp;
    const std::string kv_dir = default_kv_dir();
    cp.kv.dir = kv_dir;
    memory_strategy strategy = memory_strategy::SPEED;
    const bool strategy_given = fl.flag_given(OPT_STRATEGY);
    if (strategy_given) memory_strategy_from_name(fl.strategy.c_str(), &strategy);
    std::unique_ptr<run_config> cfg_file;
    if (!o.config_path.empty()) {
        cfg_file = std::make_unique<run_config>(config_load(o.config_path));
        for (const auto & w : cfg_file->warnings) std::fprintf(stderr, "gloas-server: warning: %s\n", w.c_str());
        config_check_model(*cfg_file, hp, m->path);
        if (!strategy_given && !memory_strategy_from_name(cfg_file->strategy.c_str(), &strategy))
            strategy = memory_strategy::SPEED;
    }
    if (strategy == memory_strategy::AUTO) {
        std::string why;
        const int32_t n_ctx = fl.flag_given(OPT_CTX_SIZE) ? fl.ctx.n_ctx : hp.n_ctx_train;
        strategy = choose_strategy(*m, n_ctx * o.parallel, available_ram_bytes(), &why);
        if (!o.quiet) std::fprintf(stderr, "gloas-server: strategy auto: %s\n", why.c_str());
    }
    apply_strategy(strategy, cp);
    if (cfg_file) {
        const context_params fc = config_context_params(*cfg_file, hp, kv_dir);
        const sparse_params sp = cp.sparse;
        const size_t ram = cp.kv.ram_bytes;
        const bool copy = cp.kv.read_copy;
        cp = fc;
        cp.sparse = sp;
        cp.kv.ram_bytes = ram;
        cp.kv.read_copy = copy;
        if (cfg_file->use_sparse_attention) cp.sparse.ratio = float(cfg_file->sparse_ratio);
    }
    config_override(fl, hp, cp);
    if (cp.slide.on) throw cli_error("--ctx-slide: the server keeps every request within --ctx-size positions; drop it");
    cp.n_seq_max = o.parallel;
    if (cp.n_threads > 0) ops::set_n_threads(cp.n_threads);

    context ctx(*m, cp);
    for (std::string n = ctx.store().take_notices(); !n.empty();) {
        const size_t e = n.find('\n');
        std::fprintf(stderr, "gloas-server: warning: %s\n", n.substr(0, e).c_str());
        n = e == std::string::npos ? std::string() : n.substr(e + 1);
    }

    api_config ac;
    ac.n_ctx = ctx.n_ctx();
    ac.n_predict = o.n_predict;
    ac.sampling = config_sampling(fl, ctx.n_ctx());
    if (!o.alias.empty()) {
        ac.model_id = o.alias;
    } else {
        std::string base = m->path.substr(m->path.find_last_of('/') + 1);
        const size_t dot = base.find_last_of('.');
        ac.model_id = dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
    }
    std::string jinja, note;
    if (o.chat_template.empty() && m->file_format == "gguf")
        jinja = gguf_file::open(m->path)->get_str("tokenizer.chat_template");
    ac.tmpl = chat_template_choose(o.chat_template, jinja, m->path, &note);
    if (!note.empty() && !o.quiet) std::fprintf(stderr, "gloas-server: warning: %s\n", note.c_str());

    server_metrics metrics;
    engine_params ep;
    ep.n_parallel = o.parallel;
    ep.queue = o.queue;
    ep.step_tokens = std::max(cp.n_ubatch, o.parallel);
    engine eng(*m, ctx, ep, metrics);

    httplib::Server svr;
    const int n_http = o.threads_http > 0 ? o.threads_http : std::min(1024, o.parallel + o.queue + 8);
    svr.new_task_queue = [n_http] { return new httplib::ThreadPool(size_t(n_http)); };
    svr.set_keep_alive_timeout(5);
    http_options ho;
    ho.api_key = o.api_key;
    ho.cors = o.cors;
    ho.max_body = o.max_body;
    ho.log_json = o.log_json;
    ho.parallel = o.parallel;
    ho.queue = o.queue;
    server_app app(ho, *m, eng, metrics, ac);
    app.install(svr);

    int port = o.port;
    if (port == 0) port = svr.bind_to_any_port(o.host);
    else if (!svr.bind_to_port(o.host, port)) port = -1;
    if (port <= 0)
        throw error(format("cannot listen on %s:%d (--host, --port): %s", o.host.c_str(), o.port,
                           o.port ? "the address is in use or not this machine's" : "no free port"));

    if (!o.quiet) {
        const kv_store & st = ctx.store();
        std::fprintf(stderr, "gloas-server: model %s (%s, %.1f M params) as '%s', chat format %s\n", m->path.c_str(),
                     m->file_format.c_str(), double(m->n_params) / 1e6, ac.model_id.c_str(), chat_template_name(ac.tmpl));
        std::fprintf(stderr, "gloas-server: %d sequences of %d positions, %d tokens per step, %d threads; kv %s pages of "
                     "%d tokens in %s\n", o.parallel, ctx.n_ctx(), ep.step_tokens, ops::n_threads(),
                     type_name(st.kv_type()), st.geometry().page_tokens, st.persistent() ? st.path().c_str() : "memory");
    }
    std::fprintf(stderr, "gloas-server: listening on http://%s:%d\n", o.host.c_str(), port);

    // SIGINT and SIGTERM stop the server: they are blocked in every thread
    // and taken by this one, which ends the generations, then the listener.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    std::thread([set, &eng, &svr, port]() mutable {
        int sig = 0;
        sigwait(&set, &sig);
        eng.stop();
        svr.stop();
        close_connections(port);
    }).detach();

    const bool ok = svr.listen_after_bind();
    eng.stop();
    ctx.store().flush();
    if (!o.quiet) std::fprintf(stderr, "gloas-server: stopped\n");
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char ** argv) {
    // Before any thread starts: every thread inherits the mask (see run), and
    // a write to a closed connection must fail, not kill the process.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return run(parse_args(argc, argv));
    } catch (const cli_error & e) {
        usage_error(e.what());
    } catch (const error & e) {
        std::fprintf(stderr, "gloas-server: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "gloas-server: error: out of memory\n");
        return 1;
    }
}
