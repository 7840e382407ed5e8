// Context beyond the model's window: the sliding window of kv_sequence
// (attention sinks + recent pages, StreamingLLM) and its use by the decoder.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "kvcache/kv-sequence.h"
#include "kvcache/kv-store.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace gloas;

namespace {

std::unique_ptr<model> load_stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

std::vector<int32_t> text_tokens(const model & m, size_t n) {
    std::vector<int32_t> t = m.tok.encode(test::read_file(test::require_data("tinystories-valid-excerpt.txt")), true);
    t.resize(std::min(t.size(), n));
    return t;
}

context_params slide_params_for(int32_t n_ctx, bool on, type t = type::F16) {
    context_params cp;
    cp.n_ctx = n_ctx;
    cp.kv.kv_type = t;
    cp.kv.dir = "";
    cp.slide.on = on;
    return cp;
}

using test::top_token;

float max_abs_diff(const float * a, const float * b, size_t n) {
    float d = 0.0f;
    for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

// Random unrotated K, V, Q of a small geometry fed to a kv_sequence in chunks,
// checked against dense attention with every key rotated at its logical
// position (sinks at their own positions, the window shifted down by the
// dropped positions), as if the dropped tokens had never been there.
struct slide_case {
    int32_t n_layer = 2, n_head = 4, n_head_kv = 2, head_dim = 16, P = 32, n_ctx = 128, sinks = 1;
    int32_t max_chunk = 40;
    type t = type::F32;

    // Feeds n_pos positions in chunks of `chunks` (cycled) and returns the
    // attention outputs, (n_pos, n_layer, n_head, head_dim); checks each one
    // against the reference within `tol` when tol > 0.
    std::vector<float> run(int32_t n_pos, const std::vector<int32_t> & chunks, float tol, float ratio = 1.0f) {
        const int32_t E = n_head_kv * head_dim, Qn = n_head * head_dim;
        kv_store_params sp;
        sp.dir = "";
        sp.kv_type = t;
        sp.page_tokens = P;
        const page_geometry pg{P, n_layer, n_head_kv, head_dim};
        kv_store store(sp, pg, 0x5eed);
        const kv_geometry g(pg, n_head, n_ctx);
        kv_sequence seq(store, g, max_chunk);
        seq.set_slide({true, sinks});
        sparse_params spp;
        spp.ratio = ratio;
        spp.dense_layers = 0;
        seq.set_sparse(spp);

        std::mt19937 rng(11);
        std::normal_distribution<float> gauss(0.0f, 1.0f);
        // unrotated inputs, (n_pos, n_layer, E) and (n_pos, n_layer, Qn)
        std::vector<float> k0(size_t(n_pos) * n_layer * E), v0(k0.size()), q0(size_t(n_pos) * n_layer * Qn);
        for (auto & x : k0) x = gauss(rng);
        for (auto & x : v0) x = gauss(rng);
        for (auto & x : q0) x = gauss(rng) * 1.5f;
        std::vector<float> outs(size_t(n_pos) * n_layer * Qn);
        const float scale = 1.0f / std::sqrt(float(head_dim));
        const ops::rope_params rp;

        std::vector<float> k, v, q, qk, out, rk, rv, ref(static_cast<size_t>(Qn));
        std::vector<int32_t> toks;
        size_t ci = 0;
        int32_t max_err_checked = 0;
        float worst = 0.0f;
        for (int32_t pos0 = 0; pos0 < n_pos;) {
            const int32_t n = std::min(chunks[ci++ % chunks.size()], n_pos - pos0);
            toks.assign(size_t(n), 7);
            for (int32_t il = 0; il < n_layer; ++il) {
                k.resize(size_t(n) * E);
                v.resize(size_t(n) * E);
                q.resize(size_t(n) * Qn);
                qk.resize(size_t(n) * Qn);
                out.resize(size_t(n) * Qn);
                for (int32_t i = 0; i < n; ++i) {
                    const int32_t p = pos0 + i;
                    const float * ks = &k0[(size_t(p) * n_layer + il) * E];
                    std::copy(ks, ks + E, &k[size_t(i) * E]);
                    std::copy(&v0[(size_t(p) * n_layer + il) * E], &v0[(size_t(p) * n_layer + il) * E] + E, &v[size_t(i) * E]);
                    const float * qs = &q0[(size_t(p) * n_layer + il) * Qn];
                    std::copy(qs, qs + Qn, &q[size_t(i) * Qn]);
                    std::copy(qs, qs + Qn, &qk[size_t(i) * Qn]);
                    ops::rope_ex(&k[size_t(i) * E], n_head_kv, head_dim, head_dim, p, rp);
                    ops::rope_ex(&q[size_t(i) * Qn], n_head, head_dim, head_dim, p, rp);
                    ops::rope_ex(&qk[size_t(i) * Qn], n_head, head_dim, head_dim, p - seq.slide_shift(p), rp);
                }
                seq.store(il, pos0, n, k.data(), v.data());
                seq.attend(il, pos0, n, q.data(), qk.data(), out.data(), scale);
                for (int32_t i = 0; i < n; ++i)
                    std::copy(&out[size_t(i) * Qn], &out[size_t(i) * Qn] + Qn, &outs[(size_t(pos0 + i) * n_layer + il) * Qn]);
                if (tol <= 0) continue;
                // the dense reference
                for (int32_t i = 0; i < n; ++i) {
                    const int32_t p = pos0 + i;
                    const int32_t D = seq.slide_shift(p), sink_end = D > 0 ? sinks * P : 0;
                    rk.clear();
                    rv.clear();
                    for (int32_t j = 0; j <= p; ++j) {
                        if (j >= sink_end && j < sink_end + D) continue;  // dropped
                        const int32_t logical = j < sink_end ? j : j - D;
                        const size_t o = (size_t(j) * n_layer + il) * E;
                        rk.insert(rk.end(), &k0[o], &k0[o] + E);
                        rv.insert(rv.end(), &v0[o], &v0[o] + E);
                        ops::rope_ex(&rk[rk.size() - size_t(E)], n_head_kv, head_dim, head_dim, logical, rp);
                    }
                    std::vector<float> rq(&q0[(size_t(p) * n_layer + il) * Qn], &q0[(size_t(p) * n_layer + il) * Qn] + Qn);
                    ops::rope_ex(rq.data(), n_head, head_dim, head_dim, p - D, rp);
                    const int64_t n_kv = int64_t(rk.size() / size_t(E));
                    CHECK(n_kv <= n_ctx);
                    test::attention_ref(ref.data(), rq.data(), rk.data(), rv.data(), n_kv, n_head, n_head_kv,
                                        head_dim, E, scale);
                    const float err = max_abs_diff(ref.data(), &out[size_t(i) * Qn], size_t(Qn));
                    worst = std::max(worst, err);
                    if (D > 0) ++max_err_checked;
                }
            }
            seq.commit(toks.data(), pos0, n);
            pos0 += n;
            // between evaluations the sequence holds at most n_ctx positions
            CHECK(seq.n_held() <= n_ctx);
            CHECK(seq.n_held() == pos0 - seq.n_dropped() * P);
            CHECK(seq.n_pages() <= (n_ctx + P - 1) / P + 1);
            CHECK(seq.n_dropped() * P == seq.slide_shift(pos0 - 1));
        }
        if (tol > 0) {
            INFO("type " << std::string(type_name(t)) << ", worst difference " << worst);
            CHECK(worst <= tol);
            CHECK(max_err_checked > 0);
        }
        // Only the pages within the first n_ctx positions were published.
        store.flush();
        CHECK(store.metrics().pages_written == uint64_t(std::min(n_pos, n_ctx) / P));
        return outs;
    }
};

} // namespace

TEST_CASE("after a slide, attention over sinks + window equals dense attention at logical positions") {
    for (type t : {type::F32, type::F16}) {
        // (sink pages, n_ctx): 100 is not a whole number of pages
        for (const auto & sc : std::vector<std::pair<int32_t, int32_t>>{{1, 128}, {2, 160}, {0, 128}, {1, 100}}) {
            slide_case c;
            c.t = t;
            c.sinks = sc.first;
            c.n_ctx = sc.second;
            INFO("sinks " << c.sinks << ", n_ctx " << c.n_ctx);
            c.run(420, {1, 7, 40, 13, 32, 1, 1, 29}, t == type::F32 ? 2e-5f : 3e-3f);
        }
    }
}

TEST_CASE("the sliding window gives the same results whatever the chunking") {
    slide_case c;
    c.t = type::Q8_0;
    const std::vector<float> a = c.run(300, {1}, 0);
    const std::vector<float> b = c.run(300, {40, 3, 17}, 0);
    CHECK(a == b);
}

TEST_CASE("a sliding window needs room for its sinks and two pages") {
    auto m = load_stories();
    CHECK_THROWS_WITH_AS(context(*m, slide_params_for(64, true)), doctest::Contains("sink"), error);
    context ok(*m, slide_params_for(96, true));
    CHECK(ok.slides());
}

TEST_CASE("a run that never reaches the limit is bit-identical with the slide on") {
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 128);
    REQUIRE(toks.size() == 128);
    context a(*m, slide_params_for(128, false));
    context b(*m, slide_params_for(128, true));
    const int32_t V = m->hp.n_vocab;
    const float * la = a.eval(toks.data(), 70);
    std::vector<float> first(la, la + V);
    const float * lb = b.eval(toks.data(), 70);
    CHECK(std::equal(first.begin(), first.end(), lb));
    for (int32_t i = 70; i < 128; ++i) {
        const float * x = a.eval(&toks[size_t(i)], 1);
        const float * y = b.eval(&toks[size_t(i)], 1);
        CHECK(std::equal(x, x + V, y));
    }
    CHECK(b.kv().n_dropped() == 0);
    CHECK_THROWS_AS(a.eval(&toks[0], 1), context_full_error);
}

TEST_CASE("stories260K generates past its context with the slide on") {
    auto m = load_stories();
    const int32_t C = 128, P = 32;
    context ctx(*m, slide_params_for(C, true));
    const std::vector<int32_t> prompt = text_tokens(*m, 20);
    const float * logits = ctx.eval_prompt(prompt.data(), int32_t(prompt.size()));
    int32_t n_valid = 0;
    for (int i = 0; i < 600; ++i) {
        const int32_t tok = top_token(logits, m->hp.n_vocab);
        logits = ctx.eval(&tok, 1);
        n_valid += std::isfinite(logits[0]);
        CHECK(ctx.kv().n_held() <= C);
        CHECK(ctx.kv().n_pages() <= C / P + 1);
    }
    CHECK(n_valid == 600);
    CHECK(ctx.n_past() == 620);
    CHECK(ctx.kv().n_dropped() == (620 - C + P - 1) / P);

    // A prompt longer than the context slides during prefill; its logits match
    // the same tokens fed one at a time (each token of a chunk sees its own window).
    const std::vector<int32_t> toks = text_tokens(*m, 400);
    REQUIRE(toks.size() == 400);
    context_params cp = slide_params_for(C, true);
    cp.n_ubatch = 64;
    context chunked(*m, cp);
    context single(*m, cp);
    std::vector<float> all(size_t(400) * size_t(m->hp.n_vocab));
    chunked.eval(toks.data(), 400, [&](int32_t pos, const float * l) {
        std::copy(l, l + m->hp.n_vocab, all.begin() + int64_t(pos) * m->hp.n_vocab);
    });
    float worst = 0;
    int agree = 0;
    for (int32_t i = 0; i < 400; ++i) {
        const float * l = single.eval(&toks[size_t(i)], 1);
        const float * c = all.data() + int64_t(i) * m->hp.n_vocab;
        worst = std::max(worst, max_abs_diff(l, c, size_t(m->hp.n_vocab)));
        agree += top_token(l, m->hp.n_vocab) == top_token(c, m->hp.n_vocab);
    }
    MESSAGE("chunked vs token-by-token past the window: max logit difference " << worst);
    CHECK(worst < 1e-3f);
    CHECK(agree == 400);
}

TEST_CASE("pages built from a slid window are never reused as the unslid prefix") {
    auto m = load_stories();
    const std::string dir = test::temp_dir("slide-store");
    const std::vector<int32_t> toks = text_tokens(*m, 300);
    REQUIRE(toks.size() == 300);
    {
        context_params cp = slide_params_for(128, true);
        cp.kv.dir = dir;
        context ctx(*m, cp);
        ctx.eval_prompt(toks.data(), 300);
        CHECK(ctx.kv().n_dropped() > 0);
        ctx.store().flush();
        CHECK(ctx.store().metrics().pages_written == 4);
    }
    context_params cp = slide_params_for(512, false);
    cp.kv.dir = dir;
    context big(*m, cp);
    big.eval_prompt(toks.data(), 300);
    CHECK(big.n_reused() == 128);  // the 4 pages within the first 128 positions only
}

TEST_CASE("sparse decode attention over a slid window") {
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 420);
    REQUIRE(toks.size() == 420);
    context_params dp = slide_params_for(256, true, type::Q8_0);
    context_params sp = dp;
    sp.sparse.ratio = 0.25f;
    context dense(*m, dp);
    context sparse(*m, sp);
    test::top1_agreement same;
    for (size_t i = 0; i + 1 < toks.size(); ++i) {
        const int32_t a = top_token(dense.eval(&toks[i], 1), m->hp.n_vocab);
        const uint64_t before = sparse.kv().page_reads();
        const int32_t b = top_token(sparse.eval(&toks[i], 1), m->hp.n_vocab);
        if (i == 320) {
            // position 320: page 10 open, d = ceil((321 - 256) / 32) = 3 pages
            // dropped, so the sink + pages 4..9 are candidates (7); sparse
            // layers read the sink, the latest page and ceil(0.25 * 7) = 2 more.
            const uint64_t reads = sparse.kv().page_reads() - before;
            const uint64_t L = uint64_t(m->hp.n_layer), H = uint64_t(m->hp.n_head_kv), dl = uint64_t(sp.sparse.dense_layers);
            CHECK(reads == dl * H * 7 + (L - dl) * H * 4);
        }
        if (i >= 256) same.add(a, b);
    }
    same.check("slid window, sparse ratio 0.25", "dense", 0.9);
}

TEST_CASE("sparse decode over a slid window: copy reads (dense layers from their RAM copy) equal mapped reads") {
    // The dense layers' RAM copy follows the summaries' ring of slots: a
    // window sliding past many pages reuses every slot several times.
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 420);
    REQUIRE(toks.size() == 420);
    context_params cp = slide_params_for(128, true, type::Q4_0);
    cp.sparse.ratio = 0.25f;
    cp.kv.dir = test::temp_dir("slide-copy-map");
    context mapped(*m, cp);
    cp.kv.dir = test::temp_dir("slide-copy");
    cp.kv.read_copy = true;
    context copied(*m, cp);
    bool same = true;
    for (size_t i = 0; i + 1 < toks.size(); ++i) {
        const float * a = mapped.eval(&toks[i], 1);
        const float * b = copied.eval(&toks[i], 1);
        same = same && std::memcmp(a, b, size_t(m->hp.n_vocab) * sizeof(float)) == 0;
    }
    CHECK(same);
    CHECK(copied.kv().dense_reads() > 0);
    CHECK(copied.kv().bytes_copied() > 0);
    CHECK(mapped.kv().dense_reads() == 0);
}

TEST_CASE("gloas --ctx-slide generates past the context; without it gloas stops there") {
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-c", "128",
                                           "-n", "300", "--kv-dir", "none", "-p", "Once upon a time"};
    auto off = test::run_tool("gloas", base);
    REQUIRE(off.status == 0);
    CHECK(off.err.find("(context full; --ctx-slide keeps going)") != std::string::npos);
    std::vector<std::string> args = base;
    args.push_back("--ctx-slide");
    auto on = test::run_tool("gloas", args);
    REQUIRE(on.status == 0);
    CHECK(on.err.find("generated 300 tokens,") != std::string::npos);
    CHECK(on.err.find("context slid past 128 positions") != std::string::npos);
    // the text up to the limit is the same
    CHECK(on.out.size() > off.out.size());
    CHECK(on.out.compare(0, off.out.size() - 1, off.out, 0, off.out.size() - 1) == 0);
    auto help = test::run_tool("gloas", {"--help"});
    CHECK(help.out.find("--ctx-slide") != std::string::npos);
    for (const char * phase : {"--ubatch", "PREFILL", "DECODE", "HYBRID"}) CHECK(help.out.find(phase) != std::string::npos);
}

TEST_CASE("gloas-perplexity --ctx-slide scores text past a sliding context, spelt as gloas spells it") {
    // As in gloas, --ctx-slide is a switch and -c the window; --chunk-size is the text per chunk.
    const std::vector<std::string> base = {"-m", test::require_model("stories260K.bin"), "-f",
                                           test::require_data("tinystories-valid-excerpt.txt"), "--chunks", "2"};
    auto r = test::run_tool("gloas-perplexity", test::with_args(base, {"-c", "128", "--chunk-size", "256", "--ctx-slide"}));
    REQUIRE_MESSAGE(r.status == 0, r.err);
    CHECK(r.err.find("2 chunks of 256") != std::string::npos);
    CHECK(r.err.find("context of 128 sliding with 1 sink page(s)") != std::string::npos);
    const size_t at = r.out.find("PPL = ");
    REQUIRE(at != std::string::npos);
    const double ppl = std::stod(r.out.substr(at + 6));
    CHECK(ppl > 1.0);
    CHECK(ppl < 50.0);
    // gloas's --ctx-slide takes no value: a number after it is refused, saying where the window goes
    r = test::run_tool("gloas-perplexity", test::with_args(base, {"-c", "256", "--ctx-slide", "128"}));
    CHECK(r.status == 2);
    CHECK(r.err.find("--ctx-slide takes no value: the window is -c") != std::string::npos);
    // chunks that never pass the window, or pass it without the switch, are bad command lines
    r = test::run_tool("gloas-perplexity", test::with_args(base, {"-c", "256", "--ctx-slide"}));
    CHECK(r.status == 2);
    CHECK(r.err.find("never slide past -c 256") != std::string::npos);
    r = test::run_tool("gloas-perplexity", test::with_args(base, {"-c", "128", "--chunk-size", "256"}));
    CHECK(r.status == 2);
    CHECK(r.err.find("add --ctx-slide") != std::string::npos);
    // the same spelling in both tools' --help
    for (const char * tool : {"gloas", "gloas-perplexity"}) {
        const auto help = test::run_tool(tool, {"--help"});
        const size_t flag = help.out.find("--ctx-slide ");
        REQUIRE_MESSAGE(flag != std::string::npos, tool);
        CHECK_MESSAGE(help.out.compare(flag, 14, "--ctx-slide N ") != 0, tool);
    }
}

TEST_CASE("a slid sequence forks into the same state") {
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 301);
    REQUIRE(toks.size() == 301);
    context_params cp = slide_params_for(128, true);
    cp.n_seq_max = 2;
    context ctx(*m, cp);
    const int32_t V = m->hp.n_vocab;
    const float * l0 = ctx.eval(toks.data(), 300);
    const std::vector<float> a(l0, l0 + V);
    const float * l1 = ctx.seq_fork(0, 1);
    REQUIRE(l1 != nullptr);
    CHECK(max_abs_diff(a.data(), l1, size_t(V)) < 1e-4f);
    CHECK(ctx.seq_kv(1).n_dropped() == ctx.seq_kv(0).n_dropped());
    CHECK(ctx.seq_n_past(1) == 300);
    // both continue alike
    const int32_t next[2] = {toks[300], toks[300]}, seq[2] = {0, 1};
    const int8_t keep[2] = {1, 1};
    batch b;
    b.n_tokens = 2;
    b.token = next;
    b.seq = seq;
    b.logits = keep;
    ctx.decode(b);
    CHECK(max_abs_diff(ctx.batch_logits(0), ctx.batch_logits(1), size_t(V)) < 1e-4f);
}
