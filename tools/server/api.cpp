#include "tools/server/api.h"

#include "base/error.h"

#include <cmath>
#include <cstdlib>
#include <mutex>
#include <random>

namespace gloas::server {

api_error invalid(const std::string & param, const std::string & message) {
    api_error e;
    e.message = message;
    e.param = param;
    return e;
}

json error_body(const api_error & e) {
    json err = {{"message", e.message}, {"type", e.type}};
    err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
    err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
    return {{"error", err}};
}

namespace {

[[noreturn]] void bad(const std::string & param, const std::string & msg) { throw invalid(param, msg); }

// The field `k` of o; nullptr when absent or null (OpenAI treats null as absent).
const json * field(const json & o, const char * k) {
    auto it = o.find(k);
    return it == o.end() || it->is_null() ? nullptr : &*it;
}

double get_number(const json & o, const char * k, double lo, double hi, double def) {
    const json * v = field(o, k);
    if (!v) return def;
    if (!v->is_number()) bad(k, format("'%s' must be a number, not %s", k, v->type_name()));
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) bad(k, format("'%s' is %g; it must lie in [%g, %g]", k, x, lo, hi));
    return x;
}

int64_t get_int(const json & o, const char * k, int64_t lo, int64_t hi, int64_t def) {
    const json * v = field(o, k);
    if (!v) return def;
    if (!v->is_number_integer()) bad(k, format("'%s' must be an integer, not %s", k, v->type_name()));
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))
        bad(k, format("'%s' is %s; it must lie in [%lld, %lld]", k, v->dump().c_str(), (long long) lo, (long long) hi));
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) bad(k, format("'%s' is %lld; it must lie in [%lld, %lld]", k, (long long) x, (long long) lo, (long long) hi));
    return x;
}

bool get_bool(const json & o, const char * k, bool def) {
    const json * v = field(o, k);
    if (!v) return def;
    if (!v->is_boolean()) bad(k, format("'%s' must be true or false, not %s", k, v->type_name()));
    return v->get<bool>();
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const json & c, const std::string & where) {
    if (c.is_string()) return c.get<std::string>();
    if (!c.is_array()) bad(where, format("'%s' must be a string or an array of text parts, not %s", where.c_str(), c.type_name()));
    std::string s;
    for (size_t i = 0; i < c.size(); ++i) {
        const std::string w = format("%s[%zu]", where.c_str(), i);
        const json & part = c[i];
        if (!part.is_object()) bad(w, format("'%s' must be an object {\"type\": \"text\", \"text\": ...}", w.c_str()));
        const json * type = field(part, "type");
        if (!type || !type->is_string() || type->get<std::string>() != "text")
            bad(w + ".type", format("'%s.type' must be \"text\" (this server reads text only)", w.c_str()));
        const json * text = field(part, "text");
        if (!text || !text->is_string()) bad(w + ".text", format("'%s.text' must be a string", w.c_str()));
        s += text->get<std::string>();
    }
    return s;
}

} // namespace

json parse_object(const std::string & body) {
    json o;
    try {
        o = json::parse(body);
    } catch (const json::exception & e) {
        // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 9: ..." (or
        // out_of_range.406, a number past a double's range)
        std::string w = e.what();
        const size_t at = w.find("] ");
        if (at != std::string::npos) w = w.substr(at + 2);
        bad("", "the request body is not valid JSON: " + w);
    }
    if (!o.is_object()) bad("", format("the request body must be a JSON object, not %s", o.type_name()));
    return o;
}

gen_request parse_generation(endpoint ep, const std::string & body, const model & m, const api_config & cfg) {
    const json o = parse_object(body);
    gen_request r;
    r.ep = ep;
    const tokenizer & tok = m.tok;

    if (const json * v = field(o, "model")) {
        if (!v->is_string()) bad("model", format("'model' must be a string, not %s", v->type_name()));
        const std::string name = v->get<std::string>();
        if (name != cfg.model_id) {
            api_error e;
            e.status = 404;
            e.message = format("The model '%s' does not exist; this server serves '%s'", name.c_str(), cfg.model_id.c_str());
            e.param = "model";
            e.code = "model_not_found";
            throw e;
        }
    }
    if (get_int(o, "n", 1, 128, 1) != 1) bad("n", "'n' must be 1: this server returns one choice per request");
    r.stream = get_bool(o, "stream", false);
    if (const json * so = field(o, "stream_options")) {
        if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
        r.include_usage = get_bool(*so, "include_usage", false);
    }

    // The prompt.
    if (ep == endpoint::CHAT) {
        r.prompt_field = "messages";
        const json * msgs = field(o, "messages");
        if (!msgs) bad("messages", "'messages' is required");
        if (!msgs->is_array() || msgs->empty()) bad("messages", "'messages' must be a non-empty array of messages");
        std::vector<chat_message> conv;
        for (size_t i = 0; i < msgs->size(); ++i) {
            const std::string w = format("messages[%zu]", i);
            const json & mj = (*msgs)[i];
            if (!mj.is_object()) bad(w, format("'%s' must be an object with 'role' and 'content'", w.c_str()));
            const json * role = field(mj, "role");
            if (!role || !role->is_string()) bad(w + ".role", format("'%s.role' must be a string", w.c_str()));
            std::string rs = role->get<std::string>();
            if (rs == "developer") rs = "system";
            if (rs != "system" && rs != "user" && rs != "assistant")
                bad(w + ".role", format("'%s.role' is '%s'; expected system, developer, user or assistant", w.c_str(),
                                        role->get<std::string>().c_str()));
            const json * content = field(mj, "content");
            if (!content) bad(w + ".content", format("'%s.content' is required", w.c_str()));
            conv.push_back({rs, content_text(*content, w + ".content")});
        }
        const std::string text = chat_format(cfg.tmpl, conv, true);
        r.prompt = tok.encode(text, tok.add_bos(), true);
        const std::string marker = chat_end_marker(cfg.tmpl);
        if (!marker.empty()) r.p.stop.push_back(marker);
    } else {
        r.prompt_field = "prompt";
        const json * pr = field(o, "prompt");
        if (!pr) bad("prompt", "'prompt' is required");
        const json * one = pr;
        if (pr->is_array() && pr->size() == 1 && (*pr)[0].is_string()) one = &(*pr)[0];
        if (one->is_string()) {
            r.prompt = tok.encode(one->get<std::string>(), tok.add_bos());
        } else if (pr->is_array() && !pr->empty() && (*pr)[0].is_number_integer()) {
            for (size_t i = 0; i < pr->size(); ++i) {
                const json & t = (*pr)[i];
                if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.n_vocab())
                    bad("prompt", format("'prompt[%zu]' must be a token id in [0, %d)", i, tok.n_vocab()));
                r.prompt.push_back(int32_t(t.get<int64_t>()));
            }
        } else {
            bad("prompt", "'prompt' must be a string, an array of one string or an array of token ids"
                          " (several prompts in one request are not supported)");
        }
    }
    if (r.prompt.empty()) r.prompt.push_back(tok.bos() >= 0 ? tok.bos() : 0);

    // Sampling.
    sampler_params & sp = r.p.sampling;
    sp = cfg.sampling;
    sp.temp = float(get_number(o, "temperature", 0.0, 2.0, sp.temp));
    sp.top_p = float(get_number(o, "top_p", 0.0, 1.0, sp.top_p));
    sp.top_k = int32_t(get_int(o, "top_k", 0, INT32_MAX, sp.top_k));
    sp.min_p = float(get_number(o, "min_p", 0.0, 1.0, sp.min_p));
    sp.presence_penalty = float(get_number(o, "presence_penalty", -2.0, 2.0, sp.presence_penalty));
    sp.frequency_penalty = float(get_number(o, "frequency_penalty", -2.0, 2.0, sp.frequency_penalty));
    if (sp.repeat_last_n == 0 && (sp.presence_penalty != 0.0f || sp.frequency_penalty != 0.0f)) sp.repeat_last_n = 64;
    if (const json * v = field(o, "seed")) {
        if (!v->is_number_integer()) bad("seed", format("'seed' must be an integer, not %s", v->type_name()));
        sp.seed = v->is_number_unsigned() ? v->get<uint64_t>() : uint64_t(v->get<int64_t>());
    }

    if (const json * v = field(o, "stop")) {
        std::vector<std::string> stops;
        if (v->is_string()) stops.push_back(v->get<std::string>());
        else if (v->is_array()) {
            if (v->size() > 16) bad("stop", "'stop' may hold at most 16 strings");
            for (size_t i = 0; i < v->size(); ++i) {
                if (!(*v)[i].is_string()) bad("stop", format("'stop[%zu]' must be a string", i));
                stops.push_back((*v)[i].get<std::string>());
            }
        } else {
            bad("stop", format("'stop' must be a string or an array of strings, not %s", v->type_name()));
        }
        for (std::string & s : stops) {
            if (s.empty()) bad("stop", "'stop' strings must not be empty");
            r.p.stop.push_back(std::move(s));
        }
    }

    if (const json * v = field(o, "logit_bias")) {
        if (!v->is_object()) bad("logit_bias", "'logit_bias' must be an object of token id -> bias");
        for (const auto & [k, b] : v->items()) {
            char * end = nullptr;
            const long id = std::strtol(k.c_str(), &end, 10);
            if (k.empty() || *end || id < 0 || id >= tok.n_vocab())
                bad("logit_bias", format("'logit_bias' key '%s' is not a token id in [0, %d)", k.c_str(), tok.n_vocab()));
            if (!b.is_number() || !(b.get<double>() >= -100.0 && b.get<double>() <= 100.0))
                bad("logit_bias", format("'logit_bias[%s]' must be a number in [-100, 100]", k.c_str()));
            r.p.logit_bias.push_back({int32_t(id), float(b.get<double>())});
        }
    }
    r.p.ignore_eos = get_bool(o, "ignore_eos", false);

    if (ep == endpoint::CHAT) {
        const bool lp = get_bool(o, "logprobs", false);
        const int64_t top = get_int(o, "top_logprobs", 0, 20, -1);
        if (top >= 0 && !lp) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        r.p.logprobs = lp ? int32_t(std::max<int64_t>(top, 0)) : -1;
    } else {
        r.p.logprobs = int32_t(get_int(o, "logprobs", 0, 20, -1));
    }

    // Lengths against the context.
    const int32_t n_prompt = int32_t(r.prompt.size());
    if (n_prompt >= cfg.n_ctx)
        bad(r.prompt_field, format("'%s' is %d tokens; the context holds %d positions per sequence (the server's "
                                   "--ctx-size), so a prompt may have at most %d", r.prompt_field.c_str(), n_prompt,
                                   cfg.n_ctx, cfg.n_ctx - 1));
    const int32_t room = cfg.n_ctx - n_prompt;
    const char * mt = field(o, "max_completion_tokens") && ep == endpoint::CHAT ? "max_completion_tokens" : "max_tokens";
    const int64_t asked = get_int(o, mt, 1, INT32_MAX, -1);
    if (asked > room)
        bad(mt, format("'%s' is %lld, but the prompt's %d tokens leave %d of the context's %d positions", mt,
                       (long long) asked, n_prompt, room, cfg.n_ctx));
    r.p.max_tokens = asked > 0 ? int32_t(asked) : cfg.n_predict > 0 ? std::min(cfg.n_predict, room) : room;
    return r;
}

namespace {

json logprob_content(const token_logprob & t) {
    auto bytes = [](const std::string & s) {
        json b = json::array();
        for (unsigned char c : s) b.push_back(int(c));
        return b;
    };
    auto num = [](float x) { return std::isfinite(x) ? json(double(x)) : json(-9999.0); };
    json top = json::array();
    for (const auto & [text, lp] : t.top)
        top.push_back({{"token", text}, {"logprob", num(lp)}, {"bytes", bytes(text)}});
    return {{"token", t.text}, {"logprob", num(t.logprob)}, {"bytes", bytes(t.text)}, {"top_logprobs", top}};
}

// The logprobs object of tokens [from, to) of j: chat's {"content": [...]}
// or completions' {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
json logprobs_of(endpoint ep, const job & j, size_t from, size_t to, size_t text_offset) {
    if (j.p.logprobs < 0) return nullptr;
    if (ep == endpoint::CHAT) {
        json c = json::array();
        for (size_t i = from; i < to; ++i) c.push_back(logprob_content(j.logprobs[i]));
        return {{"content", c}};
    }
    json toks = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
    size_t off = text_offset;
    for (size_t i = from; i < to; ++i) {
        const token_logprob & t = j.logprobs[i];
        toks.push_back(t.text);
        lps.push_back(std::isfinite(t.logprob) ? double(t.logprob) : -9999.0);
        json top = json::object();
        for (const auto & [text, lp] : t.top) top[text] = std::isfinite(lp) ? double(lp) : -9999.0;
        tops.push_back(top);
        offs.push_back(off);
        off += t.text.size();
    }
    return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

} // namespace

json usage_of(const job & j) {
    const int32_t n_prompt = int32_t(j.prompt.size());
    return {{"prompt_tokens", n_prompt},
            {"completion_tokens", j.n_gen},
            {"total_tokens", n_prompt + j.n_gen},
            {"prompt_tokens_details", {{"cached_tokens", j.n_cached}}}};
}

json completion_response(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                         const job & j) {
    json choice = {{"index", 0}, {"finish_reason", j.finish_reason}};
    choice["logprobs"] = logprobs_of(r.ep, j, 0, j.logprobs.size(), 0);
    if (r.ep == endpoint::CHAT) choice["message"] = {{"role", "assistant"}, {"content", j.text}};
    else choice["text"] = j.text;
    return {{"id", id},
            {"object", r.ep == endpoint::CHAT ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", model_id},
            {"system_fingerprint", "gloas"},
            {"choices", json::array({choice})},
            {"usage", usage_of(j)}};
}

json stream_chunk(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                  const std::string & text, const job & j, size_t lp_from, size_t lp_to, const std::string & finish,
                  bool role) {
    json choice = {{"index", 0}};
    choice["finish_reason"] = finish.empty() ? json(nullptr) : json(finish);
    choice["logprobs"] = lp_to > lp_from ? logprobs_of(r.ep, j, lp_from, lp_to, 0) : json(nullptr);
    if (r.ep == endpoint::CHAT) {
        json delta = json::object();
        if (role) delta["role"] = "assistant";
        if (role || !text.empty()) delta["content"] = text;
        choice["delta"] = delta;
    } else {
        choice["text"] = text;
    }
    json c = {{"id", id},
              {"object", r.ep == endpoint::CHAT ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model_id},
              {"system_fingerprint", "gloas"},
              {"choices", json::array({choice})}};
    if (r.include_usage) c["usage"] = nullptr;
    return c;
}

json usage_chunk(const gen_request & r, const std::string & id, int64_t created, const std::string & model_id,
                 const job & j) {
    return {{"id", id},
            {"object", r.ep == endpoint::CHAT ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model_id},
            {"system_fingerprint", "gloas"},
            {"choices", json::array()},
            {"usage", usage_of(j)}};
}

std::string new_id(endpoint ep) {
    static std::mutex mu;
    static std::mt19937_64 gen{std::random_device{}()};
    uint64_t a, b;
    {
        std::lock_guard<std::mutex> l(mu);
        a = gen();
        b = gen();
    }
    return format("%s-%016llx%08llx", ep == endpoint::CHAT ? "chatcmpl" : "cmpl", (unsigned long long) a,
                  (unsigned long long) (b & 0xffffffffull));
}

} // namespace gloas::server
