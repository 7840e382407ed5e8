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
#include "tools/server/metrics.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// What the access log says about the request this HTTP thread is answering
// (httplib runs the handler, the stream and the logger on one thread).
struct access_record {
    double t0 = 0.0;
    int32_t prompt = -1, completion = -1, cached = -1;
    double ttft_ms = -1.0;
    std::string note;  // why a generation ended early ("cancelled", an error)
};
thread_local access_record g_rec;

void record_job(const job & j) {
    g_rec.prompt = int32_t(j.prompt.size());
    g_rec.completion = j.n_gen;
    g_rec.cached = j.n_cached;
    g_rec.ttft_ms = j.t_first > 0.0 ? (j.t_first - j.t_submit) * 1e3 : -1.0;
    if (j.finish_reason == "cancelled" || j.finish_reason == "error") g_rec.note = j.finish_reason;
}

// The host and port of a socket address (numeric); port -1 on failure.
int addr_port(const sockaddr_storage & a, socklen_t len, std::string * host) {
    char h[NI_MAXHOST] = {}, p[NI_MAXSERV] = {};
    if (::getnameinfo(reinterpret_cast<const sockaddr *>(&a), len, h, sizeof h, p, sizeof p,
                      NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return -1;
    *host = h;
    return std::atoi(p);
}

// Calls fn(fd, local port, peer host, peer port) for every connected socket
// of this process until it returns true; returns that fd, or -1.
template <class F> int find_socket(F fn) {
    DIR * d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    int found = -1;
    while (const dirent * e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const int fd = std::atoi(e->d_name);
        struct stat st;
        if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
        sockaddr_storage peer{}, self{};
        socklen_t lp = sizeof peer, ls = sizeof self;
        if (::getpeername(fd, reinterpret_cast<sockaddr *>(&peer), &lp) != 0) continue;
        if (::getsockname(fd, reinterpret_cast<sockaddr *>(&self), &ls) != 0) continue;
        std::string ph, sh;
        const int pp = addr_port(peer, lp, &ph);
        if (fn(fd, addr_port(self, ls, &sh), ph, pp)) {
            found = fd;
            break;
        }
    }
    ::closedir(d);
    return found;
}

// The client's connected socket: the descriptor whose two ends are the
// request's addresses. httplib does not hand it to handlers; it stays open
// until the response is written, so the handler may watch it for the peer
// closing. -1 if not found (then only a failed write notices).
int client_socket(const httplib::Request & req) {
    return find_socket([&](int, int self_port, const std::string & peer, int peer_port) {
        return self_port == req.local_port && peer_port == req.remote_port && peer == req.remote_addr;
    });
}

// Shuts down every connection accepted on `port`: at exit, connections idle
// between keep-alive requests would otherwise hold the server for their
// whole keep-alive timeout.
void close_connections(int port) {
    find_socket([&](int fd, int self_port, const std::string &, int) {
        if (self_port == port) ::shutdown(fd, SHUT_RDWR);
        return false;
    });
}

bool peer_closed(int fd) {
    if (fd < 0) return false;
    pollfd p{fd, short(POLLRDHUP), 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

class server_app {
public:
    server_app(const options & o, const model & m, engine & eng, server_metrics & metrics, const api_config & cfg)
        : o_(o), m_(m), eng_(eng), metrics_(metrics), cfg_(cfg), created_(int64_t(std::time(nullptr))) {}

    void install(httplib::Server & svr);

private:
    void send_error(httplib::Response & res, const api_error & e) {
        res.status = e.status;
        res.set_content(dump(error_body(e)), "application/json");
    }
    void send_json(httplib::Response & res, const json & j) { res.set_content(dump(j), "application/json"); }

    void generate(endpoint ep, const httplib::Request & req, httplib::Response & res);
    void log(const httplib::Request & req, const httplib::Response & res);

    const options & o_;
    const model & m_;
    engine & eng_;
    server_metrics & metrics_;
    const api_config & cfg_;
    int64_t created_;
    std::mutex log_mu_;
};

// Waits for a job to end, watching the client's socket; false if the client
// went away (the job is then cancelled).
bool wait_job(engine & eng, job & j, int fd) {
    std::unique_lock<std::mutex> l(j.mu);
    while (!j.done) {
        j.cv.wait_for(l, std::chrono::milliseconds(20));
        if (!j.done && peer_closed(fd)) {
            j.cancel = true;
            eng.wake();
            return false;
        }
    }
    return true;
}

// The state of one SSE response between calls of its content provider.
struct stream_state {
    std::shared_ptr<job> j;
    gen_request r;
    std::string id;
    int64_t created = 0;
    int fd = -1;
    size_t sent = 0;     // bytes of j->text sent
    size_t lp_sent = 0;  // logprob entries sent
    bool role_sent = false;
};

void server_app::generate(endpoint ep, const httplib::Request & req, httplib::Response & res) {
    gen_request r;
    try {
        r = parse_generation(ep, req.body, m_, cfg_);
    } catch (const api_error & e) {
        send_error(res, e);
        return;
    }
    auto j = std::make_shared<job>();
    j->prompt = r.prompt;
    j->p = r.p;
    j->t_submit = g_rec.t0 > 0.0 ? g_rec.t0 : now_s();
    g_rec.prompt = int32_t(j->prompt.size());
    const int fd = client_socket(req);
    j->client_fd = fd;
    if (!eng_.submit(j)) {
        metrics_.rejected_full();
        api_error e;
        e.status = 503;
        e.type = "server_error";
        e.code = "queue_full";
        e.message = format("the server is busy: %d requests are generating and %d waiting (--parallel, --queue); "
                           "retry later", o_.parallel, o_.queue);
        res.set_header("Retry-After", "1");
        send_error(res, e);
        return;
    }
    const std::string id = new_id(ep);
    if (!r.stream) {
        if (!wait_job(eng_, *j, fd)) {
            res.status = 499;  // client closed the request (nginx's code; nobody reads it)
            record_job(*j);
            g_rec.note = "cancelled";
            return;
        }
        std::lock_guard<std::mutex> l(j->mu);
        record_job(*j);
        if (j->finish_reason == "error" || j->finish_reason == "cancelled") {
            api_error e;
            e.status = j->finish_reason == "error" ? 500 : 503;
            e.type = "server_error";
            e.message = j->finish_reason == "error" ? "generation failed: " + j->error : "the server is shutting down";
            send_error(res, e);
            return;
        }
        send_json(res, completion_response(r, id, int64_t(std::time(nullptr)), cfg_.model_id, *j));
        return;
    }

    auto st = std::make_shared<stream_state>();
    st->j = j;
    st->r = std::move(r);
    st->id = id;
    st->created = int64_t(std::time(nullptr));
    st->fd = fd;
    res.set_header("Cache-Control", "no-cache");
    engine * eng = &eng_;
    const std::string model_id = cfg_.model_id;
    res.set_chunked_content_provider(
        "text/event-stream",
        [st, eng, model_id](size_t, httplib::DataSink & sink) {
            try {
                job & jb = *st->j;
                // The client is gone: stop its generation (the log tells so).
                auto abandon = [&] {
                    jb.cancel = true;
                    eng->wake();
                    std::lock_guard<std::mutex> l(jb.mu);
                    record_job(jb);
                    g_rec.note = "cancelled";
                    return false;
                };
                // The chunks are made under the job's lock and written after
                // it: a slow client must never hold up the scheduler.
                std::vector<json> chunks;
                bool finished = false;
                {
                    std::unique_lock<std::mutex> l(jb.mu);
                    if (!st->role_sent && st->r.ep == endpoint::CHAT) {
                        st->role_sent = true;
                        chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id, "", jb, 0, 0, "", true));
                    }
                    if (chunks.empty() && jb.text.size() == st->sent && !jb.done)
                        jb.cv.wait_for(l, std::chrono::milliseconds(20));
                    const size_t n_lp = jb.logprobs.size();
                    if (jb.text.size() > st->sent || (n_lp > st->lp_sent && !jb.done)) {
                        chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id, jb.text.substr(st->sent), jb,
                                                      st->lp_sent, n_lp, "", false));
                        st->sent = jb.text.size();
                        st->lp_sent = n_lp;
                    }
                    if (jb.done) {
                        finished = true;
                        record_job(jb);
                        if (jb.finish_reason == "error" || jb.finish_reason == "cancelled") {
                            api_error e;
                            e.status = 500;
                            e.type = "server_error";
                            e.message = jb.finish_reason == "error" ? "generation failed: " + jb.error
                                                                    : "the server is shutting down";
                            chunks.push_back(error_body(e));
                        } else {
                            chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id, "", jb, n_lp, n_lp,
                                                          jb.finish_reason, false));
                            if (st->r.include_usage) chunks.push_back(usage_chunk(st->r, st->id, st->created, model_id, jb));
                        }
                    }
                }
                if (!finished && peer_closed(st->fd)) return abandon();
                for (const json & c : chunks) {
                    const std::string s = "data: " + dump(c) + "\n\n";
                    if (!sink.write(s.data(), s.size())) return abandon();
                }
                if (!finished) return true;
                static const char done[] = "data: [DONE]\n\n";
                sink.write(done, sizeof done - 1);
                sink.done();
                return true;
            } catch (const std::exception &) {
                st->j->cancel = true;  // nothing more can be sent
                eng->wake();
                return false;
            }
        },
        [st, eng](bool success) {
            if (success) return;
            st->j->cancel = true;  // the client went away or the server is stopping
            eng->wake();
        });
}

void server_app::log(const httplib::Request & req, const httplib::Response & res) {
    const double total_ms = g_rec.t0 > 0.0 ? (now_s() - g_rec.t0) * 1e3 : 0.0;
    static const char * known[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
                                   "/tokenize", "/detokenize", "/chat/completions", "/completions", "/models"};
    std::string path = "other";
    for (const char * k : known)
        if (req.path == k) path = k;
    if (req.path.rfind("/v1/models/", 0) == 0) path = "/v1/models/{id}";
    metrics_.request(path, res.status);
    std::string line;
    if (o_.log_json) {
        json j = {{"time", int64_t(std::time(nullptr))}, {"remote", req.remote_addr}, {"method", req.method},
                  {"path", req.path}, {"status", res.status}};
        j["prompt_tokens"] = g_rec.prompt >= 0 ? json(g_rec.prompt) : json(nullptr);
        j["completion_tokens"] = g_rec.completion >= 0 ? json(g_rec.completion) : json(nullptr);
        j["cached_tokens"] = g_rec.cached >= 0 ? json(g_rec.cached) : json(nullptr);
        j["ttft_ms"] = g_rec.ttft_ms >= 0 ? json(std::round(g_rec.ttft_ms * 10) / 10) : json(nullptr);
        j["total_ms"] = std::round(total_ms * 10) / 10;
        if (!g_rec.note.empty()) j["note"] = g_rec.note;
        line = dump(j);
    } else {
        auto num = [](int32_t v) { return v >= 0 ? std::to_string(v) : std::string("-"); };
        line = format("gloas-server: %s %s %s %d prompt=%s cached=%s completion=%s ttft_ms=%s total_ms=%.1f%s%s",
                      req.remote_addr.c_str(), req.method.c_str(), req.path.c_str(), res.status, num(g_rec.prompt).c_str(),
                      num(g_rec.cached).c_str(), num(g_rec.completion).c_str(),
                      g_rec.ttft_ms >= 0 ? format("%.1f", g_rec.ttft_ms).c_str() : "-", total_ms,
                      g_rec.note.empty() ? "" : " ", g_rec.note.c_str());
    }
    {
        std::lock_guard<std::mutex> l(log_mu_);
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    g_rec = access_record();
}

void server_app::install(httplib::Server & svr) {
    svr.set_payload_max_length(o_.max_body);
    svr.set_pre_routing_handler([this](const httplib::Request & req, httplib::Response & res) {
        g_rec = access_record();
        g_rec.t0 = now_s();
        if (o_.cors) {
            res.set_header("Access-Control-Allow-Origin", "*");
            if (req.method == "OPTIONS") {
                res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
                res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
                res.set_header("Access-Control-Max-Age", "86400");
                res.status = 204;
                return httplib::Server::HandlerResponse::Handled;
            }
        }
        if (o_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        const std::string auth = req.get_header_value("Authorization");
        if (auth != "Bearer " + o_.api_key) {
            api_error e;
            e.status = 401;
            e.code = "invalid_api_key";
            e.message = auth.empty() ? "no API key: send 'Authorization: Bearer KEY' (the server's --api-key)"
                                     : "incorrect API key in the Authorization header";
            res.set_header("WWW-Authenticate", "Bearer");
            send_error(res, e);
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib answers by itself (413, 404, 400 for unreadable
    // requests) get an OpenAI error object too.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request & req, httplib::Response & res) {
        if (!res.body.empty() || res.status == 499) return httplib::Server::HandlerResponse::Unhandled;
        api_error e;
        e.status = res.status;
        if (res.status == 413) {
            e.param = "body";
            e.message = format("the request body is over %zu bytes (the server's --max-body)", o_.max_body);
        } else if (res.status == 404) {
            e.message = format("no route %s %s", req.method.c_str(), req.path.c_str());
        } else {
            e.message = format("the request could not be read (HTTP %d)", res.status);
        }
        if (res.status >= 500) e.type = "server_error";
        send_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([this](const httplib::Request &, httplib::Response & res, std::exception_ptr ep) {
        api_error e;
        e.status = 500;
        e.type = "server_error";
        try {
            std::rethrow_exception(ep);
        } catch (const api_error & a) {
            e = a;
        } catch (const std::exception & x) {
            e.message = format("internal error: %s", x.what());
        } catch (...) {
            e.message = "internal error";
        }
        send_error(res, e);
    });
    svr.set_logger([this](const httplib::Request & req, const httplib::Response & res) { log(req, res); });

    for (const char * p : {"/v1/chat/completions", "/chat/completions"})
        svr.Post(p, [this](const httplib::Request & req, httplib::Response & res) { generate(endpoint::CHAT, req, res); });
    for (const char * p : {"/v1/completions", "/completions"})
        svr.Post(p, [this](const httplib::Request & req, httplib::Response & res) { generate(endpoint::COMPLETION, req, res); });

    auto model_obj = [this] {
        return json{{"id", cfg_.model_id},
                    {"object", "model"},
                    {"created", created_},
                    {"owned_by", "gloas"},
                    {"meta",
                     {{"n_vocab", m_.hp.n_vocab}, {"n_ctx_train", m_.hp.n_ctx_train}, {"n_ctx", cfg_.n_ctx},
                      {"n_params", m_.n_params}, {"size", m_.weight_bytes}, {"chat_template", chat_template_name(cfg_.tmpl)}}}};
    };
    for (const char * p : {"/v1/models", "/models"})
        svr.Get(p, [this, model_obj](const httplib::Request &, httplib::Response & res) {
            send_json(res, {{"object", "list"}, {"data", json::array({model_obj()})}});
        });
    svr.Get("/v1/models/(.+)", [this, model_obj](const httplib::Request & req, httplib::Response & res) {
        if (req.matches[1] != cfg_.model_id) {
            api_error e;
            e.status = 404;
            e.param = "model";
            e.code = "model_not_found";
            e.message = format("The model '%s' does not exist; this server serves '%s'", req.matches[1].str().c_str(),
                               cfg_.model_id.c_str());
            send_error(res, e);
            return;
        }
        send_json(res, model_obj());
    });
    svr.Get("/health", [this](const httplib::Request &, httplib::Response & res) {
        const engine_stats s = eng_.stats();
        send_json(res, {{"status", "ok"},
                        {"slots_idle", s.n_parallel - s.active},
                        {"slots_processing", s.active},
                        {"requests_waiting", s.waiting}});
    });
    svr.Get("/metrics", [this](const httplib::Request &, httplib::Response & res) {
        res.set_content(metrics_.text(eng_.stats()), "text/plain; version=0.0.4");
    });
    svr.Post("/tokenize", [this](const httplib::Request & req, httplib::Response & res) {
        try {
            const json o = parse_object(req.body);
            auto c = o.find("content");
            if (c == o.end() || !c->is_string()) throw invalid("content", "'content' must be a string");
            bool add_special = false, with_pieces = false;
            for (auto [k, dst] : {std::pair<const char *, bool *>{"add_special", &add_special}, {"with_pieces", &with_pieces}}) {
                auto v = o.find(k);
                if (v == o.end() || v->is_null()) continue;
                if (!v->is_boolean()) throw invalid(k, format("'%s' must be true or false", k));
                *dst = v->get<bool>();
            }
            const std::vector<int32_t> ids = m_.tok.encode(c->get<std::string>(), add_special && m_.tok.add_bos(), true);
            json toks = json::array();
            for (size_t i = 0; i < ids.size(); ++i) {
                if (!with_pieces) {
                    toks.push_back(ids[i]);
                    continue;
                }
                toks.push_back({{"id", ids[i]}, {"piece", m_.tok.token_to_piece(i ? ids[i - 1] : -1, ids[i])}});
            }
            send_json(res, {{"tokens", toks}});
        } catch (const api_error & e) {
            send_error(res, e);
        }
    });
    svr.Post("/detokenize", [this](const httplib::Request & req, httplib::Response & res) {
        try {
            const json o = parse_object(req.body);
            auto t = o.find("tokens");
            if (t == o.end() || !t->is_array()) throw invalid("tokens", "'tokens' must be an array of token ids");
            std::vector<int32_t> ids;
            for (size_t i = 0; i < t->size(); ++i) {
                const json & v = (*t)[i];
                if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= m_.tok.n_vocab())
                    throw invalid("tokens", format("'tokens[%zu]' must be a token id in [0, %d)", i, m_.tok.n_vocab()));
                ids.push_back(int32_t(v.get<int64_t>()));
            }
            send_json(res, {{"content", m_.tok.decode(ids)}});
        } catch (const api_error & e) {
            send_error(res, e);
        }
    });
}

int run(const options & o) {
    const run_config & fl = o.flags;
    if (fl.flag_given(OPT_THREADS) && fl.ctx.n_threads > 0) ops::set_n_threads(fl.ctx.n_threads);
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
    server_app app(o, *m, eng, metrics, ac);
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
