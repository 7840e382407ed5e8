// What the readers of model files (gguf.h, safetensors.h) share: the name
// their messages start with, the mapping their views point into, and the two
// ways to make one, from a path or from bytes in memory.
#pragma once

#include "base/error.h"
#include "tensor/mmap.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace gloas {

// F derives from file_image<F>, befriends it, and has a private default
// constructor and `void parse_all(const uint8_t * data, size_t size)`, which
// throws through fail() on any problem.
template <class F>
class file_image {
public:
    // Maps and parses `path`. Throws gloas::error on any problem.
    static std::unique_ptr<F> open(const std::string & path) {
        mapped_file map(path);
        std::unique_ptr<F> f = parse(map.data(), map.size(), path);
        f->map_ = std::move(map);  // the views into it stay valid
        return f;
    }
    // Parses an in-memory image (fuzzing, tests). `name` is used in messages.
    // The buffer must outlive the result.
    static std::unique_ptr<F> parse(const uint8_t * data, size_t size, const std::string & name) {
        std::unique_ptr<F> f(new F());
        f->name_ = name;
        f->parse_all(data, size);
        return f;
    }

    const std::string & path() const { return name_; }

    // Throws "<file>: <msg>".
    [[noreturn]] void fail(const std::string & msg) const { throw error(name_ + ": " + msg); }

protected:
    file_image() = default;

    std::string name_;
    mapped_file map_;  // empty for a parsed buffer
};

} // namespace gloas
