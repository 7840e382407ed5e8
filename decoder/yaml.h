// A parser for the subset of YAML that gloas configuration files use.
//
// Accepted:
//   - block mappings nested by indentation (spaces only), `key: value`
//   - block sequences `- item` (an item may itself be a compact mapping,
//     `- name: x` followed by `  size: 3`), also at the indentation of the key
//     that owns them
//   - flow sequences `[a, b, [c]]` and flow mappings `{a: 1, b: [2]}` on one line
//   - scalars: plain, 'single-quoted' ('' is a quote) and "double-quoted"
//     (escapes \\ \" \/ \0 \a \b \t \n \v \f \r \e \xHH \uHHHH \UHHHHHHHH)
//   - comments (`#` at the start of a line or after a space), blank lines, CRLF
//     line ends, a UTF-8 byte-order mark, one leading `---`
// Refused with an error that names the feature: tabs in indentation, anchors
// (&a), aliases (*a), tags (!t), block scalars (| >), complex keys (? k),
// merge keys (<<), directives (%YAML), several documents (a second ---, ...),
// multi-line scalars and flow collections, duplicate keys, control characters,
// nesting deeper than 64 levels.
//
// Scalars keep their text; typing happens when a value is read (as_bool,
// as_int, as_float), following YAML 1.2's core schema for plain scalars:
// true/false (also True, TRUE, ...), decimal integers, decimal floats; ~, null
// and an empty value are null. A quoted scalar is always a string.
//
// Errors throw gloas::error "NAME:LINE: message".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gloas {

enum class yaml_kind { NUL, SCALAR, MAP, SEQ };

struct yaml_entry;

struct yaml_node {
    yaml_kind kind = yaml_kind::NUL;
    int32_t line = 0;                 // 1-based line where the value starts
    std::string text;                 // SCALAR (and a written null): the text, unquoted and unescaped
    bool quoted = false;              // SCALAR written in quotes: a string, never a bool or number
    std::vector<yaml_entry> entries;  // MAP: in file order, keys unique
    std::vector<yaml_node> items;     // SEQ: in file order

    // The value of `key` in a MAP; nullptr if absent or not a MAP.
    const yaml_node * find(const std::string & key) const;

    // Typed reads of a plain SCALAR; nullopt for any other node or text.
    std::optional<bool> as_bool() const;
    std::optional<int64_t> as_int() const;     // decimal, [-+]?[0-9]+, fits int64
    std::optional<double> as_float() const;    // decimal with optional fraction and exponent; finite
    // "a mapping", "a sequence", "null", "a string", "true", "an integer",
    // "a number" ... for error messages.
    std::string describe() const;
};

struct yaml_entry {
    std::string key;
    int32_t line = 0;  // line of the key
    yaml_node value;
};

// Parses a document; `name` (a file name) prefixes error messages. An empty
// document (only comments) is a NUL node.
yaml_node yaml_parse(const std::string & text, const std::string & name);

} // namespace gloas
