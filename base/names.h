// Names of enum values, as tables: one row per value, read both ways.
//
//   constexpr enum_name<evict_policy> POLICY_NAMES[] = {{evict_policy::LRU, "lru"}, ...};
//   name_of(POLICY_NAMES, p)                  // "lru", or "?" for a value not in the table
//   value_of(POLICY_NAMES, "lru", &p)         // true and p set; false for an unknown (or null) name
#pragma once

#include <cstddef>
#include <cstring>
#include <strings.h>

namespace gloas {

template <class E>
struct enum_name {
    E value;
    const char * name;
};

template <class E, size_t N>
const char * name_of(const enum_name<E> (&table)[N], E v) {
    for (const enum_name<E> & e : table)
        if (e.value == v) return e.name;
    return "?";
}

// `out` may be null (a check only); ignore_case compares ASCII letters
// without case.
template <class E, size_t N>
bool value_of(const enum_name<E> (&table)[N], const char * name, E * out, bool ignore_case = false) {
    if (!name) return false;
    for (const enum_name<E> & e : table)
        if ((ignore_case ? strcasecmp(name, e.name) : std::strcmp(name, e.name)) == 0) {
            if (out) *out = e.value;
            return true;
        }
    return false;
}

} // namespace gloas
