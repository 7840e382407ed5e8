// A deterministic stand-in for libFuzzer, linked with any fuzz target
// (tests/fuzz/fuzz-*.cpp defines LLVMFuzzerTestOneInput) in builds without
// -fsanitize=fuzzer, so ctest runs every target as a short smoke test.
//
// Usage: fuzz-<name> SEED_DIR [MAX_RUNS]
// Runs every file in SEED_DIR as is, then mutations of them (bit flips, bytes
// set to 0 / 0xff / random, truncations, inserted / duplicated / deleted
// chunks, u32 and u64 fields set to boundary values), 1 to 4 stacked per run,
// drawn from a fixed-seed generator: the same binary always runs the same
// inputs. Stops after MAX_RUNS runs (default 20000, 4000 under ASan;
// $GLOAS_FUZZ_RUNS also sets it) or 10 seconds, whichever comes first, and
// prints how many ran. A crash, sanitizer report or escaping exception fails
// the run; with $GLOAS_FUZZ_SAVE set, each input is first written to
// ./fuzz-crash-input so the one that failed can be replayed. A target's
// LLVMFuzzerInitialize, if it has one, runs first, as under libFuzzer (a
// target that needs a missing file exits 77 there: skipped).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <iterator>
#include <string>
#include <sys/stat.h>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int * argc, char *** argv);

#if defined(__SANITIZE_ADDRESS__)
#define GLOAS_SMOKE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GLOAS_SMOKE_ASAN 1
#endif
#endif

namespace {

struct rng {
    uint64_t s;
    uint64_t next() {  // splitmix64
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
};

std::vector<std::vector<uint8_t>> read_seeds(const std::string & dir, std::vector<std::string> & names) {
    std::vector<std::vector<uint8_t>> seeds;
    DIR * d = opendir(dir.c_str());
    if (!d) return seeds;
    while (dirent * e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        names.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());  // readdir order is not stable across machines
    std::vector<std::string> kept;
    for (const auto & p : names) {
        struct stat st;
        if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        FILE * f = std::fopen(p.c_str(), "rb");
        if (!f) continue;
        std::vector<uint8_t> b(size_t(st.st_size));
        size_t n = b.empty() ? 0 : std::fread(b.data(), 1, b.size(), f);
        std::fclose(f);
        b.resize(n);
        seeds.push_back(std::move(b));
        kept.push_back(p);
    }
    names = kept;
    return seeds;
}

void save_input(const std::vector<uint8_t> & b) {
    FILE * f = std::fopen("fuzz-crash-input", "wb");
    if (!f) return;
    if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
}

template <class T> void put_at(std::vector<uint8_t> & b, size_t at, T v) {
    if (b.size() < sizeof(T)) return;
    at = std::min(at, b.size() - sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof v);
}

void mutate(std::vector<uint8_t> & b, rng & r) {
    static const uint64_t huge64[] = {0, 1, 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull,
                                      1ull << 60, 1ull << 40, 1ull << 32, 0xffffffffull, 0xfffffffffffffff0ull};
    static const uint32_t odd32[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 30, 31, 99, 0x7fffffff, 0x80000000u,
                                     0xffffffffu, 64, 1000};
    const size_t n = b.size();
    // Offsets near the start hold the headers most mutations should hit.
    const size_t at = (r.next() & 1) && n > 0 ? r.below(std::min<size_t>(n, 512)) : r.below(n);
    switch (r.below(11)) {
        case 0: if (n) b[at] ^= uint8_t(1u << r.below(8)); break;
        case 1: if (n) b[at] = 0; break;
        case 2: if (n) b[at] = 0xff; break;
        case 3: if (n) b[at] = uint8_t(r.next()); break;
        case 4: b.resize(r.below(n + 1)); break;
        case 5: {  // insert a copy of another chunk
            const size_t from = r.below(n), len = std::min<size_t>(r.below(64) + 1, n - from);
            std::vector<uint8_t> chunk(b.begin() + std::ptrdiff_t(from), b.begin() + std::ptrdiff_t(from + len));
            b.insert(b.begin() + std::ptrdiff_t(r.below(n + 1)), chunk.begin(), chunk.end());
            break;
        }
        case 6: {  // duplicate a chunk in place
            const size_t len = std::min<size_t>(r.below(32) + 1, n - at);
            std::vector<uint8_t> chunk(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(at + len));
            b.insert(b.begin() + std::ptrdiff_t(at), chunk.begin(), chunk.end());
            break;
        }
        case 7: {  // delete a chunk
            const size_t len = std::min<size_t>(r.below(32) + 1, n - at);
            b.erase(b.begin() + std::ptrdiff_t(at), b.begin() + std::ptrdiff_t(at + len));
            break;
        }
        case 8: put_at<uint64_t>(b, (r.next() & 1) ? at & ~size_t(7) : at, huge64[r.below(std::size(huge64))]); break;
        case 9: put_at<uint32_t>(b, (r.next() & 1) ? at & ~size_t(3) : at, odd32[r.below(std::size(odd32))]); break;
        default: {  // insert random bytes
            const size_t len = r.below(16) + 1;
            std::vector<uint8_t> chunk;
            for (size_t k = 0; k < len; ++k) chunk.push_back(uint8_t(r.next()));
            b.insert(b.begin() + std::ptrdiff_t(r.below(n + 1)), chunk.begin(), chunk.end());
            break;
        }
    }
}

} // namespace

int main(int argc, char ** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s SEED_DIR [MAX_RUNS]\n", argv[0]);
        return 2;
    }
#if defined(GLOAS_SMOKE_ASAN)
    long max_runs = 4000;
#else
    long max_runs = 20000;
#endif
    if (const char * env = std::getenv("GLOAS_FUZZ_RUNS")) max_runs = std::atol(env);
    if (argc >= 3) max_runs = std::atol(argv[2]);
    const bool save = std::getenv("GLOAS_FUZZ_SAVE") != nullptr;
    const double max_seconds = 10.0;
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);

    std::vector<std::string> names;
    auto seeds = read_seeds(argv[1], names);
    if (seeds.empty()) {
        std::fprintf(stderr, "%s: no seed files in %s\n", argv[0], argv[1]);
        return 1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    long runs = 0;
    for (size_t i = 0; i < seeds.size(); ++i) {
        if (save) save_input(seeds[i]);
        LLVMFuzzerTestOneInput(seeds[i].data(), seeds[i].size());
        ++runs;
    }
    LLVMFuzzerTestOneInput(nullptr, 0);
    ++runs;

    rng r{0x676c6f6173ull};  // fixed seed: the same inputs every time
    std::vector<uint8_t> input;
    while (runs < max_runs) {
        if ((runs & 63) == 0) {
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (el > max_seconds) break;
        }
        input = seeds[r.below(seeds.size())];
        const size_t n_mut = 1 + r.below(4);
        for (size_t m = 0; m < n_mut; ++m) mutate(input, r);
        if (save) save_input(input);
        // A copy of exactly the input's size, so ASan sees reads past its end.
        std::vector<uint8_t> exact(input);
        LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
        ++runs;
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %zu seeds, %ld runs in %.1f s\n", argv[0], seeds.size(), runs, el);
    return 0;
}
