// Copy reads (kv_store_params::read_copy): the batched file reader, and
// decode attention over pieces copied out of the page file instead of read
// through its mapping.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "kvcache/file-reader.h"
#include "kvcache/kv-store.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

// n bytes of a known pattern in a new file; returns its descriptor (read-only).
int pattern_file(const std::string & path, size_t n, std::vector<uint8_t> & bytes) {
    bytes.resize(n);
    std::mt19937 rng(7);
    for (auto & b : bytes) b = uint8_t(rng());
    const int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(w >= 0);
    REQUIRE(::write(w, bytes.data(), n) == ssize_t(n));
    ::close(w);
    const int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    return fd;
}

// Reads random ranges (some past the end of the file) and checks every byte.
void check_reader(batch_reader & r, int fd, const std::vector<uint8_t> & bytes) {
    std::mt19937 rng(11);
    const size_t n_ops = 3 * batch_reader::RING_ENTRIES + 17;  // several batches, the last partial
    std::vector<read_op> ops(n_ops);
    std::vector<std::vector<uint8_t>> dst(n_ops);
    size_t want_total = 0;
    for (size_t i = 0; i < n_ops; ++i) {
        const uint32_t len = 1 + uint32_t(rng() % 5000);
        // Mostly inside; every 50th straddles the end, every 97th starts past it.
        uint64_t off = rng() % (bytes.size() - len);
        if (i % 50 == 3) off = bytes.size() - len / 2;
        if (i % 97 == 5) off = bytes.size() + 10;
        dst[i].assign(len, 0xEE);
        ops[i].offset = off;
        ops[i].bytes = len;
        ops[i].dst = dst[i].data();
        if (off + len <= bytes.size()) want_total += len;
        else if (off < bytes.size()) want_total += bytes.size() - off;
    }
    const size_t got = r.read(fd, ops.data(), n_ops);
    CHECK(got == want_total);
    size_t bad = 0, wrong_ok = 0;
    for (size_t i = 0; i < n_ops; ++i) {
        const bool inside = ops[i].offset + ops[i].bytes <= bytes.size();
        wrong_ok += ops[i].ok != inside;
        if (inside) bad += std::memcmp(dst[i].data(), bytes.data() + ops[i].offset, ops[i].bytes) != 0;
    }
    CHECK(bad == 0);
    CHECK(wrong_ok == 0);
}

std::unique_ptr<model> load_stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

std::vector<int32_t> text_tokens(const model & m, size_t n) {
    const std::string s = test::read_file(test::require_data("tinystories-valid-excerpt.txt"));
    std::vector<int32_t> t = m.tok.encode(s, true);
    if (t.size() > n) t.resize(n);
    return t;
}

} // namespace

TEST_CASE("the batched reader reads every range exactly, with io_uring and with pread") {
    const std::string dir = test::temp_dir("kv-read");
    std::vector<uint8_t> bytes;
    const int fd = pattern_file(dir + "/data.bin", 3 << 20, bytes);
    {
        batch_reader r;
        const std::string how = r.uses_io_uring() ? "in use" : "unavailable here: pread";
        MESSAGE("io_uring " << how);
        check_reader(r, fd, bytes);
        check_reader(r, fd, bytes);  // the ring is reusable
    }
    {
        batch_reader::force_pread(true);
        batch_reader r;
        batch_reader::force_pread(false);
        CHECK(!r.uses_io_uring());
        check_reader(r, fd, bytes);
    }
    {
        // A descriptor that cannot be read: every op fails, none is ok.
        batch_reader r;
        std::vector<uint8_t> buf(100);
        read_op op{0, 100, buf.data()};
        CHECK(r.read(-1, &op, 1) == 0);
        CHECK(!op.ok);
    }
    ::close(fd);
}

TEST_CASE("decode over copied pieces equals decode through the mapping, and maps nothing it reads") {
    // One thread: hundreds of single-token passes of a tiny model.
    const int saved_threads = ops::n_threads();
    ops::set_n_threads(1);
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 460);
    REQUIRE(toks.size() == 460);
    const int32_t n_prompt = 300;
    for (type t : {type::Q8_0, type::Q4_0}) {
        const std::string tn = type_name(t);
        CAPTURE(tn);
        context_params cp;
        cp.kv.kv_type = t;
        cp.sparse.ratio = 0.25f;
        // Reference: pages in memory, read through the mapping.
        std::vector<float> ref;
        {
            cp.kv.dir = "";
            context ctx(*m, cp);
            ctx.eval(toks.data(), n_prompt);
            for (int32_t i = n_prompt; i < int32_t(toks.size()); ++i) {
                const float * l = ctx.eval(&toks[size_t(i)], 1);
                ref.insert(ref.end(), l, l + m->hp.n_vocab);
            }
        }
        const size_t os = page_file::os_page_bytes();
        // The header and the slot table's first pages, and the page a pass writes.
        const page_geometry pg(32, m->hp);
        cp.kv.ram_bytes = 65536 + pg.page_bytes(t) + 2 * os;
        // The same budget through the mapping: each sparse pass maps what it reads.
        size_t most_mapped = 0;
        {
            cp.kv.dir = test::temp_dir("kv-read-map-" + tn);
            context ctx(*m, cp);
            ctx.eval(toks.data(), n_prompt);
            ctx.store().flush();
            for (int32_t i = n_prompt; i < int32_t(toks.size()); ++i) {
                ctx.store().metrics().resident_peak = 0;
                ctx.eval(&toks[size_t(i)], 1);
                most_mapped = std::max(most_mapped, ctx.store().metrics().resident_peak);
                ctx.store().flush();
            }
        }
        cp.kv.dir = test::temp_dir("kv-read-" + tn);
        cp.kv.read_copy = true;
        context ctx(*m, cp);
        ctx.eval(toks.data(), n_prompt);
        // Each pass's published page reaches the slot table before the next
        // pass (the writer thread drained): otherwise a writer running late on
        // a busy machine leaves more slots unpublished, and those are never
        // unmapped, than the two in flight the bound below allows.
        ctx.store().flush();
        const uint64_t reads0 = ctx.kv().page_reads(), copied0 = ctx.kv().bytes_copied(), dense0 = ctx.kv().dense_reads();
        bool same = true;
        size_t most = 0;
        for (int32_t i = n_prompt; i < int32_t(toks.size()); ++i) {
            ctx.store().metrics().resident_peak = 0;
            const float * l = ctx.eval(&toks[size_t(i)], 1);
            same = same && std::memcmp(l, ref.data() + size_t(i - n_prompt) * size_t(m->hp.n_vocab),
                                       size_t(m->hp.n_vocab) * sizeof(float)) == 0;
            most = std::max(most, ctx.store().metrics().resident_peak);
            ctx.store().flush();
        }
        CHECK(same);  // the same bytes through the same kernels
        // Every page read of a sparse layer was a copy of exactly its K and V
        // rows; the dense layers (every page, each step) read their RAM copy.
        const uint64_t reads = ctx.kv().page_reads() - reads0, copied = ctx.kv().bytes_copied() - copied0;
        const uint64_t dense = ctx.kv().dense_reads() - dense0;
        uint64_t dense_want = 0;  // pages before each step's own, per dense layer and KV head
        for (int32_t i = n_prompt; i < int32_t(toks.size()); ++i)
            dense_want += uint64_t(i / 32) * uint64_t(cp.sparse.dense_layers) * uint64_t(m->hp.n_head_kv);
        CHECK(dense == dense_want);
        CHECK(reads > dense);
        CHECK(copied == (reads - dense) * 2 * uint64_t(m->hp.head_dim) * pg.row_bytes(t));
        CHECK(ctx.kv().copy_fallbacks() == 0);
        // Decode maps only the pages it writes: the most mapped at any pass end
        // stays within the budget and the two pages that may be in flight (the
        // one being written and the last one, until the writer thread has
        // published it: slots not yet published are never unmapped).
        MESSAGE(tn << ": most mapped at a decode pass end " << most << " bytes with copies, " << most_mapped
                   << " through the mapping; budget " << cp.kv.ram_bytes << "; file " << ctx.store().file_bytes());
        CHECK(most <= cp.kv.ram_bytes + 2 * (pg.page_bytes(t) + os));
        CHECK(most < most_mapped);
        CHECK(ctx.store().resident_bytes() <= cp.kv.ram_bytes + os);
    }
    ops::set_n_threads(saved_threads);
}

TEST_CASE("gloas --kv-read: copies give the same text; aggressive copies by default") {
    const std::string dir = test::temp_dir("kv-read-cli");
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1",
                                           "--kv-type", "q4_0", "--sparse-ratio", "0.25", "-p", "Once upon a time", "-n", "300"};
    auto args = [&](const std::vector<std::string> & extra) { return test::with_args(base, extra); };
    auto ref = test::run_tool("gloas", args({"--kv-dir", "none"}));
    REQUIRE(ref.status == 0);
    test::run_gloas_like(ref, args({"--kv-dir", dir, "--kv-read", "copy", "--kv-ram", "64k"}));
    test::run_gloas_like(ref, args({"--kv-dir", dir, "--kv-read", "map"}));
    auto bad = test::run_tool("gloas", args({"--kv-read", "mmap"}));
    CHECK(bad.status == 2);
    CHECK(bad.err.find("--kv-read takes map or copy") != std::string::npos);
    auto explain = test::run_tool("gloas", {"-m", test::require_model("stories260K.bin"), "--strategy", "aggressive", "--auto",
                                            "--explain", "-t", "1"});
    REQUIRE(explain.status == 0);
    CHECK(explain.out.find("--kv-read copy") != std::string::npos);
}
