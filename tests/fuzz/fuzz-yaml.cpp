// Fuzz target for the YAML subset parser and the run configuration.
//
// Input: the bytes of a configuration file. yaml_parse must return a tree or
// throw gloas::error (never crash or hang); every node's line must lie in the
// input and every typed read must agree with the text. config_parse must then
// give a run_config or throw gloas::error, and the settings it gives must be
// in their documented ranges; config_to_yaml of them must parse back into a
// config that writes the same text.
#include "decoder/config.h"
#include "decoder/yaml.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace {

void check_node(const gloas::yaml_node & n, int32_t n_lines) {
    if (n.line < 0 || n.line > n_lines) __builtin_trap();
    if (n.kind != gloas::yaml_kind::SCALAR && n.quoted) __builtin_trap();
    if (n.as_int() && !n.as_float()) __builtin_trap();  // every integer is a number
    if (n.as_bool() && n.as_float()) __builtin_trap();
    (void) n.describe();
    for (const gloas::yaml_entry & e : n.entries) {
        if (e.line < 1 || e.line > n_lines) __builtin_trap();
        if (n.find(e.key) != &e.value) __builtin_trap();  // keys are unique
        check_node(e.value, n_lines);
    }
    for (const gloas::yaml_node & i : n.items) check_node(i, n_lines);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    int32_t n_lines = 1;
    for (char c : text) n_lines += c == '\n';
    try {
        const gloas::yaml_node root = gloas::yaml_parse(text, "fuzz.yaml");
        check_node(root, n_lines);
    } catch (const gloas::error &) {
    }
    try {
        const gloas::run_config c = gloas::config_parse(text, "fuzz.yaml");
        if (c.ctx.n_ctx < 0 || c.ctx.n_ubatch < 1 || c.ctx.n_threads < 0 || c.ctx.kv.page_tokens < 1) __builtin_trap();
        if (!(c.ctx.kv.compressed_share > 0 && c.ctx.kv.compressed_share <= 1)) __builtin_trap();
        if (!(c.sparse_ratio > 0 && c.sparse_ratio <= 1)) __builtin_trap();
        bool any = false;
        for (bool b : c.policy_enabled) any |= b;
        if (!any || !c.policy_enabled[int(c.ctx.kv.policy)]) __builtin_trap();
        // The settings written back read back the same.
        const std::string y = gloas::config_to_yaml(c);
        try {
            const gloas::run_config back = gloas::config_parse(y, "back.yaml");
            if (gloas::config_to_yaml(back) != y || !back.warnings.empty()) __builtin_trap();
        } catch (const gloas::error &) {
            __builtin_trap();
        }
        try {
            (void) gloas::config_random_model_shape(c);
        } catch (const gloas::error &) {
        }
    } catch (const gloas::error &) {
    }
    return 0;
}
