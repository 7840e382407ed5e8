#include "tools/common/run-setup.h"

#include "decoder/chat.h"
#include "decoder/model.h"
#include "base/error.h"
#include "tools/common/cli.h"

#include <cstdio>

namespace gloas::cli {

std::string options_help(const char * head, const option_def * own, size_t n_own, const help_section * sections,
                         size_t n_sections) {
    std::string u = head;
    for (size_t i = 0; i < n_sections; ++i) {
        const help_section & s = sections[i];
        u += std::string("\n") + s.title + ":\n";
        if (s.own) u += options_usage(own, n_own, s.own);
        if (s.shared) u += options_usage(SHARED_OPTIONS, N_SHARED_OPTS, s.shared);
    }
    return u;
}

void parse_options(const std::vector<std::string> & args, const option_def * own, size_t n_own,
                   run_config & flags, std::string & config_path, const own_option_fn & on_own) {
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--config") config_path = args[i + 1];
    if (!config_path.empty()) {
        flags = config_load(config_path);
        flags.warnings.clear();
        flags.given = 0;
    }
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string & a = args[i];
        const option_def * d = option_find(own, n_own, a);
        if (!d) {
            const size_t used = config_apply_flag(flags, args, i);
            if (used == 0) usage_error(format("unknown option '%s'", a.c_str()));
            i += used - 1;
            continue;
        }
        option_value v;
        if (d->kind != opt_kind::SWITCH) {
            if (i + 1 >= args.size()) usage_error(format("%s needs a value (%s)", a.c_str(), d->arg));
            v = option_read(*d, a, args[++i]);
        }
        on_own(*d, a, v);
    }
    config_flags_check(flags);
}

std::string chat_template_arg(const std::string & flag, const std::string & name) {
    chat_template t;
    if (!chat_template_from_name(name, &t))
        usage_error(format("%s: unknown template '%s'; known: %s", flag.c_str(), name.c_str(), chat_template_names().c_str()));
    return name;
}

namespace {

std::string resolve_model(const std::string & name, const char * what) {
    const model_search s = model_find(name);
    if (s.path.empty()) throw error(model_not_found(name, s, what));
    return s.path;
}

} // namespace

void resolve_model_paths(std::string & model_path, std::string & tokenizer_path) {
    if (model_path.empty()) {
        const model_search s = model_find("stories260K");
        if (s.path.empty())
            throw error("no model given (-m) and the default model stories260K was not found: " +
                        model_not_found("stories260K", s) + " (models/fetch.sh --default)");
        model_path = s.path;
    } else {
        model_path = resolve_model(model_path, "model");
    }
    if (!tokenizer_path.empty()) tokenizer_path = resolve_model(tokenizer_path, "tokenizer");
}

context_setup setup_begin(const run_config & flags, const std::string & config_path, const model & m) {
    context_setup s;
    s.strategy_given = flags.flag_given(OPT_STRATEGY);
    if (s.strategy_given) memory_strategy_from_name(flags.strategy.c_str(), &s.strategy);
    if (!config_path.empty()) {
        s.file = std::make_unique<run_config>(config_load(config_path));
        for (const auto & w : s.file->warnings) warning(w);
        config_check_model(*s.file, m.hp, m.path);
        if (!s.strategy_given && !memory_strategy_from_name(s.file->strategy.c_str(), &s.strategy))
            s.strategy = memory_strategy::SPEED;
    }
    return s;
}

void setup_params(context_setup & s, const model & m, int64_t n_ctx, const std::string & kv_dir, bool quiet,
                  context_params & cp) {
    if (s.strategy == memory_strategy::AUTO) {
        std::string why;
        s.strategy = choose_strategy(m, int32_t(n_ctx), available_ram_bytes(), &why);
        if (!quiet) std::fprintf(stderr, "%s: strategy auto: %s\n", prog, why.c_str());
    }
    apply_strategy(s.strategy, cp);
    if (s.file) {
        const context_params fc = config_context_params(*s.file, m.hp, kv_dir);
        const sparse_params sp = cp.sparse;
        const size_t ram = cp.kv.ram_bytes;  // the strategy's; the file has no such keys
        const bool copy = cp.kv.read_copy;
        cp = fc;
        cp.sparse = sp;
        cp.kv.ram_bytes = ram;
        cp.kv.read_copy = copy;
        if (s.file->use_sparse_attention) cp.sparse.ratio = float(s.file->sparse_ratio);
    }
}

} // namespace gloas::cli
