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
#include "kvcache/kv-folder.h"
#include "base/error.h"
#include "tensor/ops.h"
#include "tools/common/cli.h"
#include "tools/common/files.h"
#include "tools/common/run-setup.h"
#include "tools/common/weights.h"
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
    S_PARALLEL, S_QUEUE, S_STEP_TOKENS, S_N_PREDICT, S_CHAT_TEMPLATE,
    S_CONFIG, S_LOG_FORMAT, S_QUIET, S_HELP,
    N_SERVER_OPTS
};

// The --help groups of the server's own options.
constexpr const char *MODEL = "model", *HTTP = "http", *SCHED = "scheduling", *OTHER = "other";

// --help: its head, then its sections (own rows, then shared ones).
constexpr const char * HELP_HEAD =
    "usage: gloas-server [options]\n\n"
    "Serves a Llama-family model over the OpenAI HTTP API (chat and completions, streamed or not).\n"
    "Requests share one context: --parallel sequences generate together, prompts with a common\n"
    "prefix share K/V pages (also across restarts, with the page folder --kv-dir).\n";
constexpr cli::help_section HELP_SECTIONS[] = {
    {"model", MODEL, OPT_GROUP_MODEL}, {"HTTP", HTTP, nullptr}, {"scheduling", SCHED, nullptr},
    {"context", nullptr, OPT_GROUP_CONTEXT},
    {"sampling (defaults of requests that give none)", nullptr, OPT_GROUP_SAMPLING},
    {"K/V cache", nullptr, OPT_GROUP_KV}, {"other", OTHER, nullptr}
};

// clang-format off
const option_def SERVER_OPTIONS[N_SERVER_OPTS] = {
    cli::opt_text(S_MODEL, "-m|--model", "FILE", MODEL,
                  "GGUF file or llama2.c checkpoint, a path or a name looked up as gloas -m does "
                  "(default: stories260K)"),
    cli::opt_text(S_TOKENIZER, "-z|--tokenizer", "FILE", MODEL,
                  "tokenizer.bin for a llama2.c checkpoint (default: found beside the model)"),
    cli::opt_text(S_ALIAS, "-a|--alias", "NAME", MODEL,
                  "the model's id in /v1/models and the requests' \"model\" field (default: the file name without "
                  "its extension)"),

    cli::opt_text(S_HOST, "--host", "ADDR", HTTP,
                  "address to listen on (default: 127.0.0.1; 0.0.0.0 opens the server to the network)"),
    cli::opt_int(S_PORT, "--port", "N", 0, 65535, HTTP,
                 "port to listen on; 0 picks a free one, printed on stderr (default: 8080)"),
    cli::opt_text(S_API_KEY, "--api-key", "KEY", HTTP,
                  "require 'Authorization: Bearer KEY' on every route but /health (401 otherwise)"),
    cli::opt_switch(S_CORS, "--cors", HTTP,
                    "answer cross-origin requests from any origin (Access-Control-Allow-Origin: *; default: off)"),
    cli::opt_text(S_MAX_BODY, "--max-body", "BYTES", HTTP,
                  "largest request body, with k, M or G (default: 8M); larger ones get 413"),
    cli::opt_int(S_THREADS_HTTP, "--threads-http", "N", 1, 1024, HTTP,
                 "HTTP connection threads (default: --parallel + --queue + 8); each open connection holds one"),

    cli::opt_int(S_PARALLEL, "-np|--parallel", "N", 1, 256, SCHED,
                 "sequences generated together in one batch, each with --ctx-size positions (default: 4)"),
    cli::opt_int(S_QUEUE, "--queue", "N", 0, 1 << 20, SCHED,
                 "requests that may wait for a free sequence; past that, 503 with Retry-After (default: 64)"),
    cli::opt_int(S_STEP_TOKENS, "--step-tokens", "N", 1, 1 << 16, SCHED,
                 "tokens per forward pass: a token of every generating request, then prompt chunks in arrival "
                 "order; smaller steps give waiting prompts their first token sooner, larger ones read the weights "
                 "fewer times per prompt token (default: 128; at most -ub, at least --parallel)"),
    cli::opt_int(S_N_PREDICT, "-n|--n-predict", "N", -1, 1 << 30, SCHED,
                 "max_tokens of requests that give none; -1: until the context is full (default: -1)"),
    cli::opt_text(S_CHAT_TEMPLATE, "--chat-template", "NAME", SCHED,
                  "the chat prompt format (default: recognized from the model's tokenizer.chat_template; chatml "
                  "when it has none): chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, "
                  "mistral-v3, mistral-v3-tekken, mistral-v7, llama3, zephyr, phi3, gemma, deepseek, deepseek2, "
                  "deepseek3"),

    cli::opt_text(S_CONFIG, "--config", "FILE", OTHER,
                  "settings in the YAML shape of the specification (examples/gloas.yaml); "
                  "flags given too override it"),
    cli::opt_word(S_LOG_FORMAT, "--log-format", "FMT", "text|json", OTHER,
                  "access-log lines on stderr as text or one JSON object each (default: text)"),
    cli::opt_switch(S_QUIET, "-q|--quiet", OTHER, "no startup figures; access-log lines and errors only"),
    cli::opt_switch(S_HELP, "-h|--help", OTHER, "this text"),
};
// clang-format on


struct options {
    std::string model_path, tokenizer_path, alias;
    std::string host = "127.0.0.1";
    int port = 8080;
    http_options http;          // --api-key, --cors, --max-body, --log-format
    int threads_http = 0;
    int32_t parallel = 4;
    int32_t queue = 64;
    int32_t step_tokens = 128;
    int32_t n_predict = -1;
    std::string chat_template;
    std::string config_path;
    bool quiet = false;
    run_config flags;
};

using cli::usage_error;

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

options parse_args(int argc, char ** argv) {
    options o;
    const auto own = [&](const option_def & d, const std::string & a, const option_value & v) {
        switch (server_opt(d.id)) {
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
                o.http.api_key = v.s;
                break;
            case S_CORS: o.http.cors = true; break;
            case S_MAX_BODY: o.http.max_body = parse_bytes(a, v.s); break;
            case S_THREADS_HTTP: o.threads_http = int(v.i); break;
            case S_PARALLEL: o.parallel = int32_t(v.i); break;
            case S_QUEUE: o.queue = int32_t(v.i); break;
            case S_STEP_TOKENS: o.step_tokens = int32_t(v.i); break;
            case S_N_PREDICT:
                if (v.i == 0) usage_error(format("%s: 0 tokens; give at least 1, or -1 for no limit", a.c_str()));
                o.n_predict = int32_t(v.i);
                break;
            case S_CHAT_TEMPLATE: o.chat_template = cli::chat_template_arg(a, v.s); break;
            case S_CONFIG: break;  // read above
            case S_LOG_FORMAT: o.http.log_json = v.s == "json"; break;
            case S_QUIET: o.quiet = true; break;
            case S_HELP: cli::print_help(HELP_HEAD, SERVER_OPTIONS, N_SERVER_OPTS, HELP_SECTIONS);
            case N_SERVER_OPTS: GLOAS_ASSERT(false);
        }
    };
    cli::parse_options(std::vector<std::string>(argv + 1, argv + argc), SERVER_OPTIONS, N_SERVER_OPTS, o.flags,
                       o.config_path, own);
    cli::resolve_model_paths(o.model_path, o.tokenizer_path);
    return o;
}

int run(const options & o) {
    const run_config & fl = o.flags;
    if (fl.flag_given(OPT_THREADS) && fl.ctx.n_threads > 0) ops::set_n_threads(fl.ctx.n_threads);
    std::unique_ptr<model> m = model::load({o.model_path, o.tokenizer_path});
    const bool copy = cli::copy_weights(fl, *m);
    if (copy || fl.mlock) cli::place_weights(*m, copy, fl.mlock, "gloas-server");
    const hparams & hp = m->hp;

    // Precedence as gloas: the memory strategy, the configuration file, the flags given.
    context_params cp;
    const std::string kv_dir = kv_default_dir();
    cp.kv.dir = kv_dir;
    cli::context_setup setup = cli::setup_begin(fl, o.config_path, *m);
    const int32_t n_ctx = fl.flag_given(OPT_CTX_SIZE) ? fl.ctx.n_ctx : hp.n_ctx_train;
    cli::setup_params(setup, *m, int64_t(n_ctx) * o.parallel, kv_dir, o.quiet, cp);
    config_override(fl, hp, cp);
    if (cp.slide.on) throw cli_error("--ctx-slide: the server keeps every request within --ctx-size positions; drop it");
    cp.n_seq_max = o.parallel;
    if (cp.n_threads > 0) ops::set_n_threads(cp.n_threads);
    // No batch is larger than a step: the sequences' chunk buffers need no more.
    const int32_t step_tokens = std::max(std::min(o.step_tokens, cp.n_ubatch), o.parallel);
    cp.n_ubatch = step_tokens;

    context ctx(*m, cp);
    cli::warn_lines(ctx.store().take_notices());

    api_config ac;
    ac.n_ctx = ctx.n_ctx();
    ac.n_predict = o.n_predict;
    ac.sampling = config_sampling(fl, ctx.n_ctx());
    ac.model_id = !o.alias.empty() ? o.alias : cli::base_name(m->path);
    std::string jinja, note;
    if (o.chat_template.empty() && m->file_format == "gguf")
        jinja = gguf_file::open(m->path)->get_str("tokenizer.chat_template");
    ac.tmpl = chat_template_choose(o.chat_template, jinja, m->path, &note);
    if (!note.empty() && !o.quiet) cli::warning(note);

    server_metrics metrics;
    engine_params ep;
    ep.n_parallel = o.parallel;
    ep.queue = o.queue;
    ep.step_tokens = step_tokens;
    engine eng(*m, ctx, ep, metrics);

    httplib::Server svr;
    const int n_http = o.threads_http > 0 ? o.threads_http : std::min(1024, o.parallel + o.queue + 8);
    svr.new_task_queue = [n_http] { return new httplib::ThreadPool(size_t(n_http)); };
    svr.set_keep_alive_timeout(5);
    http_options ho = o.http;
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
    cli::prog = "gloas-server";
    // Before any thread starts: every thread inherits the mask (see run), and
    // a write to a closed connection must fail, not kill the process.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    return cli::run_main([&] { return run(parse_args(argc, argv)); });
}
