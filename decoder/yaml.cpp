#include "decoder/yaml.h"

#include "tensor/error.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gloas {

namespace {

constexpr int MAX_DEPTH = 64;

bool is_space(char c) { return c == ' ' || c == '\t'; }

// One non-blank line: its number, indentation (spaces) and the text after it,
// trailing whitespace removed.
struct line_t {
    int32_t no = 0;
    int32_t indent = 0;
    std::string s;
};

bool is_dash(const std::string & s) { return !s.empty() && s[0] == '-' && (s.size() == 1 || is_space(s[1])); }

void append_utf8(std::string & out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xc0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += char(0xe0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    } else {
        out += char(0xf0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3f));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    }
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool is_null_text(const std::string & t) { return t.empty() || t == "~" || t == "null" || t == "Null" || t == "NULL"; }

// Printable form of a text for messages: at most 40 bytes, control bytes escaped.
std::string shown(const std::string & t) {
    std::string r;
    for (size_t i = 0; i < t.size() && i < 40; ++i) {
        const unsigned char c = static_cast<unsigned char>(t[i]);
        if (c < 0x20 || c == 0x7f) r += format("\\x%02x", c);
        else r += char(c);
    }
    if (t.size() > 40) r += "...";
    return r;
}

class parser {
public:
    parser(const std::string & text, const std::string & name) : name_(name) { split(text); }

    yaml_node document() {
        if (lines_.empty()) return yaml_node{};
        yaml_node root = block(lines_[0].indent, 0);
        if (i_ < lines_.size()) {
            const line_t & l = lines_[i_];
            fail(l.no, format("bad indentation: %d spaces here, but the document's top level has %d",
                              l.indent, lines_[0].indent));
        }
        return root;
    }

private:
    const std::string & name_;
    std::vector<line_t> lines_;
    size_t i_ = 0;

    [[noreturn]] void fail(int32_t line, const std::string & msg) const {
        throw error(format("%s:%d: %s", name_.c_str(), line, msg.c_str()));
    }

    void split(const std::string & text) {
        size_t pos = 0;
        if (text.compare(0, 3, "\xef\xbb\xbf") == 0) pos = 3;  // UTF-8 byte-order mark
        int32_t no = 0;
        bool content_seen = false;
        while (pos < text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            std::string raw = text.substr(pos, end - pos);
            pos = end + 1;
            ++no;
            if (!raw.empty() && raw.back() == '\r') raw.pop_back();
            for (char c : raw) {
                const unsigned char u = static_cast<unsigned char>(c);
                if ((u < 0x20 && c != '\t') || u == 0x7f)
                    fail(no, format("control character 0x%02x is not allowed", u));
            }
            size_t ind = 0;
            while (ind < raw.size() && raw[ind] == ' ') ++ind;
            size_t first = ind;
            while (first < raw.size() && is_space(raw[first])) ++first;
            if (first == raw.size() || raw[first] == '#') continue;  // blank or comment
            if (first != ind) fail(no, "tab character in indentation (indent with spaces)");
            size_t last = raw.size();
            while (last > first && is_space(raw[last - 1])) --last;
            std::string s = raw.substr(first, last - first);
            if (ind == 0 && s[0] == '%') fail(no, "directives (%YAML, %TAG) are not supported");
            if (ind == 0 && s.compare(0, 3, "---") == 0 && (s.size() == 3 || is_space(s[3]))) {
                size_t r = 3;
                while (r < s.size() && is_space(s[r])) ++r;
                if (content_seen) fail(no, "multiple documents ('---') are not supported");
                if (r < s.size() && s[r] != '#') fail(no, "content on the '---' line is not supported");
                content_seen = true;
                continue;
            }
            if (ind == 0 && s.compare(0, 3, "...") == 0 && (s.size() == 3 || is_space(s[3])))
                fail(no, "document end markers ('...') are not supported");
            content_seen = true;
            lines_.push_back({no, int32_t(ind), std::move(s)});
        }
    }

    void check_depth(int depth, int32_t line) const {
        if (depth > MAX_DEPTH) fail(line, format("nesting deeper than %d levels", MAX_DEPTH));
    }

    // The node whose first line is lines_[i_], indented by `indent`.
    yaml_node block(int32_t indent, int depth) {
        const line_t & l = lines_[i_];
        check_depth(depth, l.no);
        if (is_dash(l.s)) return sequence(indent, depth);
        std::string key;
        size_t after = 0;
        if (split_key(l.s, l.no, &key, &after)) return mapping(indent, depth);
        // A lone value (a scalar or flow collection on its own line).
        yaml_node v = inline_value(l.s, 0, l.no, depth);
        ++i_;
        return v;
    }

    yaml_node mapping(int32_t indent, int depth) {
        yaml_node m;
        m.kind = yaml_kind::MAP;
        m.line = lines_[i_].no;
        int32_t child = -1;  // indentation of the last value's nested block
        while (i_ < lines_.size()) {
            const line_t & l = lines_[i_];
            if (l.indent < indent) break;
            if (l.indent > indent && child > l.indent)
                fail(l.no, format("bad indentation: %d spaces, but the levels around are indented %d and %d", l.indent,
                                  indent, child));
            if (l.indent > indent) fail(l.no, format("bad indentation: %d spaces, expected %d", l.indent, indent));
            child = -1;
            if (is_dash(l.s)) fail(l.no, "a sequence item ('- ') where a mapping key was expected");
            std::string key;
            size_t after = 0;
            if (!split_key(l.s, l.no, &key, &after))
                fail(l.no, format("expected 'key: value', got '%s'", shown(l.s).c_str()));
            for (const yaml_entry & e : m.entries)
                if (e.key == key) fail(l.no, format("duplicate key '%s' (first at line %d)", shown(key).c_str(), e.line));
            yaml_entry e;
            e.key = std::move(key);
            e.line = l.no;
            const int32_t no = l.no;
            const std::string rest = l.s.substr(after);
            ++i_;
            if (rest.empty() || rest[0] == '#') {
                if (i_ < lines_.size() && lines_[i_].indent > indent) {
                    child = lines_[i_].indent;
                    e.value = block(child, depth + 1);
                } else if (i_ < lines_.size() && lines_[i_].indent == indent && is_dash(lines_[i_].s)) {
                    e.value = sequence(indent, depth + 1);
                } else {
                    e.value.line = no;  // an empty value: null
                }
            } else {
                if (is_dash(rest)) fail(no, "a block sequence cannot start on the line of its key");
                e.value = inline_value(rest, 0, no, depth + 1);
            }
            m.entries.push_back(std::move(e));
        }
        return m;
    }

    yaml_node sequence(int32_t indent, int depth) {
        yaml_node q;
        q.kind = yaml_kind::SEQ;
        q.line = lines_[i_].no;
        while (i_ < lines_.size() && lines_[i_].indent == indent && is_dash(lines_[i_].s)) {
            line_t & l = lines_[i_];
            check_depth(depth + 1, l.no);
            size_t k = 1;
            while (k < l.s.size() && is_space(l.s[k])) ++k;
            if (k == l.s.size() || l.s[k] == '#') {
                const int32_t no = l.no;
                ++i_;
                if (i_ < lines_.size() && lines_[i_].indent > indent) {
                    q.items.push_back(block(lines_[i_].indent, depth + 1));
                } else {
                    yaml_node nul;
                    nul.line = no;
                    q.items.push_back(std::move(nul));
                }
            } else {
                // "- rest": rest is a node indented to its own column.
                if (l.s[k - 1] == '\t' || l.s[1] == '\t') fail(l.no, "tab character after '-' (use spaces)");
                l.indent += int32_t(k);
                l.s = l.s.substr(k);
                q.items.push_back(block(l.indent, depth + 1));
            }
        }
        if (i_ < lines_.size() && lines_[i_].indent > indent)
            fail(lines_[i_].no, format("bad indentation: %d spaces, expected %d", lines_[i_].indent, indent));
        return q;
    }

    // If s (a line's text) starts with "key:" followed by a space or the end,
    // sets *key and *after (the position of the value, spaces skipped).
    bool split_key(const std::string & s, int32_t no, std::string * key, size_t * after) {
        size_t p = 0;
        if (s[0] == '[' || s[0] == '{') return false;
        if (s[0] == '"' || s[0] == '\'') {
            std::string k = quoted(s, p, no);
            size_t q = p;
            while (q < s.size() && is_space(s[q])) ++q;
            if (q < s.size() && s[q] == ':' && (q + 1 == s.size() || is_space(s[q + 1]))) {
                *key = std::move(k);
                p = q + 1;
            } else {
                return false;
            }
        } else {
            size_t j = 0;
            for (; j < s.size(); ++j) {
                if (s[j] == '#' && j > 0 && is_space(s[j - 1])) return false;
                if (s[j] == ':' && (j + 1 == s.size() || is_space(s[j + 1]))) break;
            }
            if (j == s.size()) return false;
            size_t e = j;
            while (e > 0 && is_space(s[e - 1])) --e;
            std::string k = s.substr(0, e);
            if (k.empty()) fail(no, "empty mapping key");
            if (k == "<<") fail(no, "merge keys ('<<') are not supported");
            check_plain(k, no);
            *key = std::move(k);
            p = j + 1;
        }
        while (p < s.size() && is_space(s[p])) ++p;
        *after = p;
        return true;
    }

    // Refuses plain scalars that start with an indicator YAML reserves.
    void check_plain(const std::string & t, int32_t no) const {
        switch (t[0]) {
            case '&': fail(no, "anchors ('&') are not supported");
            case '*': fail(no, "aliases ('*') are not supported");
            case '!': fail(no, "tags ('!') are not supported");
            case '|':
            case '>': fail(no, "block scalars ('|', '>') are not supported");
            case '%':
            case '@':
            case '`': fail(no, format("a plain value cannot start with '%c' (quote it)", t[0]));
            case '?':
                if (t.size() == 1 || is_space(t[1])) fail(no, "complex keys ('? ') are not supported");
                break;
            default: break;
        }
    }

    // A quoted scalar starting at s[p] (a quote); p moves past the closing quote.
    std::string quoted(const std::string & s, size_t & p, int32_t no) const {
        const char q = s[p++];
        std::string out;
        for (;;) {
            if (p >= s.size()) fail(no, "unterminated quoted string (quoted strings must end on their line)");
            const char c = s[p++];
            if (q == '\'') {
                if (c == '\'') {
                    if (p < s.size() && s[p] == '\'') { out += '\''; ++p; continue; }
                    return out;
                }
                out += c;
                continue;
            }
            if (c == '"') return out;
            if (c != '\\') { out += c; continue; }
            if (p >= s.size()) fail(no, "unterminated quoted string (quoted strings must end on their line)");
            const char e = s[p++];
            // YAML's one-character escapes: ESC[i] stands for CHR[i].
            static constexpr char ESC[] = "\\\"/ 0abt\tnvfre";
            static constexpr char CHR[] = "\\\"/ \0\a\b\t\t\n\v\f\r\x1b";
            const char * at = e ? std::strchr(ESC, e) : nullptr;
            const int n_hex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
            if (at) out += CHR[at - ESC];
            else if (!n_hex) fail(no, format("unknown escape '\\%s' in a double-quoted string", shown(std::string(1, e)).c_str()));
            if (n_hex) {
                uint32_t cp = 0;
                for (int k = 0; k < n_hex; ++k) {
                    const int h = p < s.size() ? hex_value(s[p]) : -1;
                    if (h < 0) fail(no, format("escape '\\%c' needs %d hex digits", e, n_hex));
                    cp = cp * 16 + uint32_t(h);
                    ++p;
                }
                if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                    fail(no, format("escape U+%X is not a Unicode scalar value", cp));
                append_utf8(out, cp);
            }
        }
    }

    // What may follow a value on its line: spaces and a comment.
    void expect_end(const std::string & s, size_t p, int32_t no) const {
        while (p < s.size() && is_space(s[p])) ++p;
        if (p < s.size() && s[p] != '#')
            fail(no, format("unexpected text after the value: '%s'", shown(s.substr(p)).c_str()));
        if (p < s.size() && p > 0 && !is_space(s[p - 1])) fail(no, "a comment needs a space before '#'");
    }

    // A value on the rest of a line, from s[p]: a quoted or plain scalar or a
    // flow collection; nothing but a comment may follow.
    yaml_node inline_value(const std::string & s, size_t p, int32_t no, int depth) {
        check_depth(depth, no);
        yaml_node v;
        v.line = no;
        if (s[p] == '[' || s[p] == '{') {
            v = flow(s, p, no, depth);
            expect_end(s, p, no);
            return v;
        }
        if (s[p] == '"' || s[p] == '\'') {
            v.kind = yaml_kind::SCALAR;
            v.quoted = true;
            v.text = quoted(s, p, no);
            expect_end(s, p, no);
            return v;
        }
        size_t e = p;
        for (; e < s.size(); ++e) {
            if (s[e] == '#' && e > p && is_space(s[e - 1])) break;
            if (s[e] == ':' && (e + 1 == s.size() || is_space(s[e + 1])))
                fail(no, "a mapping ('key: value') cannot start inside a value on the same line");
        }
        while (e > p && is_space(s[e - 1])) --e;
        v.text = s.substr(p, e - p);
        check_plain(v.text, no);
        if (is_dash(v.text)) fail(no, "a block sequence cannot start here");
        v.kind = is_null_text(v.text) ? yaml_kind::NUL : yaml_kind::SCALAR;
        return v;
    }

    // A flow sequence or mapping starting at s[p]; p moves past its end.
    yaml_node flow(const std::string & s, size_t & p, int32_t no, int depth) {
        check_depth(depth, no);
        const char open = s[p++];
        const char close = open == '[' ? ']' : '}';
        yaml_node c;
        c.kind = open == '[' ? yaml_kind::SEQ : yaml_kind::MAP;
        c.line = no;
        auto skip = [&] { while (p < s.size() && is_space(s[p])) ++p; };
        auto unterminated = [&] {
            fail(no, format("unterminated flow %s (it must close on its line)", open == '[' ? "sequence" : "mapping"));
        };
        skip();
        if (p < s.size() && s[p] == close) { ++p; return c; }
        for (;;) {
            skip();
            if (p >= s.size()) unterminated();
            if (c.kind == yaml_kind::SEQ) {
                c.items.push_back(flow_value(s, p, no, depth + 1, false));
            } else {
                yaml_node k = flow_value(s, p, no, depth + 1, true);
                if (k.kind != yaml_kind::SCALAR) fail(no, "flow mapping keys must be scalars");
                skip();
                if (p >= s.size()) unterminated();
                if (s[p] != ':') fail(no, format("expected ':' after the key '%s' in a flow mapping", shown(k.text).c_str()));
                ++p;
                skip();
                for (const yaml_entry & e : c.entries)
                    if (e.key == k.text) fail(no, format("duplicate key '%s' (first at line %d)", shown(k.text).c_str(), e.line));
                yaml_entry e;
                e.key = std::move(k.text);
                e.line = no;
                if (p < s.size() && (s[p] == ',' || s[p] == close)) e.value.line = no;  // {a: } is null
                else e.value = flow_value(s, p, no, depth + 1, false);
                c.entries.push_back(std::move(e));
            }
            skip();
            if (p >= s.size()) unterminated();
            if (s[p] == ',') {
                ++p;
                skip();
                if (p < s.size() && s[p] == close) { ++p; return c; }  // trailing comma
                continue;
            }
            if (s[p] == close) { ++p; return c; }
            fail(no, format("expected ',' or '%c' in a flow collection, got '%c'", close, s[p]));
        }
    }

    // A scalar or nested collection inside a flow collection.
    yaml_node flow_value(const std::string & s, size_t & p, int32_t no, int depth, bool is_key) {
        yaml_node v;
        v.line = no;
        if (s[p] == '[' || s[p] == '{') return flow(s, p, no, depth);
        if (s[p] == '"' || s[p] == '\'') {
            v.kind = yaml_kind::SCALAR;
            v.quoted = true;
            v.text = quoted(s, p, no);
            return v;
        }
        const size_t b = p;
        for (; p < s.size(); ++p) {
            const char c = s[p];
            if (c == ',' || c == ']' || c == '}' || c == '[' || c == '{') break;
            if (c == '#' && p > b && is_space(s[p - 1])) break;
            if (c == ':' && (p + 1 == s.size() || is_space(s[p + 1]) || s[p + 1] == ',' || s[p + 1] == ']' ||
                             s[p + 1] == '}')) {
                if (is_key) break;
                fail(no, "a mapping ('key: value') inside a flow sequence is not supported (use {key: value})");
            }
        }
        if (p < s.size() && (s[p] == '[' || s[p] == '{')) fail(no, format("unexpected '%c' inside a flow value", s[p]));
        size_t e = p;
        while (e > b && is_space(s[e - 1])) --e;
        v.text = s.substr(b, e - b);
        if (v.text.empty()) fail(no, "empty entry in a flow collection");
        check_plain(v.text, no);
        v.kind = is_null_text(v.text) ? yaml_kind::NUL : yaml_kind::SCALAR;
        return v;
    }
};

} // namespace

const yaml_node * yaml_node::find(const std::string & key) const {
    if (kind != yaml_kind::MAP) return nullptr;
    for (const yaml_entry & e : entries)
        if (e.key == key) return &e.value;
    return nullptr;
}

std::optional<bool> yaml_node::as_bool() const {
    if (kind != yaml_kind::SCALAR || quoted) return std::nullopt;
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    return std::nullopt;
}

std::optional<int64_t> yaml_node::as_int() const {
    if (kind != yaml_kind::SCALAR || quoted || text.empty()) return std::nullopt;
    size_t i = (text[0] == '-' || text[0] == '+') ? 1 : 0;
    if (i == text.size()) return std::nullopt;
    for (size_t k = i; k < text.size(); ++k)
        if (text[k] < '0' || text[k] > '9') return std::nullopt;
    errno = 0;
    const long long v = std::strtoll(text.c_str(), nullptr, 10);
    if (errno == ERANGE) return std::nullopt;
    return int64_t(v);
}

std::optional<double> yaml_node::as_float() const {
    if (kind != yaml_kind::SCALAR || quoted || text.empty()) return std::nullopt;
    // [-+]? (digits [. digits?] | . digits) ([eE] [-+]? digits)?
    size_t i = 0;
    if (text[i] == '-' || text[i] == '+') ++i;
    size_t digits = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') { ++i; ++digits; }
    if (i < text.size() && text[i] == '.') {
        ++i;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') { ++i; ++digits; }
    }
    if (digits == 0) return std::nullopt;
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
        size_t ed = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') { ++i; ++ed; }
        if (ed == 0) return std::nullopt;
    }
    if (i != text.size()) return std::nullopt;
    const double v = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(v)) return std::nullopt;
    return v;
}

std::string yaml_node::describe() const {
    switch (kind) {
        case yaml_kind::NUL: return "null";
        case yaml_kind::MAP: return "a mapping";
        case yaml_kind::SEQ: return "a sequence";
        case yaml_kind::SCALAR: break;
    }
    if (quoted) return format("the string \"%s\"", shown(text).c_str());
    if (as_bool()) return format("'%s' (a boolean)", text.c_str());
    if (as_int()) return format("'%s' (an integer)", text.c_str());
    if (as_float()) return format("'%s' (a number)", text.c_str());
    return format("'%s'", shown(text).c_str());
}

yaml_node yaml_parse(const std::string & text, const std::string & name) {
    parser p(text, name);
    return p.document();
}



} // namespace gloas
