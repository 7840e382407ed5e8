#include "test-util.h"

#include "decoder/llama.h"
#include "decoder/sampler.h"
#include "base/error.h"
#include "tensor/ops.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <csignal>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace gloas::test {

std::vector<float> get(backend & be, const buffer & b, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    be.to_host(v.data(), b.data(), v.size() * sizeof(float));
    return v;
}

std::string generate_like_llama2c(context & ctx, const std::string & prompt, int steps, std::vector<int32_t> * ids) {
    const model & m = ctx.get_model();
    std::vector<int32_t> toks = m.tok.encode(prompt, true);
    std::string out;
    for (size_t i = 1; i < toks.size(); ++i) out += m.tok.token_to_piece(toks[i - 1], toks[i]);
    sampler_params sp;
    sp.temp = 0.0f;
    sampler smp(sp, m.hp.n_vocab);
    const float * logits = ctx.eval_prompt(toks.data(), int32_t(toks.size()));
    int32_t prev = toks.back();
    for (int pos = int(toks.size()) - 1; pos < steps; ++pos) {
        const int32_t next = smp.sample(logits);
        if (next == m.tok.bos()) break;
        if (ids) ids->push_back(next);
        out += m.tok.token_to_piece(prev, next);
        prev = next;
        if (pos + 1 < steps) logits = ctx.eval(&next, 1);
    }
    return out;
}

void attention_ref(float * out, const float * q, const float * k, const float * v, int64_t n_kv, int64_t n_head,
                   int64_t n_head_kv, int64_t head_dim, int64_t kv_stride, float scale) {
    REQUIRE(n_head_kv > 0);
    REQUIRE(n_head % n_head_kv == 0);
    const int64_t group = n_head / n_head_kv;
    std::vector<float> att(size_t(n_kv > 0 ? n_kv : 1));
    for (int64_t h = 0; h < n_head; ++h) {
        const float * qh = q + h * head_dim;
        const int64_t off = (h / group) * head_dim;
        for (int64_t t = 0; t < n_kv; ++t) {
            const float * kt = k + t * kv_stride + off;
            double s = 0.0;
            for (int64_t d = 0; d < head_dim; ++d) s += double(qh[d]) * double(kt[d]);
            att[size_t(t)] = float(s) * scale;
        }
        ops::softmax_ref(att.data(), n_kv);
        float * oh = out + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
            double s = 0.0;
            for (int64_t t = 0; t < n_kv; ++t) s += double(att[size_t(t)]) * double(v[t * kv_stride + off + d]);
            oh[d] = float(s);
        }
    }
}

void check_contains(const std::string & text, std::initializer_list<std::string> parts) {
    for (const std::string & part : parts) CHECK_MESSAGE(contains(text, part), "'" << part << "' in:\n" << text);
}

int32_t top_token(const float * logits, int32_t n_vocab) {
    return int32_t(std::max_element(logits, logits + n_vocab) - logits);
}

void top1_agreement::check(const std::string & what, const std::string & ref, double min_rate) const {
    REQUIRE(n > 0);
    const double rate = double(agree) / n;
    MESSAGE(what << ": top-1 agreement with " << ref << " " << rate * 100 << "% over " << n << " positions");
    CHECK(rate >= min_rate);
}

bool file_exists(const std::string & path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

std::string ids_str(const std::vector<int32_t> & ids) {
    std::string s;
    for (int32_t id : ids) s += " " + std::to_string(id);
    return s;
}

std::string json_escape(const std::string & s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if (uint8_t(c) < 0x20) o += format("\\u%04x", unsigned(uint8_t(c)));
        else o += c;
    }
    return o;
}

std::vector<float> randn(std::mt19937 & rng, int64_t n, float sigma) {
    std::normal_distribution<float> nd(0.0f, sigma);
    std::vector<float> x(static_cast<size_t>(n));
    for (auto & v : x) v = nd(rng);
    return x;
}

std::vector<char> random_rows(type t, int64_t n_rows, int64_t n, std::mt19937 & rng, size_t pad) {
    const size_t rb = row_size(t, n);
    std::vector<char> w(rb * size_t(n_rows) + pad);
    for (int64_t r = 0; r < n_rows; ++r) {
        const std::vector<float> x = randn(rng, n, 0.5f);
        traits(t).from_float_ref(x.data(), w.data() + size_t(r) * rb, n);
    }
    return w;
}

std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const error & e) {
        return e.what();
    }
    return "";
}

void for_thread_counts(std::initializer_list<int> counts, const std::function<void(int)> & body) {
    struct restore {
        int n = ops::n_threads();
        ~restore() { ops::set_n_threads(n); }
    } saved;
    for (int n : counts) {
        ops::set_n_threads(n);
        body(n);
    }
}

int matmul_mismatches(const tensor & w, const std::vector<float> & x, int64_t n_tok, const std::vector<float> & y,
                      const std::vector<float> & yr, bool fp16_offsets) {
    const int64_t n_in = w.ne[0], n_out = w.nrows();
    int bad = 0;
    std::vector<float> wr(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < n_out; ++r) {
        ops::get_row(w, r, wr.data());
        double wn = 0.0, wa = 0.0;
        for (float v : wr) { wn += double(v) * v; wa += std::fabs(double(v)); }
        for (int64_t tk = 0; tk < n_tok; ++tk) {
            double xn = 0.0, xa = 0.0;
            for (int64_t i = 0; i < n_in; ++i) {
                xn += double(x[size_t(tk * n_in + i)]) * x[size_t(tk * n_in + i)];
                xa = std::max(xa, std::fabs(double(x[size_t(tk * n_in + i)])));
            }
            const double offsets = fp16_offsets ? wa * xa * 1e-3 * 0x1p-11 * 32 : 0.0;
            const double tol = 2e-5 * std::sqrt(wn * xn) + offsets + 1e-30;
            const size_t k = size_t(tk * n_out + r);
            bad += !(std::fabs(double(y[k]) - double(yr[k])) <= tol);
        }
    }
    return bad;
}

llama_gguf_hparams small_model_hparams(const std::string & arch, const std::string & name, int64_t n_layer) {
    llama_gguf_hparams hp;
    hp.arch = arch;
    hp.name = name;
    hp.n_vocab = 400, hp.n_ctx = 128;
    hp.n_embd = 64, hp.n_ff = 96;
    hp.n_head = 4, hp.n_head_kv = 2, hp.n_layer = n_layer;
    hp.wtype = type::Q8_0;
    return hp;
}

case_state & current_case() {
    static case_state s;
    return s;
}

void note_skip(const std::string & reason) {
    case_state & c = current_case();
    const std::string line = k_skip_marker + reason;
    for (const auto & l : c.skips)
        if (l == line) return;
    c.skips.push_back(line);
    std::printf("%s -- test case \"%s\"\n", line.c_str(), c.name.c_str());
    std::fflush(stdout);
}

void skip_case(const std::string & reason) {
    note_skip(reason);
    current_case().skip_thrown = true;
    throw skipped_case{k_skip_marker + reason};
}

// The reason of a missing-file skip; with k_skip_marker it starts with k_missing_marker.
static std::string needs(const std::string & file, const std::string & how) {
    return "needs " + file + " (" + how + ")";
}

void note_missing(const std::string & file, const std::string & how) { note_skip(needs(file, how)); }

void skip_missing(const std::string & file, const std::string & how) { skip_case(needs(file, how)); }

std::string data_file(const std::string & name) {
    const std::string p = std::string(GLOAS_SOURCE_DIR) + "/tests/data/" + name;
    if (!file_exists(p)) FAIL("test data tests/data/" << name << " is not in the checkout");
    return p;
}

std::string model_path(const std::string & name) {
    std::vector<std::string> dirs = {std::string(GLOAS_SOURCE_DIR) + "/models"};
    if (const char * env = std::getenv("GLOAS_MODELS"); env && *env) dirs.push_back(env);
    dirs.push_back(std::string(GLOAS_SOURCE_DIR) + "/../shared/models");
    for (const auto & d : dirs) {
        std::string p = d + "/" + name;
        if (file_exists(p)) return p;
    }
    return {};
}

std::string require_model(const std::string & name) {
    std::string p = model_path(name);
    if (p.empty()) skip_missing("models/" + name, "models/fetch.sh " + name + ", or GLOAS_MODELS");
    return p;
}

std::string require_default_model() {
    std::vector<std::string> dirs = {std::string(GLOAS_BIN_DIR) + "/../../models"};
    if (const char * env = std::getenv("GLOAS_MODELS"); env && *env) dirs.push_back(env);
    for (const auto & d : dirs)
        for (const char * f : {"stories260K.gguf", "stories260K.bin"})
            if (file_exists(d + "/" + f)) return d + "/" + f;
    skip_missing("models/stories260K.bin", "models/fetch.sh --default, or GLOAS_MODELS");
}

std::string require_data(const std::string & name) {
    std::vector<std::string> dirs;
    if (const char * env = std::getenv("GLOAS_DATA"); env && *env) dirs.push_back(env);
    dirs.push_back(std::string(GLOAS_SOURCE_DIR) + "/../shared/data");
    for (const auto & d : dirs)
        if (file_exists(d + "/" + name)) return d + "/" + name;
    skip_missing("data/" + name, "../shared/data beside the checkout, or GLOAS_DATA");
}

std::string read_file(const std::string & path) {
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open " + path);
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    return s;
}

void write_file(const std::string & path, const void * data, size_t n) {
    FILE * f = std::fopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot create " + path);
    if (n && std::fwrite(data, 1, n, f) != n) {
        std::fclose(f);
        throw std::runtime_error("cannot write " + path);
    }
    std::fclose(f);
}

std::string temp_dir(const std::string & tag) {
    std::string base = std::string(GLOAS_BIN_DIR) + "/../test-tmp";
    ::mkdir(base.c_str(), 0755);
    std::string tmpl = base + "/" + tag + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    return std::string(buf.data());
}

// In a cross build run under qemu-user (GLOAS_TEST_EMULATOR, the build's
// CMAKE_CROSSCOMPILING_EMULATOR, its words split by |), a program of the
// target architecture runs under the emulator, which the host starts
// natively; other programs (/bin/bash) run as they are.
void exec_program(const std::string & exe, std::vector<char *> argv) {
#if defined(GLOAS_TEST_EMULATOR)
    unsigned char h[20] = {};
    if (FILE * f = std::fopen(exe.c_str(), "rb")) {
        if (std::fread(h, 1, sizeof h, f) != sizeof h) h[0] = 0;
        std::fclose(f);
    }
    if (std::memcmp(h, "\x7f" "ELF", 4) == 0 && (h[18] | h[19] << 8) == GLOAS_TEST_EMULATOR_MACHINE) {
        static std::vector<std::string> emu;
        std::string e = GLOAS_TEST_EMULATOR;
        for (size_t p = 0; p <= e.size();) {
            const size_t q = std::min(e.find('|', p), e.size());
            emu.push_back(e.substr(p, q - p));
            p = q + 1;
        }
        std::vector<char *> a;
        for (auto & x : emu) a.push_back(const_cast<char *>(x.c_str()));
        a.insert(a.end(), argv.begin(), argv.end());
        ::execv(a[0], a.data());
        ::_exit(127);
    }
#endif
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
}

// A tool's executable: the build's bin/TOOL, or TOOL itself if absolute.
static std::string tool_path(const std::string & tool) {
    return tool.rfind('/', 0) == 0 ? tool : std::string(GLOAS_BIN_DIR) + "/" + tool;
}

// In a forked child: runs exe with args, or exits 127 saying why not.
[[noreturn]] static void exec_tool(const std::string & exe, const std::vector<std::string> & args) {
    // Tools keep K/V pages under the build tree, never in the user's cache.
    if (!std::getenv("GLOAS_KV_DIR")) ::setenv("GLOAS_KV_DIR", (std::string(GLOAS_BIN_DIR) + "/../test-tmp/kv").c_str(), 1);
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>(exe.c_str()));
    for (const auto & a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    if (::access(exe.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "exec %s: %s\n", exe.c_str(), std::strerror(errno));
        ::_exit(127);
    }
    exec_program(exe, argv);
    ::_exit(127);
}

run_result run_tool(const std::string & tool, const std::vector<std::string> & args,
                    const std::string & stdin_data) {
    std::signal(SIGPIPE, SIG_IGN);  // a tool may exit before reading all of stdin
    const std::string exe = tool_path(tool);
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (::pipe(in_pipe) || ::pipe(out_pipe) || ::pipe(err_pipe)) throw std::runtime_error("pipe failed");
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        ::dup2(in_pipe[0], 0);
        ::dup2(out_pipe[1], 1);
        ::dup2(err_pipe[1], 2);
        for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
        exec_tool(exe, args);
    }
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    run_result r;
    size_t in_off = 0;
    int in_fd = in_pipe[1];
    if (stdin_data.empty()) { ::close(in_fd); in_fd = -1; }
    bool out_open = true, err_open = true;
    char buf[65536];
    while (out_open || err_open) {
        struct pollfd fds[3];
        int n = 0;
        int io = -1, ie = -1, ii = -1;
        if (out_open) { fds[n] = {out_pipe[0], POLLIN, 0}; io = n++; }
        if (err_open) { fds[n] = {err_pipe[0], POLLIN, 0}; ie = n++; }
        if (in_fd >= 0) { fds[n] = {in_fd, POLLOUT, 0}; ii = n++; }
        if (::poll(fds, nfds_t(n), -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (io >= 0 && fds[io].revents) {
            ssize_t k = ::read(out_pipe[0], buf, sizeof buf);
            if (k > 0) r.out.append(buf, size_t(k)); else out_open = false;
        }
        if (ie >= 0 && fds[ie].revents) {
            ssize_t k = ::read(err_pipe[0], buf, sizeof buf);
            if (k > 0) r.err.append(buf, size_t(k)); else err_open = false;
        }
        if (ii >= 0 && fds[ii].revents) {
            ssize_t k = ::write(in_fd, stdin_data.data() + in_off, stdin_data.size() - in_off);
            if (k > 0) in_off += size_t(k);
            if (k <= 0 || in_off == stdin_data.size()) { ::close(in_fd); in_fd = -1; }
        }
    }
    if (in_fd >= 0) ::close(in_fd);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

run_result run_gloas_like(const run_result & ref, const std::vector<std::string> & args) {
    run_result r = run_tool("gloas", args);
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out == ref.out);
    return r;
}

std::vector<vocab_case> read_vocab_cases(const std::string & vocab) {
    const std::string inp = read_file(data_file(vocab + ".inp"));
    const std::string out = read_file(data_file(vocab + ".out"));
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<vocab_case> cases;
    for (size_t pos = 0; pos < inp.size();) {
        const size_t e = inp.find(sep, pos);
        REQUIRE_MESSAGE(e != std::string::npos, "case " << cases.size() << " has no separator");
        cases.push_back({inp.substr(pos, e - pos), {}});
        pos = e + sep.size();
    }
    std::istringstream lines(out);
    std::string line;
    size_t k = 0;
    while (std::getline(lines, line)) {
        REQUIRE_MESSAGE(k < cases.size(), ".out has more lines than .inp has cases");
        std::istringstream ids(line);
        int64_t id;
        while (ids >> id) cases[k].ids.push_back(int32_t(id));
        ++k;
    }
    REQUIRE_MESSAGE(k == cases.size(), ".out has " << k << " lines for " << cases.size() << " cases");
    return cases;
}

int spawn_tool(const std::string & tool, const std::vector<std::string> & args,
               const std::string & out_path, const std::string & err_path) {
    const std::string exe = tool_path(tool);
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int n = ::open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || n < 0) ::_exit(126);
        ::dup2(n, 0);
        ::dup2(o, 1);
        ::dup2(e, 2);
        exec_tool(exe, args);
    }
    return int(pid);
}

int wait_tool(int pid) {
    int st = 0;
    ::waitpid(pid_t(pid), &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

} // namespace gloas::test
