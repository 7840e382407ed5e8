// Small pieces the text readers share (the JSON of safetensors.cpp, yaml.cpp,
// the tokenizer's byte pieces): hex digits, UTF-8 encoding and the backslash
// escapes of JSON, which YAML's double-quoted strings also have.
#pragma once

#include <cstdint>
#include <string>

namespace gloas {

// 0..15 for a hex digit (either case), else -1.
inline int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Appends the UTF-8 encoding of code point cp (at most 0x10FFFF).
inline void append_utf8(std::string & out, uint32_t cp) {
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

// The character a JSON one-letter escape stands for (\" \\ \/ \b \f \n \r
// \t: the letter after the backslash), or -1 for any other.
inline int json_escape(char e) {
    switch (e) {
        case '"': return '"';
        case '\\': return '\\';
        case '/': return '/';
        case 'b': return '\b';
        case 'f': return '\f';
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        default: return -1;
    }
}

} // namespace gloas
