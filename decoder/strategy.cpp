#include "decoder/strategy.h"

#include "base/error.h"
#include "base/names.h"

#include <cstdio>

namespace gloas {

namespace {
constexpr enum_name<memory_strategy> STRATEGY_NAMES[] = {
    {memory_strategy::SPEED, "speed"},           {memory_strategy::BALANCED, "balanced"},
    {memory_strategy::AGGRESSIVE, "aggressive"}, {memory_strategy::AUTO, "auto"},
};
} // namespace

const char * memory_strategy_name(memory_strategy s) { return name_of(STRATEGY_NAMES, s); }
bool memory_strategy_from_name(const char * name, memory_strategy * out) {
    return value_of(STRATEGY_NAMES, name, out, true);
}

void apply_strategy(memory_strategy s, context_params & p) {
    GLOAS_ASSERT(s != memory_strategy::AUTO && "resolve AUTO with choose_strategy first");
    struct settings {
        type kv_type;
        float sparse_ratio;
        size_t kv_ram_bytes;
        bool read_copy;
    };
    const settings st = s == memory_strategy::SPEED      ? settings{type::F16, 1.0f, 0, false}
                        : s == memory_strategy::BALANCED ? settings{type::Q8_0, 1.0f, 0, false}
                                                         : settings{type::Q4_KIVI, 0.1f, AGGRESSIVE_KV_RAM_BYTES, true};
    p.kv.kv_type = st.kv_type;
    p.sparse.ratio = st.sparse_ratio;
    p.kv.ram_bytes = st.kv_ram_bytes;
    p.kv.read_copy = st.read_copy;
}

memory_strategy choose_strategy(const model & m, int32_t n_ctx, size_t ram_available, std::string * why) {
    const hparams & hp = m.hp;
    const double per_token_f16 = double(hp.n_layer) * 2.0 * double(hp.n_embd_kv()) * 2.0;
    const double kv_f16 = per_token_f16 * n_ctx;
    const double kv_q8 = kv_f16 * 34.0 / 64.0;
    const double w = double(m.weight_bytes);
    const double budget = double(ram_available) / 2;
    memory_strategy s = memory_strategy::AGGRESSIVE;
    if (ram_available == 0 || w + kv_f16 <= budget) s = memory_strategy::SPEED;
    else if (w + kv_q8 <= budget) s = memory_strategy::BALANCED;
    if (why) {
        auto mib = [](double b) { return b / 1048576.0; };
        *why = format("weights %.0f MiB; K/V for %d positions: %.0f MiB in f16, %.0f MiB in q8_0; half of the %.0f MiB "
                      "of available RAM is %.0f MiB -> %s",
                      mib(w), n_ctx, mib(kv_f16), mib(kv_q8), mib(double(ram_available)), mib(budget), memory_strategy_name(s));
        if (s == memory_strategy::AGGRESSIVE) *why += " (q4_kivi pages, sparse decode; the page file holds what RAM does not)";
    }
    return s;
}

size_t available_ram_bytes() {
    FILE * f = std::fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    std::fclose(f);
    return kb * 1024;
}

} // namespace gloas
