// Fuzz target for the command line's number and size parsers: the
// --kv-capacity / --kv-ram size syntax (parse_kv_capacity, then resolved to
// bytes by kv_capacity_bytes for a page size) and the flags every gloas tool
// shares with --config (config_apply_flag: integers, ratios, sizes, names;
// config_apply_list for gloas-bench's comma lists),
// then the configuration they make (config_to_yaml, whose text, when it
// parses, must write back the same, comments aside on the first trip since
// they say which flag set a value; and config_context_params for a small
// model).
//
// Input: the arguments, separated by NUL bytes. Each is also read as a size.
// A bad value must throw gloas::error "FLAG: message"; anything else
// escaping, a crash or a sanitizer report is a bug.
//
// tools/common/cli.h's parse_int ends the process on a bad value (exit status 2,
// a usage message), so it is not fuzzed in-process here; the flags gloas
// reads through config_apply_flag are.
#include "decoder/config.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::vector<std::string> args(1);
    for (size_t i = 0; i < size; ++i) {
        if (data[i] == 0) args.emplace_back();
        else args.back() += char(data[i]);
    }
    for (const std::string & a : args) {
        try {
            const gloas::kv_capacity c = gloas::parse_kv_capacity("--kv-capacity", a);
            for (int32_t page : {1, 32, 4096}) (void) gloas::kv_capacity_bytes(c, size_t(page) * 1024, page, 1);
        } catch (const gloas::error &) {
        }
    }
    // The flags as comma lists, as gloas-bench reads them: each element as one value.
    for (size_t i = 0; i + 1 < args.size(); ++i) {
        const gloas::option_def * d = gloas::option_find(gloas::SHARED_OPTIONS, gloas::N_SHARED_OPTS, args[i]);
        if (!d || d->kind == gloas::opt_kind::SWITCH) continue;
        try {
            if (gloas::config_apply_list(gloas::run_config(), args, i).empty()) __builtin_trap();
        } catch (const gloas::error &) {
        }
    }
    gloas::run_config cfg;
    try {
        for (size_t i = 0; i < args.size();) {
            const size_t used = gloas::config_apply_flag(cfg, args, i);
            if (used > args.size() - i) __builtin_trap();
            i += used ? used : 1;
        }
    } catch (const gloas::error &) {
        return 0;
    }
    const std::string yaml = gloas::config_to_yaml(cfg);
    // Flags are checked one at a time; their combination (a page size that
    // is no multiple of the K/V type's block) only when the settings are
    // used, so the text may be refused. Text that parses must write back the
    // same.
    std::string again;
    try {
        again = gloas::config_to_yaml(gloas::config_parse(yaml, "fuzz.yaml"));
    } catch (const gloas::error &) {
    }
    if (!again.empty()) {
        try {
            if (gloas::config_to_yaml(gloas::config_parse(again, "fuzz.yaml")) != again) __builtin_trap();
        } catch (const gloas::error &) {
            __builtin_trap();
        }
    }
    // stories260K's shape: vocabulary, context, width, FFN, heads, KV heads, layers, head size, rotary dims
    const gloas::hparams hp{512, 512, 64, 172, 8, 4, 5, 8, 8};
    try {
        (void) gloas::config_context_params(cfg, hp, "/nonexistent-kv-dir");
    } catch (const gloas::error &) {
    }
    return 0;
}
