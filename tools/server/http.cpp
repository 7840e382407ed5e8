#include "tools/server/http.h"

#include "base/error.h"

#include <arpa/inet.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

namespace gloas::server {

namespace {

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

bool peer_closed(int fd) {
    if (fd < 0) return false;
    pollfd p{fd, short(POLLRDHUP), 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}


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
    size_t marks_sent = 0;  // entries of j->marks sent
    bool role_sent = false;
};

} // namespace

void close_connections(int port) {
    find_socket([&](int fd, int self_port, const std::string &, int) {
        if (self_port == port) ::shutdown(fd, SHUT_RDWR);
        return false;
    });
}

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
        const bool waited = wait_job(eng_, *j, fd);
        std::lock_guard<std::mutex> l(j->mu);
        record_job(*j);
        if (!waited || (j->finish_reason == "cancelled" && peer_closed(fd))) {
            res.status = 499;  // client closed the request (nginx's code; nobody reads it)
            g_rec.note = "cancelled";
            return;
        }
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
                    if (chunks.empty() && jb.marks.size() == st->marks_sent && !jb.done)
                        jb.cv.wait_for(l, std::chrono::milliseconds(20));
                    const size_t n_lp = jb.logprobs.size();
                    // One chunk per release; the logprobs of every token so far ride on the last one.
                    for (; st->marks_sent < jb.marks.size(); ++st->marks_sent) {
                        const size_t end = jb.marks[st->marks_sent];
                        const bool last = st->marks_sent + 1 == jb.marks.size();
                        chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id,
                                                      jb.text.substr(st->sent, end - st->sent), jb, st->lp_sent,
                                                      last ? n_lp : st->lp_sent, "", false));
                        st->sent = end;
                        if (last) st->lp_sent = n_lp;
                    }
                    if (n_lp > st->lp_sent && !jb.done) {  // tokens whose text is held back
                        chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id, "", jb, st->lp_sent, n_lp,
                                                      "", false));
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
                            chunks.push_back(stream_chunk(st->r, st->id, st->created, model_id, "", jb, st->lp_sent, n_lp,
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

} // namespace gloas::server
