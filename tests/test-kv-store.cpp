// The K/V store through the decoder: pages of every type against the goldens,
// prefix reuse, persistence, damage, capacity.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "kvcache/kv-store.h"
#include "base/error.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <dirent.h>
#include <csignal>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

std::unique_ptr<model> load_stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

std::string golden(const std::string & name) { return test::read_file(test::data_file("golden/" + name)); }

context_params kv_params(type t, const std::string & dir, int32_t page = 32) {
    context_params cp;
    cp.kv.kv_type = t;
    cp.kv.dir = dir;
    cp.kv.page_tokens = page;
    return cp;
}

std::string greedy(context & ctx, const std::string & prompt, int steps) {
    return test::generate_like_llama2c(ctx, prompt, steps);
}

std::string story_text(size_t bytes) {
    std::string s = test::read_file(test::require_data("tinystories-valid-excerpt.txt"));
    return s.substr(0, std::min(bytes, s.size()));
}

// The file in `dir` whose name contains `part` (empty if none).
std::string only_file(const std::string & dir, const std::string & part) {
    std::string found;
    if (DIR * d = ::opendir(dir.c_str())) {
        while (struct dirent * e = ::readdir(d))
            if (std::strstr(e->d_name, part.c_str())) found = dir + "/" + e->d_name;
        ::closedir(d);
    }
    return found;
}

} // namespace

TEST_CASE("F32, F16 and Q8_0 pages give the golden text; Q4_0 stays close") {
    auto m = load_stories();
    const std::string want = golden("stories260K_greedy_n128_once_upon_a_time.txt");
    for (type t : {type::F32, type::F16, type::Q8_0}) {
        context ctx(*m, kv_params(t, ""));
        INFO("kv type " << type_name(t));
        CHECK(greedy(ctx, "Once upon a time", 128) == want);
    }
    context f32(*m, kv_params(type::F32, ""));
    CHECK(greedy(f32, "", 200) == golden("stories260K_greedy_n200_noprompt.txt"));

    // Q4_0: top-1 agreement with F32 pages over a real text, teacher-forced.
    const std::vector<int32_t> toks = m->tok.encode(story_text(2500), true);
    REQUIRE(toks.size() > 300);
    context a(*m, kv_params(type::F32, ""));
    context b(*m, kv_params(type::Q4_0, ""));
    test::top1_agreement same;
    for (size_t i = 0; i + 1 < std::min<size_t>(toks.size(), 500); ++i) {
        const int32_t ta = test::top_token(a.eval(&toks[i], 1), m->hp.n_vocab);
        same.add(ta, test::top_token(b.eval(&toks[i], 1), m->hp.n_vocab));
    }
    same.check("Q4_0 pages", "F32 pages", 0.90);
}

TEST_CASE("pages work for every page size and chunking") {
    auto m = load_stories();
    const std::string want = golden("stories260K_greedy_n128_once_upon_a_time.txt");
    for (int32_t page : {16, 32, 64}) {
        for (int32_t ub : {1, 5, 512}) {
            context_params cp = kv_params(type::F32, "", page);
            cp.n_ubatch = ub;
            context ctx(*m, cp);
            INFO("page " << page << " ubatch " << ub);
            CHECK(greedy(ctx, "Once upon a time", 128) == want);
        }
    }
    // Quantized pages: chunking does not change a single logit's argmax.
    const std::vector<int32_t> toks = m->tok.encode(story_text(600), true);
    std::vector<float> ref;
    for (int32_t ub : {512, 7, 1}) {
        context_params cp = kv_params(type::Q8_0, "");
        cp.n_ubatch = ub;
        context ctx(*m, cp);
        const float * l = ctx.eval(toks.data(), int32_t(toks.size()));
        if (ref.empty()) ref.assign(l, l + m->hp.n_vocab);
        double d = 0;
        for (int i = 0; i < m->hp.n_vocab; ++i) d = std::max(d, double(std::fabs(l[i] - ref[size_t(i)])));
        INFO("ubatch " << ub);
        CHECK(d < 1e-3);
    }
}

TEST_CASE("a prompt's full pages are reused by the next sequence and the next store") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-reuse");
    const std::string prompt = story_text(700);
    const std::vector<int32_t> toks = m->tok.encode(prompt, true);
    const int32_t n_full = (int32_t(toks.size()) - 1) / 32;
    REQUIRE(n_full >= 3);

    std::string first;
    {
        context ctx(*m, kv_params(type::Q8_0, dir));
        first = greedy(ctx, prompt, int(toks.size()) + 40);
        CHECK(ctx.n_reused() == 0);
        CHECK(ctx.store().metrics().pages_missed == uint64_t(n_full));
        // The same context again: every full prompt page comes from the store,
        // and the partial last page (its tail) with the last token's logits.
        ctx.reset();
        CHECK(greedy(ctx, prompt, int(toks.size()) + 40) == first);
        CHECK(ctx.n_reused() == int32_t(toks.size()));
        CHECK(ctx.store().metrics().pages_hit == uint64_t(n_full));
    }
    {
        // A new store on the same folder (as a new process would open it).
        context ctx(*m, kv_params(type::Q8_0, dir));
        CHECK(greedy(ctx, prompt, int(toks.size()) + 40) == first);
        CHECK(ctx.n_reused() == int32_t(toks.size()));
        CHECK(ctx.store().metrics().pages_hit == uint64_t(n_full));
        CHECK(ctx.store().metrics().pages_missed == 0);

        // A prompt sharing only its first 2 pages (and a bit) reuses exactly 2.
        std::vector<int32_t> other(toks.begin(), toks.begin() + 70);
        other.push_back(m->tok.encode(" zebra", false)[0]);
        for (int i = 0; i < 60; ++i) other.push_back(toks[size_t(10 + i)]);
        ctx.reset();
        ctx.eval_prompt(other.data(), int32_t(other.size()));
        CHECK(ctx.n_reused() == 64);
    }
}

TEST_CASE("a damaged page is detected and recomputed; damaged files are set aside") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-damage");
    const std::string prompt = story_text(700);
    const std::vector<int32_t> toks = m->tok.encode(prompt, true);
    std::string want;
    {
        context ctx(*m, kv_params(type::Q8_0, dir));
        want = greedy(ctx, prompt, int(toks.size()) + 30);
    }
    const std::string path = only_file(dir, ".kv");
    REQUIRE(!path.empty());

    SUBCASE("flipped bytes inside a page") {
        {
            // Slot 1's data: data_offset + 1 x stride + a bit.
            page_file_header h;
            int fd = ::open(path.c_str(), O_RDWR);
            REQUIRE(fd >= 0);
            REQUIRE(::pread(fd, &h, sizeof h, 0) == ssize_t(sizeof h));
            const off_t at = off_t(h.data_offset + h.slot_stride + 100);
            uint8_t b = 0;
            REQUIRE(::pread(fd, &b, 1, at) == 1);
            b ^= 0x5a;
            REQUIRE(::pwrite(fd, &b, 1, at) == 1);
            ::close(fd);
        }
        context ctx(*m, kv_params(type::Q8_0, dir));
        CHECK(greedy(ctx, prompt, int(toks.size()) + 30) == want);
        CHECK(ctx.store().metrics().pages_corrupt == 1);
        CHECK(ctx.n_reused() == 32);  // the chain stops at the bad page
        CHECK(ctx.store().take_notices().find("checksum") != std::string::npos);
    }
    SUBCASE("a truncated file") {
        struct stat st;
        REQUIRE(::stat(path.c_str(), &st) == 0);
        REQUIRE(::truncate(path.c_str(), st.st_size / 2) == 0);
        context ctx(*m, kv_params(type::Q8_0, dir));
        CHECK(greedy(ctx, prompt, int(toks.size()) + 30) == want);
    }
    SUBCASE("a header of another version") {
        int fd = ::open(path.c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        const uint32_t v = 99;
        REQUIRE(::pwrite(fd, &v, 4, 8) == 4);
        ::close(fd);
        context ctx(*m, kv_params(type::Q8_0, dir));
        const std::string notes = ctx.store().take_notices();
        CHECK(notes.find("version 99") != std::string::npos);
        CHECK(notes.find("set aside") != std::string::npos);
        CHECK(greedy(ctx, prompt, int(toks.size()) + 30) == want);
        CHECK(ctx.n_reused() == 0);
        CHECK(!only_file(dir, ".bad-").empty());
    }
}

TEST_CASE("capacity bounds the store whatever the policy") {
    auto m = load_stories();
    const std::string text = story_text(6000);
    for (evict_policy pol : {evict_policy::LRU, evict_policy::LFU, evict_policy::FIFO, evict_policy::ADAPTIVE,
                             evict_policy::COMPRESSED}) {
        INFO("policy " << evict_policy_name(pol));
        context_params cp = kv_params(type::Q8_0, "");
        cp.kv.policy = pol;
        page_geometry pg(32, m->hp);
        cp.kv.capacity_bytes = 24 * pg.page_bytes(type::Q8_0);
        context ctx(*m, cp);
        for (int r = 0; r < 6; ++r) {
            std::vector<int32_t> toks = m->tok.encode(text.substr(size_t(r) * 700, 1200), true);
            toks.resize(std::min<size_t>(toks.size(), 300));
            ctx.reset();
            ctx.eval_prompt(toks.data(), int32_t(toks.size()));
            ctx.store().flush();
            // Pages past it with every stored page in use stay with their sequence, in memory.
            CHECK(ctx.store().stored_bytes() <= cp.kv.capacity_bytes);
        }
        ctx.reset();
        ctx.store().flush();
        CHECK(ctx.store().stored_bytes() <= cp.kv.capacity_bytes);
        CHECK(ctx.store().metrics().pages_evicted + ctx.store().metrics().pages_compressed > 0);
    }
}

TEST_CASE("K/V bytes per token against F16, at TinyLlama's shape") {
    // 22 layers, 4 KV heads of 64: the page sizes the store really allocates
    // (slot stride) plus the slot table entry.
    const page_geometry g{32, 22, 4, 64};
    auto per_token = [&](type t) { return double((g.page_bytes(t) + 63) / 64 * 64 + sizeof(slot_entry)) / g.page_tokens; };
    const double f16 = per_token(type::F16);
    MESSAGE("bytes per token: f16 " << f16 << ", q8_0 " << per_token(type::Q8_0) << ", q4_0 " << per_token(type::Q4_0));
    CHECK(per_token(type::Q8_0) / f16 <= 0.54);
    CHECK(per_token(type::Q4_0) / f16 <= 0.29);
}

TEST_CASE("processes: reuse across runs, a killed writer, two writers at once") {
    const std::string dir = test::temp_dir("kv-proc");
    const std::string prompt = story_text(900);
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                           "--kv-type", "q8_0", "--kv-dir", dir, "-p", prompt};
    auto args = [&](const std::vector<std::string> & extra) { return test::with_args(base, extra); };
    // A reference without any store.
    auto ref = test::run_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                        "--kv-type", "q8_0", "--kv-dir", "none", "-p", prompt, "-n", "60"});
    REQUIRE(ref.status == 0);

    auto first = test::run_gloas_like(ref, args({"-n", "60"}));
    CHECK(first.err.find(" 0 hit") != std::string::npos);
    auto second = test::run_gloas_like(ref, args({"-n", "60"}));
    CHECK(second.err.find(" 0 missed") != std::string::npos);
    CHECK(second.err.find("reused from the K/V store") != std::string::npos);

    // SIGKILL a writer in the middle of a long generation, then use the store.
    const std::string other = story_text(1300).substr(900);
    const int pid = test::spawn_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                               "--kv-type", "q8_0", "--kv-dir", dir, "-p", other, "-n", "100000",
                                               "--ignore-eos", "-c", "8192"},
                                     dir + "/killed.out", dir + "/killed.err");
    ::usleep(400 * 1000);
    ::kill(pid, SIGKILL);
    CHECK(test::wait_tool(pid) == 128 + SIGKILL);
    test::run_gloas_like(ref, args({"-n", "60"}));

    // Two processes on the same folder at once, different prompts sharing a prefix.
    const int a = test::spawn_tool("gloas", args({"-n", "80"}), dir + "/a.out", dir + "/a.err");
    const int b = test::spawn_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                             "--kv-type", "q8_0", "--kv-dir", dir, "-p", prompt + " The end.", "-n", "40"},
                                   dir + "/b.out", dir + "/b.err");
    CHECK(test::wait_tool(a) == 0);
    CHECK(test::wait_tool(b) == 0);
    auto ref_a = test::run_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                          "--kv-type", "q8_0", "--kv-dir", "none", "-p", prompt, "-n", "80"});
    auto ref_b = test::run_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                          "--kv-type", "q8_0", "--kv-dir", "none", "-p", prompt + " The end.", "-n", "40"});
    CHECK(test::read_file(dir + "/a.out") == ref_a.out);
    CHECK(test::read_file(dir + "/b.out") == ref_b.out);
}

// Two stores on one folder stand for two processes: the slot locks belong to
// each store's open file.
TEST_CASE("a page one store evicts is gone for the other, even when the evicting store then finds no room") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-evict-seen");
    const page_geometry g(32, m->hp);
    kv_store_params pa;
    pa.dir = dir;
    kv_store a(pa, g, m->fingerprint);
    const int32_t P = g.page_tokens;
    const uint64_t hashes[4] = {11, 12, 13, 14};
    for (int i = 0; i < 4; ++i) {
        const page_ref r = a.begin_page();
        REQUIRE(kv_store::in_file(r.slot));
        std::memset(const_cast<uint8_t *>(r.data), 1 + i, a.page_bytes());
        a.publish(r.slot, hashes[i], i == 0 ? 0 : hashes[i - 1], P);
        a.release(r.slot);
    }
    // b may keep two pages and holds the first two: its new page evicts the
    // other two and then, still past its capacity, goes to memory.
    kv_store_params pb = pa;
    pb.capacity_bytes = 2 * a.page_bytes();
    kv_store b(pb, g, m->fingerprint);
    page_ref held[2];
    REQUIRE(b.acquire(hashes[0], &held[0]));
    REQUIRE(b.acquire(hashes[1], &held[1]));
    const page_ref extra = b.begin_page();
    CHECK_FALSE(kv_store::in_file(extra.slot));
    CHECK(b.take_notices().find("capacity") != std::string::npos);
    page_ref r;
    CHECK_FALSE(a.acquire(hashes[2], &r));
    CHECK_FALSE(a.acquire(hashes[3], &r));
    REQUIRE(a.acquire(hashes[0], &r));
    CHECK(r.slot == held[0].slot);
    a.release(r.slot);
    // A slot marked free while this store alone holds its page (a damaged
    // table) is not handed out to this store again: its own lock on the slot
    // would not stop it.
    b.release(held[1].slot);
    REQUIRE(a.acquire(hashes[1], &r));
    const int fd = ::open(a.path().c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const uint32_t free_state = uint32_t(slot_state::FREE);
    REQUIRE(::pwrite(fd, &free_state, sizeof free_state,
                     off_t(PAGE_FILE_HEADER_BYTES + uint64_t(r.slot) * sizeof(slot_entry) + offsetof(slot_entry, state))) ==
            ssize_t(sizeof free_state));
    ::close(fd);
    {
        kv_store c(pa, g, m->fingerprint);  // any change by another store makes the others read the table again
        c.abandon(c.begin_page().slot);
    }
    const page_ref n1 = a.begin_page();
    CHECK(n1.slot != r.slot);
    a.abandon(n1.slot);
    a.release(r.slot);
    b.abandon(extra.slot);
    b.release(held[0].slot);
}

TEST_CASE("a RAM budget bounds the resident pages, and the output does not change") {
    // One thread: hundreds of single-token passes of a tiny model would spend
    // their time waking OpenMP workers.
    const int saved_threads = ops::n_threads();
    ops::set_n_threads(1);
    auto m = load_stories();
    const std::string dir = test::temp_dir("kv-ram");
    const std::vector<int32_t> toks = m->tok.encode(story_text(2500), true);
    REQUIRE(toks.size() > 450);
    const int32_t n = 450;
    const size_t os = page_file::os_page_bytes();

    // Reference: unbounded, pages in memory.
    std::vector<float> ref;
    {
        context ctx(*m, kv_params(type::Q8_0, ""));
        for (int32_t i = 0; i < n; ++i) {
            const float * l = ctx.eval(&toks[size_t(i)], 1);
            ref.insert(ref.end(), l, l + m->hp.n_vocab);
        }
    }
    const page_geometry pg(32, m->hp);
    const size_t slot = (pg.page_bytes(type::Q8_0) + 63) / 64 * 64;
    context_params cp = kv_params(type::Q8_0, dir);
    // Room for the header and the slot table's first pages (the kernel maps
    // 64 KiB around a first touch) and the two pages a pass may be writing;
    // the 14 sealed pages of 450 tokens (about 150 KiB) do not fit.
    const size_t map_budget = std::max<size_t>(65536, 2 * os) + 2 * (slot + 2 * os);
    size_t fixed = 0;
    {
        context probe(*m, kv_params(type::Q8_0, ""));
        fixed = probe.store().fixed_ram_bytes();
    }
    REQUIRE(fixed > 0);
    cp.kv.ram_bytes = map_budget;  // the fixed buffers are not counted (kv-store.h)
    {
        context ctx(*m, cp);
        CHECK(ctx.store().fixed_ram_bytes() == fixed);
        size_t most = 0;
        bool same = true;
        for (int32_t i = 0; i < n; ++i) {
            const float * l = ctx.eval(&toks[size_t(i)], 1);
            same = same && std::memcmp(l, ref.data() + size_t(i) * size_t(m->hp.n_vocab), size_t(m->hp.n_vocab) * sizeof(float)) == 0;
            most = std::max(most, ctx.store().resident_bytes());
        }
        CHECK(same);  // unmapped pages come back from the file unchanged
        MESSAGE("mapping budget " << map_budget << " bytes; most resident after a pass " << most << ", peak before a trim "
                                  << ctx.store().metrics().resident_peak << ", " << ctx.store().metrics().ram_trims << " trims");
        // Within the budget, with one OS page of slack (a page shared with a slot being written).
        CHECK(most <= cp.kv.ram_bytes + os);
        CHECK(ctx.store().metrics().ram_trims > 0);
        CHECK(ctx.store().metrics().slots_unmapped > 0);
        CHECK(ctx.store().metrics().resident_peak > map_budget);  // the bound did something
        // Two independent readings of residency agree.
        ctx.store().flush();
        CHECK(ctx.store().resident_bytes() == ctx.store().resident_bytes_smaps());
        // Greedy text with the budget equals the unbounded one.
        ctx.reset();
        context free_ctx(*m, kv_params(type::Q8_0, ""));
        CHECK(greedy(ctx, "Once upon a time", 300) == greedy(free_ctx, "Once upon a time", 300));
    }
    {
        // The unmapped pages reach the file intact: a new store reuses them, checksums verified.
        context ctx(*m, cp);
        ctx.eval_prompt(toks.data(), n);
        CHECK(ctx.n_reused() == (n - 1) / 32 * 32);
        CHECK(ctx.store().metrics().pages_corrupt == 0);
        const float * l = ctx.eval(&toks[size_t(n)], 1);
        context ref_ctx(*m, kv_params(type::Q8_0, ""));
        const float * r = ref_ctx.eval(toks.data(), n + 1);
        CHECK(std::memcmp(l, r, size_t(m->hp.n_vocab) * sizeof(float)) == 0);
    }
    ops::set_n_threads(saved_threads);
}

TEST_CASE("unmapping page-file pages loses nothing, published or still being written") {
    const std::string dir = test::temp_dir("kv-unmap");
    const page_geometry g{32, 2, 2, 64};  // F16 pages of 32 KiB: 8 OS pages, slots not page-aligned after the first
    const size_t pb = g.page_bytes(type::F16);
    auto pattern = [](uint8_t * p, size_t n, int seed) {
        for (size_t i = 0; i < n; ++i) p[i] = uint8_t((i * 131 + size_t(seed) * 7) >> 3);
    };
    auto same = [&](const uint8_t * p, size_t n, int seed) {
        std::vector<uint8_t> want(n);
        pattern(want.data(), n, seed);
        return std::memcmp(p, want.data(), n) == 0;
    };
    SUBCASE("the page file: dirty pages unmapped, then read back through the mapping and the file") {
        page_file::options o;
        o.dir = dir;
        o.fingerprint = 42;
        o.kv_type = type::F16;
        o.geom = g;
        o.max_slots = 8;
        auto f = page_file::open(o, nullptr);
        for (uint64_t s = 0; s < 4; ++s) {
            REQUIRE(f->ensure_slot(s));
            pattern(f->data(s), pb, int(s));
        }
        const size_t end = f->data_offset() + 4 * f->slot_stride();
        std::vector<uint8_t> present;
        REQUIRE(f->resident_pages(f->data_offset(), end, present));
        size_t before = 0, after = 0;
        for (uint8_t b : present) before += b;
        CHECK(before >= 4 * pb / page_file::os_page_bytes());
        f->unmap_slots(0, 4, false, false);
        REQUIRE(f->resident_pages(f->data_offset(), end, present));
        for (uint8_t b : present) after += b;
        CHECK(after == 0);
        for (uint64_t s = 0; s < 4; ++s) CHECK(same(f->data(s), pb, int(s)));
        // Another descriptor reads the same bytes (the page cache holds them).
        std::vector<uint8_t> buf(pb);
        const int fd = ::open(f->path().c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        for (uint64_t s = 0; s < 4; ++s) {
            REQUIRE(::pread(fd, buf.data(), pb, off_t(f->data_offset() + s * f->slot_stride())) == ssize_t(pb));
            CHECK(same(buf.data(), pb, int(s)));
        }
        ::close(fd);
    }
    SUBCASE("the store: a page being written stays mapped; published ones are unmapped and verify") {
        kv_store_params p;
        p.dir = dir;
        p.kv_type = type::F16;
        p.ram_bytes = 1;  // nothing but pages being written may stay
        kv_store st(p, g, 43);
        std::vector<page_ref> refs;
        for (int i = 0; i < 3; ++i) {
            refs.push_back(st.begin_page());
            pattern(const_cast<uint8_t *>(refs.back().data), pb, 10 + i);
        }
        const int32_t tok[32] = {1, 2, 3};
        uint64_t h[3];
        h[0] = page_hash(PREFIX_SEED, tok, 32);
        st.publish(refs[0].slot, h[0], PREFIX_SEED, 32);
        st.flush();
        const size_t mapped = st.resident_bytes();
        st.trim();
        const size_t trimmed = st.resident_bytes();
        // Slots 1 and 2 (being written) keep all their pages; slot 0 loses its own.
        CHECK(trimmed >= 2 * (pb / page_file::os_page_bytes() - 1) * page_file::os_page_bytes());
        CHECK(trimmed < mapped);
        CHECK(same(refs[1].data, pb, 11));
        CHECK(same(refs[2].data, pb, 12));
        for (int i = 1; i < 3; ++i) {
            h[i] = page_hash(h[i - 1], tok, 32);
            st.publish(refs[size_t(i)].slot, h[i], h[i - 1], 32);
        }
        st.flush();
        st.trim();
        CHECK(st.resident_bytes() < trimmed);
        for (auto & r : refs) st.release(r.slot);
        // A second store (as another process) verifies every page's checksum.
        p.ram_bytes = 0;
        kv_store other(p, g, 43);
        page_ref got[3];
        CHECK(other.acquire_chain(h, 3, got) == 3);
        CHECK(other.metrics().pages_corrupt == 0);
        for (int i = 0; i < 3; ++i) CHECK(same(got[i].data, pb, 10 + i));
        for (auto & r : got) other.release(r.slot);
    }
}

TEST_CASE("gloas --kv-ram: the same text, and the budget reported") {
    const std::string dir = test::temp_dir("kv-ram-cli");
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                           "--kv-type", "q8_0", "-p", "Once upon a time", "-n", "200"};
    auto args = [&](const std::vector<std::string> & extra) { return test::with_args(base, extra); };
    auto ref = test::run_tool("gloas", args({"--kv-dir", "none"}));
    REQUIRE(ref.status == 0);
    auto small = test::run_gloas_like(ref, args({"--kv-dir", dir, "--kv-ram", "2M", "--metrics", "json"}));
    CHECK(small.err.find("kv RAM budget 2.0 MiB") != std::string::npos);
    CHECK(small.err.find("\"kv_ram_budget\": 2097152") != std::string::npos);
    CHECK(small.err.find("\"kv_resident_bytes\": ") != std::string::npos);
    // A budget below one page: every pass unmaps what it read, and still the same text.
    test::run_gloas_like(ref, args({"--kv-dir", dir, "--kv-ram", "4k"}));
    auto bad = test::run_tool("gloas", args({"--kv-ram", "lots"}));
    CHECK(bad.status == 2);
    CHECK(bad.err.find("--kv-ram") != std::string::npos);
}

TEST_CASE("the compressed policy is refused on pages too small for q4_0 blocks") {
    // It re-quantizes evicted pages to q4_0, whose blocks of 32 run along a
    // page's tokens; gloas refuses the flags first (exit 2, test-cli).
    const page_geometry g{16, 1, 1, 2};
    kv_store_params p;
    p.dir = test::temp_dir("kv-compress-16");
    p.kv_type = type::F16;
    p.page_tokens = 16;
    p.policy = evict_policy::COMPRESSED;
    p.capacity_bytes = 4 * g.page_bytes(type::F16);
    CHECK_THROWS_WITH_AS(kv_store(p, g, 44), doctest::Contains("compressed policy"), error);
}
