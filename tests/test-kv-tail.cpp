// Tails: a prompt's partial last page kept in the K/V store (kv-store.h,
// "Tails"), so that a repeated prompt prefills only its last token and a
// prompt sharing some of those tokens reuses them; the output never changes.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "kvcache/kv-store.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

constexpr int32_t P = 32;

std::unique_ptr<model> load_stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

std::string story_text(size_t bytes) {
    std::string s = test::read_file(test::require_data("tinystories-valid-excerpt.txt"));
    return s.substr(0, std::min(bytes, s.size()));
}

context_params kv_params(const std::string & dir) {
    context_params cp;
    cp.kv.kv_type = type::Q8_0;
    cp.kv.dir = dir;
    cp.kv.page_tokens = P;
    return cp;
}

// Greedy continuation of `prompt`: the ids of `n` generated tokens.
std::vector<int32_t> greedy(context & ctx, const std::vector<int32_t> & prompt, int n) {
    sampler_params sp;
    sp.temp = 0.0f;
    sampler smp(sp, ctx.get_model().hp.n_vocab);
    std::vector<int32_t> out;
    const float * logits = ctx.eval_prompt(prompt.data(), int32_t(prompt.size()));
    for (int i = 0; i < n; ++i) {
        const int32_t next = smp.sample(logits);
        out.push_back(next);
        if (i + 1 < n) logits = ctx.eval(&next, 1);
    }
    return out;
}

// The same without any store: the reference.
std::vector<int32_t> cold(const model & m, const std::vector<int32_t> & prompt, int n) {
    context ctx(m, kv_params(""));
    return greedy(ctx, prompt, n);
}

// "(R reused from the K/V store, F prefilled)" of gloas's stderr.
bool reused_prefilled(const std::string & err, int * reused, int * prefilled) {
    const size_t at = err.find(" reused from the K/V store, ");
    if (at == std::string::npos) return false;
    const size_t open = err.rfind('(', at);
    return open != std::string::npos &&
           std::sscanf(err.c_str() + open, "(%d reused from the K/V store, %d prefilled)", reused, prefilled) == 2;
}

// A store of a small geometry whose tails take several pieces.
page_geometry small_geometry() {
    page_geometry g;
    g.page_tokens = P;
    g.n_layer = 2;
    g.n_head_kv = 2;
    g.head_dim = 8;
    return g;
}

kv_store_params small_params(const std::string & dir) {
    kv_store_params p;
    p.dir = dir;
    p.kv_type = type::Q8_0;
    p.page_tokens = P;
    return p;
}

// An open page's rows (n_rows, P) of made-up values.
std::vector<float> page_rows(const page_geometry & g, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    std::vector<float> rows(size_t(g.n_rows()) * P);
    for (float & x : rows) x = u(rng);
    return rows;
}

// Whether the first n columns of every row of a and b are equal.
bool same_columns(const page_geometry & g, const std::vector<float> & a, const std::vector<float> & b, int32_t n) {
    for (int64_t r = 0; r < g.n_rows(); ++r)
        if (std::memcmp(a.data() + r * P, b.data() + r * P, size_t(n) * sizeof(float)) != 0) return false;
    return true;
}

} // namespace

TEST_CASE("a repeated prompt in a new process prefills nothing and prints the cold run's text") {
    const std::string dir = test::temp_dir("kv-tail-proc");
    const std::string model = test::require_model("stories260K.bin");
    const std::string prompt = story_text(900);
    auto m = load_stories();
    const int32_t n = int32_t(m->tok.encode(prompt, true).size());
    REQUIRE(n % P > 1);
    const std::vector<std::string> base = {"-m", model, "--temp", "0", "-t", "1", "--kv-type", "q8_0", "-n", "40"};
    auto ref = test::run_tool("gloas", test::with_args(base, {"--kv-dir", "none", "-p", prompt}));
    REQUIRE(ref.status == 0);
    int reused = -1, prefilled = -1;
    for (int run = 0; run < 3; ++run) {
        auto r = test::run_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", prompt}));
        INFO("run " << run << ": " << r.err);
        REQUIRE(r.status == 0);
        CHECK(r.out == ref.out);
        REQUIRE(reused_prefilled(r.err, &reused, &prefilled));
        CHECK(reused + prefilled == n);
        CHECK(prefilled == (run == 0 ? n : 0));  // the last token's logits are stored too
    }
    // A prompt that ends inside the first page has a tail too.
    const std::string shortp = story_text(40);
    auto ref_s = test::run_tool("gloas", test::with_args(base, {"--kv-dir", "none", "-p", shortp}));
    const int32_t ns = int32_t(m->tok.encode(shortp, true).size());
    REQUIRE(ns < P);
    for (int run = 0; run < 2; ++run) {
        auto r = test::run_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", shortp}));
        REQUIRE(r.status == 0);
        CHECK(r.out == ref_s.out);
        REQUIRE(reused_prefilled(r.err, &reused, &prefilled));
        CHECK(prefilled == (run == 0 ? ns : 0));
    }
}

TEST_CASE("a prompt extending a stored tail, or sharing part of it, reuses those tokens") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-tail-extend");
    const std::vector<int32_t> text = m->tok.encode(story_text(1500), true);
    REQUIRE(text.size() > 400);
    // A: ends 20 tokens into its last page.
    const std::vector<int32_t> a(text.begin(), text.begin() + 10 * P + 20);
    {
        context ctx(*m, kv_params(dir));
        CHECK(greedy(ctx, a, 20) == cold(*m, a, 20));
        CHECK(ctx.store().stored_tails() == 1);
        CHECK(ctx.store().metrics().tails_written == 1);
    }
    SUBCASE("extended within the tail's page and past it") {
        // Each prompt extends the last one: it reuses all of it.
        int32_t stored = int32_t(a.size());
        for (int32_t extra : {2, 5, 40}) {
            const std::vector<int32_t> b(text.begin(), text.begin() + int32_t(a.size()) + extra);
            context ctx(*m, kv_params(dir));
            INFO("extra " << extra);
            CHECK(greedy(ctx, b, 20) == cold(*m, b, 20));
            CHECK(ctx.n_reused() == stored);
            CHECK(ctx.store().metrics().tails_hit == 1);
            stored = int32_t(b.size());
        }
        // Each prompt's tail holds its last token's logits, so none replaced
        // another: A's, A + 2's and A + 5's in page 10, A + 40's in page 11.
        context ctx(*m, kv_params(dir));
        CHECK(ctx.store().stored_tails() == 4);
    }
    SUBCASE("sharing part of the tail, then different tokens") {
        std::vector<int32_t> b(a.begin(), a.end() - 8);
        const int32_t shared = int32_t(b.size());
        for (int i = 0; i < 12; ++i) b.push_back(text[size_t(100 + i)]);
        REQUIRE(b[size_t(shared)] != a[size_t(shared)]);
        context ctx(*m, kv_params(dir));
        CHECK(greedy(ctx, b, 20) == cold(*m, b, 20));
        CHECK(ctx.n_reused() == shared);
        // Both tails stay: neither extends the other.
        CHECK(ctx.store().stored_tails() == 2);
    }
    SUBCASE("a prefix of the prompt that ends inside the tail") {
        const std::vector<int32_t> b(a.begin(), a.end() - 6);
        context ctx(*m, kv_params(dir));
        CHECK(greedy(ctx, b, 20) == cold(*m, b, 20));
        CHECK(ctx.n_reused() == int32_t(b.size()) - 1);
    }
    SUBCASE("a prompt diverging at the tail's first token takes nothing from it") {
        std::vector<int32_t> b(a.begin(), a.begin() + 10 * P);
        b.push_back(text[300]);
        b.push_back(text[301]);
        REQUIRE(b[10 * P] != a[10 * P]);
        context ctx(*m, kv_params(dir));
        CHECK(greedy(ctx, b, 20) == cold(*m, b, 20));
        CHECK(ctx.n_reused() == 10 * P);
        CHECK(ctx.store().metrics().tails_hit == 0);
    }
    SUBCASE("tails off: full pages only") {
        context_params cp = kv_params(dir);
        cp.kv.keep_tails = false;
        context ctx(*m, cp);
        CHECK(greedy(ctx, a, 20) == cold(*m, a, 20));
        CHECK(ctx.n_reused() == 10 * P);
    }
}

TEST_CASE("a prefill in many chunks stores one tail, the prompt's, when decoding starts or the sequence ends") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-tail-chunks");
    const std::vector<int32_t> text = m->tok.encode(story_text(1500), true);
    const std::vector<int32_t> a(text.begin(), text.begin() + 6 * P + 11);
    context_params cp = kv_params(dir);
    cp.n_ubatch = 7;  // chunks end inside pages: only the last one's tail is kept
    {
        context ctx(*m, cp);
        ctx.eval_prompt(a.data(), int32_t(a.size()));
        CHECK(ctx.store().metrics().tails_written == 0);  // not yet: off the time to first token
        const int32_t next = 5;
        ctx.eval(&next, 1);
        CHECK(ctx.store().metrics().tails_written == 1);
        CHECK(ctx.store().stored_tails() == 1);
    }
    const std::vector<int32_t> b(text.begin(), text.begin() + 9 * P + 3);
    {
        context ctx(*m, cp);
        ctx.eval_prompt(b.data(), int32_t(b.size()));
        CHECK(ctx.n_reused() == 6 * P + 11);
        ctx.reset();  // the sequence ends: its tail is stored
        CHECK(ctx.store().metrics().tails_written == 1);
        CHECK(ctx.store().stored_tails() == 2);
    }
    context ctx(*m, kv_params(dir));
    CHECK(greedy(ctx, b, 10) == cold(*m, b, 10));
    CHECK(ctx.n_reused() == int32_t(b.size()));
}

TEST_CASE("the same prompt again: no forward pass, and the cold run's logits bit for bit") {
    auto m = load_stories();
    const std::vector<int32_t> text = m->tok.encode(story_text(1500), true);
    const int64_t V = m->hp.n_vocab;
    for (int32_t n : {7, 4 * P + 19}) {
        INFO("prompt of " << n << " tokens");
        const std::string dir = test::temp_dir("kv-tail-logits");
        const std::vector<int32_t> a(text.begin(), text.begin() + n);
        std::vector<std::vector<float>> want;
        {
            context ctx(*m, kv_params(dir));
            const float * l = ctx.eval_prompt(a.data(), n);
            CHECK(ctx.n_reused() == 0);
            for (int32_t i = 0; i < 4; ++i) {
                want.emplace_back(l, l + V);
                const int32_t next = text[size_t(n + i)];
                l = ctx.eval(&next, 1);
            }
        }
        context ctx(*m, kv_params(dir));
        const float * l = ctx.eval_prompt(a.data(), n);
        CHECK(ctx.n_reused() == n);
        CHECK(ctx.n_past() == n);
        for (int32_t i = 0; i < 4; ++i) {
            CHECK(std::memcmp(l, want[size_t(i)].data(), size_t(V) * sizeof(float)) == 0);
            const int32_t next = text[size_t(n + i)];
            l = ctx.eval(&next, 1);
        }
        // A prompt one token shorter: the tail's tokens but the logits are not its.
        context ctx2(*m, kv_params(dir));
        ctx2.eval_prompt(a.data(), n - 1);
        CHECK(ctx2.n_reused() == n - 2);
    }
}

TEST_CASE("tails in the store: exact values, the longest shared run, pieces, damage, eviction") {
    const page_geometry g = small_geometry();
    const std::string dir = test::temp_dir("kv-tail-store");
    std::vector<int32_t> toks(P);
    for (int32_t i = 0; i < P; ++i) toks[size_t(i)] = 1000 + i;
    const uint64_t parent = page_hash(PREFIX_SEED, toks.data(), P);
    const std::vector<float> rows = page_rows(g, 1);
    std::vector<float> got(rows.size(), 0.0f);
    {
        kv_store st(small_params(dir), g, 42);
        REQUIRE(st.tail_pieces(31) > 2);  // this geometry's tails take several slots
        CHECK(st.take_tail(parent, toks.data(), 31, got.data(), P) == 0);
        REQUIRE(st.put_tail(parent, toks.data(), 12, rows.data(), P));
        CHECK(st.put_tail(parent, toks.data(), 12, rows.data(), P));  // stored already: nothing new
        CHECK(st.metrics().tails_written == 1);
        CHECK(st.stored_bytes() == size_t(st.tail_pieces(12)) * st.page_bytes());
        CHECK(st.stored_pages() == 0);
        // Another tail of the same parent diverging at token 5.
        std::vector<int32_t> other = toks;
        other[5] = 7;
        const std::vector<float> rows2 = page_rows(g, 2);
        REQUIRE(st.put_tail(parent, other.data(), 25, rows2.data(), P));
        CHECK(st.stored_tails() == 2);
        // The longest shared run wins, capped at n.
        CHECK(st.take_tail(parent, toks.data(), 31, got.data(), P) == 12);
        CHECK(same_columns(g, got, rows, 12));
        CHECK(st.take_tail(parent, other.data(), 20, got.data(), P) == 20);
        CHECK(same_columns(g, got, rows2, 20));
        CHECK(st.take_tail(PREFIX_SEED, toks.data(), 31, got.data(), P) == 0);  // another parent
        // A tail extending the first replaces it.
        const std::vector<float> rows3 = page_rows(g, 3);
        REQUIRE(st.put_tail(parent, toks.data(), 30, rows3.data(), P));
        CHECK(st.stored_tails() == 2);
        CHECK(st.take_tail(parent, toks.data(), 31, got.data(), P) == 30);
        CHECK(same_columns(g, got, rows3, 30));
        CHECK(st.metrics().pages_evicted == 0);
    }
    {
        // A new store on the folder finds both; a flipped byte in a piece is
        // caught and that tail dropped for everyone.
        kv_store st(small_params(dir), g, 42);
        CHECK(st.take_tail(parent, toks.data(), 31, got.data(), P) == 30);
        CHECK(same_columns(g, got, page_rows(g, 3), 30));
        CHECK(st.stored_tails() == 2);
        const std::string path = st.path();
        page_file_header h;
        const int fd = ::open(path.c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        REQUIRE(::pread(fd, &h, sizeof h, 0) == ssize_t(sizeof h));
        bool flipped = false;
        for (uint64_t s = 0; s < h.slots_used && !flipped; ++s) {
            slot_entry e;
            REQUIRE(::pread(fd, &e, sizeof e, off_t(h.table_offset + s * sizeof e)) == ssize_t(sizeof e));
            if (e.state != uint32_t(slot_state::READY) || e.n_pieces == 0 || e.piece != 1 || e.n_tokens != 30) continue;
            const off_t at = off_t(h.data_offset + s * h.slot_stride + 100);
            uint8_t b = 0;
            REQUIRE(::pread(fd, &b, 1, at) == 1);
            b ^= 0x40;
            REQUIRE(::pwrite(fd, &b, 1, at) == 1);
            flipped = true;
        }
        ::close(fd);
        REQUIRE(flipped);
        kv_store st2(small_params(dir), g, 42);
        CHECK(st2.take_tail(parent, toks.data(), 31, got.data(), P) == 0);
        CHECK(st2.metrics().pages_corrupt == 1);
        CHECK(st2.take_notices().find("failed its checksum") != std::string::npos);
        CHECK(st2.stored_tails() == 1);
        // The other store sees it gone: the other tail shares 5 tokens.
        CHECK(st.take_tail(parent, toks.data(), 31, got.data(), P) == 5);
    }
    {
        // Capacity: tails are evicted whole, and the store stays within it.
        const std::string dir2 = test::temp_dir("kv-tail-cap");
        kv_store_params p = small_params(dir2);
        kv_store probe(small_params(""), g, 42);
        const int32_t k = probe.tail_pieces(31);
        p.capacity_bytes = size_t(3 * k) * probe.page_bytes();  // room for 3 tails
        kv_store st(p, g, 42);
        const size_t cap = p.capacity_bytes;
        for (int32_t i = 0; i < 8; ++i) {
            std::vector<int32_t> t = toks;
            t[0] = 5000 + i;
            REQUIRE(st.put_tail(parent, t.data(), 31, page_rows(g, uint32_t(10 + i)).data(), P));
            CHECK(st.stored_bytes() <= cap);
            CHECK(st.stored_bytes() % (size_t(k) * st.page_bytes()) == 0);  // whole tails only
        }
        CHECK(st.metrics().pages_evicted > 0);
        std::vector<int32_t> last = toks;
        last[0] = 5007;
        CHECK(st.take_tail(parent, last.data(), 31, got.data(), P) == 31);
        CHECK(same_columns(g, got, page_rows(g, 17), 31));
        kv_store again(p, g, 42);
        CHECK(again.take_notices().find("damaged") == std::string::npos);
        CHECK(again.stored_tails() == st.stored_tails());
    }
}

TEST_CASE("a writer killed while storing a tail leaves nothing served, and nothing lost") {
    const page_geometry g = small_geometry();
    std::vector<int32_t> toks(P);
    for (int32_t i = 0; i < P; ++i) toks[size_t(i)] = 2000 + i;
    const uint64_t parent = page_hash(PREFIX_SEED, toks.data(), P);
    const std::vector<float> rows = page_rows(g, 5);
    const int32_t k = kv_store(small_params(""), g, 42).tail_pieces(29);
    REQUIRE(k > 2);
    // Steps [0, k): piece i's data written; k + j: j + 1 pieces published (piece 0 last).
    for (int32_t step = 0; step < 2 * k; ++step) {
        const std::string dir = test::temp_dir("kv-tail-kill");
        INFO("killed at step " << step);
        {
            // A full page stored before, which must survive.
            kv_store st(small_params(dir), g, 42);
            page_ref r = st.begin_page();
            std::memset(const_cast<uint8_t *>(r.data), 3, st.page_bytes());
            st.publish(r.slot, parent, PREFIX_SEED, P);
            st.flush();
            st.release(r.slot);
        }
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            kv_store_params p = small_params(dir);
            p.on_tail_step = [step](int32_t s) {
                if (s == step) ::kill(::getpid(), SIGKILL);
            };
            kv_store st(p, g, 42);
            st.put_tail(parent, toks.data(), 29, rows.data(), P);
            ::_exit(0);
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        REQUIRE(WIFSIGNALED(status));
        kv_store st(small_params(dir), g, 42);
        std::vector<float> got(rows.size(), 0.0f);
        const int32_t n = st.take_tail(parent, toks.data(), 29, got.data(), P);
        // Killed before piece 0 was published: nothing; after: all of it, exact.
        CHECK(n == (step == 2 * k - 1 ? 29 : 0));
        if (n > 0) CHECK(same_columns(g, got, rows, n));
        // The pieces of the dead writer's tail are freed, the full page kept.
        CHECK(st.stored_bytes() == (n > 0 ? size_t(k + 1) : size_t(1)) * st.page_bytes());
        page_ref full;
        CHECK(st.acquire(parent, &full));
        st.release(full.slot);
        // And the tail can be stored again.
        REQUIRE(st.put_tail(parent, toks.data(), 29, rows.data(), P));
        CHECK(st.take_tail(parent, toks.data(), 29, got.data(), P) == 29);
        CHECK(same_columns(g, got, rows, 29));
    }
}

TEST_CASE("processes: two at once on one folder, then each prompt prefills nothing") {
    const std::string dir = test::temp_dir("kv-tail-two");
    const std::string model = test::require_model("stories260K.bin");
    const std::string prompt = story_text(900);
    const std::string longer = prompt + " The end was near.";
    const std::vector<std::string> base = {"-m", model, "--temp", "0", "-t", "1", "--kv-type", "q8_0", "-n", "40"};
    auto ref_a = test::run_tool("gloas", test::with_args(base, {"--kv-dir", "none", "-p", prompt}));
    auto ref_b = test::run_tool("gloas", test::with_args(base, {"--kv-dir", "none", "-p", longer}));
    REQUIRE(ref_a.status == 0);
    REQUIRE(ref_b.status == 0);
    for (int round = 0; round < 2; ++round) {
        const int a = test::spawn_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", prompt}), dir + "/a.out", dir + "/a.err");
        const int b = test::spawn_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", longer}), dir + "/b.out", dir + "/b.err");
        const int c = test::spawn_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", prompt}), dir + "/c.out", dir + "/c.err");
        CHECK(test::wait_tool(a) == 0);
        CHECK(test::wait_tool(b) == 0);
        CHECK(test::wait_tool(c) == 0);
        CHECK(test::read_file(dir + "/a.out") == ref_a.out);
        CHECK(test::read_file(dir + "/b.out") == ref_b.out);
        CHECK(test::read_file(dir + "/c.out") == ref_a.out);
    }
    for (const std::string & p : {prompt, longer}) {
        auto r = test::run_tool("gloas", test::with_args(base, {"--kv-dir", dir, "-p", p}));
        REQUIRE(r.status == 0);
        CHECK(r.out == (p == prompt ? ref_a.out : ref_b.out));
        int reused = -1, prefilled = -1;
        REQUIRE(reused_prefilled(r.err, &reused, &prefilled));
        CHECK(prefilled == 0);
        CHECK(r.err.find("damaged") == std::string::npos);
    }
}
