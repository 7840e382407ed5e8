// gloas-server's HTTP side: routes, authentication, errors, streaming and
// the access log, over cpp-httplib.
//
// Handlers parse and check a request (api.h), submit a job to the engine and
// either wait for it or stream its text as SSE chunks. They watch the
// client's socket: a client that goes away cancels its job. One line per
// request goes to stderr once its response is written.
#pragma once

#include "decoder/model.h"
#include "tools/server/api.h"
#include "tools/server/engine.h"
#include "tools/server/metrics.h"

#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace gloas::server {

struct http_options {
    std::string api_key;        // empty: no key needed
    bool cors = false;          // Access-Control-Allow-Origin: * and preflight answers
    size_t max_body = size_t(8) << 20;
    bool log_json = false;      // access-log lines as JSON objects
    int32_t parallel = 1;       // for the 503 message
    int32_t queue = 0;
};

// The routes of one server; engine, model and metrics outlive it.
class server_app {
public:
    server_app(const http_options & o, const model & m, engine & eng, server_metrics & metrics, const api_config & cfg)
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

    http_options o_;
    const model & m_;
    engine & eng_;
    server_metrics & metrics_;
    const api_config & cfg_;
    int64_t created_;
    std::mutex log_mu_;
};

// Shuts down every connection accepted on `port`: at exit, connections idle
// between keep-alive requests would otherwise hold the server for their
// whole keep-alive timeout.
void close_connections(int port);

} // namespace gloas::server
