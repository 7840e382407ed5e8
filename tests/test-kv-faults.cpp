// The K/V folder never takes a run down: a full disk, a folder that cannot be
// created, a read-only filesystem; the modes of what it creates; the
// capacity across the page files of a folder; a damaged slot table; gloas-kv.
//
// Full and read-only filesystems are small tmpfs mounts in a mount namespace
// of this process (its children, the tools run, share it; the mounts go with
// the process). That needs root or CAP_SYS_ADMIN (CI and the development
// machine run as root); elsewhere those cases say why they are skipped.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "kvcache/kv-folder.h"
#include "kvcache/kv-store.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

// Mounts made by this process stay in its own mount namespace. Empty when
// that works, else why not.
const std::string & private_mounts() {
    static const std::string why = []() -> std::string {
        if (::unshare(CLONE_NEWNS) != 0) return format("cannot make a mount namespace (unshare: %s)", std::strerror(errno));
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
            return format("cannot make mounts private (mount: %s)", std::strerror(errno));
        return {};
    }();
    return why;
}

// unshare() refuses a process with threads: make the namespace before main.
const bool made_private_mounts = (private_mounts(), true);

// A tmpfs of `size` (mount's size= syntax) at `dir`; empty, or why not.
std::string mount_tmpfs(const std::string & dir, const std::string & size) {
    if (!private_mounts().empty()) return private_mounts();
    const std::string opt = "size=" + size + ",mode=0755";
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, opt.c_str()) != 0)
        return format("cannot mount a tmpfs (mount: %s)", std::strerror(errno));
    return {};
}

std::string remount_read_only(const std::string & dir) {
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, nullptr) != 0)
        return format("cannot remount read-only (mount: %s)", std::strerror(errno));
    return {};
}

void skipped(const std::string & why) {
    MESSAGE("skipped (not a missing file): " << why << "; this case needs root or CAP_SYS_ADMIN to mount a tmpfs");
}

std::string prompt_file(const std::string & dir, size_t bytes) {
    const std::string text = test::read_file(test::require_data("tinystories-valid-excerpt.txt"));
    const std::string path = dir + "/prompt.txt";
    test::write_file(path, text.substr(0, std::min(bytes, text.size())));
    return path;
}

int count(const std::string & s, const std::string & part) {
    int n = 0;
    for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1)) ++n;
    return n;
}

// "prompt N tokens (R reused ...": R.
long reused(const std::string & err) {
    const size_t at = err.find(" tokens (");
    return at == std::string::npos ? -1 : std::strtol(err.c_str() + at + 9, nullptr, 10);
}

// Sets (or, value null, unsets) an environment variable until destroyed.
struct scoped_env {
    std::string name;
    bool had = false;
    std::string old;
    scoped_env(const char * n, const char * value) : name(n) {
        if (const char * v = std::getenv(n)) {
            had = true;
            old = v;
        }
        if (value) ::setenv(n, value, 1);
        else ::unsetenv(n);
    }
    ~scoped_env() {
        if (had) ::setenv(name.c_str(), old.c_str(), 1);
        else ::unsetenv(name.c_str());
    }
};

// Runs gloas with no $GLOAS_KV_DIR and no $XDG_CACHE_HOME (test::run_tool
// sets the first) and $HOME = home: the folder a user gets by default.
test::run_result run_gloas_home(const std::vector<std::string> & args, const std::string & home, const std::string & tmp) {
    const std::string exe = std::string(GLOAS_BIN_DIR) + "/gloas", out = tmp + "/home.out", err = tmp + "/home.err";
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0) ::_exit(126);
        ::dup2(o, 1);
        ::dup2(e, 2);
        ::unsetenv("GLOAS_KV_DIR");
        ::unsetenv("XDG_CACHE_HOME");
        ::setenv("HOME", home.c_str(), 1);
        std::vector<char *> argv{const_cast<char *>(exe.c_str())};
        for (const std::string & a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        test::exec_program(exe, argv);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    test::run_result r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = test::read_file(out);
    r.err = test::read_file(err);
    return r;
}

mode_t mode_of(const std::string & path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

page_geometry stories_geometry(const model & m, int32_t page = 32) {
    return page_geometry(page, m.hp);
}

std::vector<std::string> base_args(const std::string & prompt) {
    return {"-m", test::require_model("stories260K.bin"), "--temp", "0", "-t", "1", "-f", prompt, "-n", "16"};
}

// A case's temporary folder, the gloas arguments of a prompt of its first
// `bytes` of text, and what a memory-only run of them prints.
struct prompt_case {
    std::string dir;
    std::vector<std::string> base;
    test::run_result ref;
};

prompt_case make_prompt_case(const std::string & tag, size_t bytes) {
    prompt_case c;
    c.dir = test::temp_dir(tag);
    c.base = base_args(prompt_file(c.dir, bytes));
    c.ref = test::run_tool("gloas", test::with_args(c.base, {"--kv-dir", "none"}));
    REQUIRE(c.ref.status == 0);
    return c;
}

// An empty folder `mnt` in dir, for a tmpfs.
std::string mount_point(const std::string & dir) {
    const std::string mnt = dir + "/mnt";
    REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
    return mnt;
}

} // namespace

TEST_CASE("a full disk: no signal, one warning, the memory-only text, the published pages kept") {
    // 457 tokens: 14 pages of 20 KiB (F16), of which 200 KiB hold fewer than 10.
    const auto [dir, base, ref] = make_prompt_case("kv-full", 950);
    const std::string mnt = mount_point(dir);
    const std::string why = mount_tmpfs(mnt, "200k");
    if (!why.empty()) return skipped(why);

    const test::run_result first = test::run_tool("gloas", test::with_args(base, {"--kv-dir", mnt}));
    INFO(first.err);
    CHECK(first.status == 0);  // 135 (SIGBUS) when a page is written where no block could be had
    CHECK(first.out == ref.out);
    CHECK(count(first.err, "warning:") == 1);
    CHECK(count(first.err, "No space left on device") == 1);

    // The pages published before the disk filled are whole, and reused.
    const test::run_result check = test::run_tool("gloas-kv", {"verify", "--kv-dir", mnt});
    CHECK(check.status == 0);
    CHECK(check.out.find(" 0 bad") != std::string::npos);
    CHECK(check.out.find("0 pages checked") == std::string::npos);
    const test::run_result second = test::run_tool("gloas", test::with_args(base, {"--kv-dir", mnt}));
    INFO(second.err);
    CHECK(second.status == 0);
    CHECK(second.out == ref.out);
    CHECK(reused(second.err) >= 5 * 32);
    CHECK(count(second.err, "warning:") <= 1);
    ::umount(mnt.c_str());
}

TEST_CASE("a full disk when the page file is created: the run goes on in memory") {
    const auto [dir, base, ref] = make_prompt_case("kv-full-create", 200);
    const std::string mnt = mount_point(dir);
    const std::string why = mount_tmpfs(mnt, "8k");
    if (!why.empty()) return skipped(why);
    // Fill the filesystem.
    const std::string filler = mnt + "/filler";
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT, 0600);
    REQUIRE(fd >= 0);
    const std::vector<char> block(4096, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {}
    ::close(fd);
    const test::run_result r = test::run_tool("gloas", test::with_args(base, {"--kv-dir", mnt}));
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(r.out == ref.out);
    CHECK(count(r.err, "warning:") == 1);
    CHECK(r.err.find("kept in memory") != std::string::npos);
    // The page file left empty is no damage: gloas-kv verify passes, and the
    // next run (with room) starts it afresh without setting anything aside.
    const test::run_result v = test::run_tool("gloas-kv", {"verify", "--kv-dir", mnt});
    INFO(v.out);
    CHECK(v.status == 0);
    ::unlink(filler.c_str());
    const test::run_result again = test::run_tool("gloas", test::with_args(base, {"--kv-dir", mnt}));
    INFO(again.err);
    CHECK(again.status == 0);
    CHECK(again.out == ref.out);
    CHECK(again.err.find("set aside") == std::string::npos);
    ::umount(mnt.c_str());
}

TEST_CASE("a default folder that cannot be created: a warning and the run; a named one: an error naming --kv-dir none") {
    const auto [dir, base, ref] = make_prompt_case("kv-unusable", 200);
    {
        const test::run_result r = run_gloas_home(base, "/proc/foo", dir);
        INFO(r.err);
        CHECK(r.status == 0);  // 1 ("cannot create the K/V folder") when the default folder had to be usable
        CHECK(r.out == ref.out);
        CHECK(count(r.err, "warning:") == 1);
        CHECK(r.err.find("/proc/foo/.cache/gloas/kv") != std::string::npos);
        CHECK(r.err.find("kept in memory") != std::string::npos);
    }
    {
        scoped_env a("GLOAS_KV_DIR", "/proc/foo/kv");
        const test::run_result r = test::run_tool("gloas", base);
        CHECK(r.status == 0);
        CHECK(r.out == ref.out);
    }
    const test::run_result named = test::run_tool("gloas", test::with_args(base, {"--kv-dir", "/proc/foo/kv"}));
    CHECK(named.status == 1);
    CHECK(named.out.empty());
    CHECK(named.err.find("/proc/foo/kv") != std::string::npos);
    CHECK(named.err.find("--kv-dir none") != std::string::npos);
}

TEST_CASE("a read-only filesystem holding a valid page file: its pages are reused, nothing is written") {
    const auto [dir, base, ref] = make_prompt_case("kv-readonly", 950);
    const std::string mnt = mount_point(dir);
    std::string why = mount_tmpfs(mnt, "2m");
    if (!why.empty()) return skipped(why);
    const std::string kv = mnt + "/kv";
    REQUIRE(test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv})).status == 0);
    const std::vector<page_file_info> before = kv_folder_list(kv);
    REQUIRE(before.size() == 1);
    const std::string bytes_before = test::read_file(before[0].path);
    why = remount_read_only(mnt);
    if (!why.empty()) {
        ::umount(mnt.c_str());
        return skipped(why);
    }
    // The default folder and a named one alike: the file can be read.
    for (bool named : {false, true}) {
        INFO("named " << named);
        scoped_env a("GLOAS_KV_DIR", kv.c_str());
        const test::run_result r = test::run_tool("gloas", named ? test::with_args(base, {"--kv-dir", kv}) : base);
        INFO(r.err);
        CHECK(r.status == 0);  // 1 when the file had to be opened for writing
        CHECK(r.out == ref.out);
        CHECK(reused(r.err) == 14 * 32 + 9);  // the full pages and the tail with the last token's logits: all
        CHECK(count(r.err, "warning:") == 1);
        CHECK(r.err.find("read-only") != std::string::npos);
    }
    CHECK(test::read_file(before[0].path) == bytes_before);
    // A read-only filesystem with no page file for this model: memory, or an error for a named folder.
    const auto q8 = test::with_args(base, {"--kv-type", "q8_0"});
    const test::run_result ref8 = test::run_tool("gloas", test::with_args(q8, {"--kv-dir", "none"}));
    {
        scoped_env a("GLOAS_KV_DIR", kv.c_str());
        const test::run_result r = test::run_tool("gloas", q8);
        CHECK(r.status == 0);
        CHECK(r.out == ref8.out);
        CHECK(r.err.find("kept in memory") != std::string::npos);
    }
    const test::run_result named = test::run_tool("gloas", test::with_args(q8, {"--kv-dir", kv}));
    CHECK(named.status == 1);
    CHECK(named.err.find("--kv-dir none") != std::string::npos);
    ::umount(mnt.c_str());
}

TEST_CASE("page files are 0600 and the folders made for them 0700, whatever the umask") {
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("kv-modes");
    const mode_t old = ::umask(0);
    {
        kv_store_params p;
        p.dir = dir + "/a/b/kv";
        kv_store st(p, stories_geometry(*m), m->fingerprint);
        CHECK(mode_of(dir + "/a") == 0700);
        CHECK(mode_of(dir + "/a/b") == 0700);
        CHECK(mode_of(dir + "/a/b/kv") == 0700);
        CHECK(mode_of(st.path()) == 0600);
    }
    ::umask(0777);  // one that would leave them unusable
    {
        kv_store_params p;
        p.dir = dir + "/c/kv";
        kv_store st(p, stories_geometry(*m), m->fingerprint);
        CHECK(mode_of(dir + "/c") == 0700);
        CHECK(mode_of(dir + "/c/kv") == 0700);
        CHECK(mode_of(st.path()) == 0600);
    }
    ::umask(old);
    // A file an older build left readable by others is made private when opened.
    kv_store_params p;
    p.dir = dir + "/c/kv";
    std::string path;
    {
        kv_store st(p, stories_geometry(*m), m->fingerprint);
        path = st.path();
    }
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    { kv_store st(p, stories_geometry(*m), m->fingerprint); }
    CHECK(mode_of(path) == 0600);
}

TEST_CASE("a damaged slot table: one line for all the slots dropped") {
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("kv-damaged-table");
    context_params cp;
    cp.kv.dir = dir;
    std::string path;
    {
        context ctx(*m, cp);
        const std::string text = test::read_file(test::require_data("tinystories-valid-excerpt.txt")).substr(0, 950);
        std::vector<int32_t> toks = m->tok.encode(text, true);
        ctx.eval_prompt(toks.data(), int32_t(toks.size()));
        ctx.store().flush();
        REQUIRE(ctx.store().stored_pages() >= 12);
        path = ctx.store().path();
    }
    // 5 entries with a state no writer writes.
    const int fd = ::open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    for (uint64_t s : {0, 3, 4, 7, 11}) {
        const uint32_t bad = 7;
        REQUIRE(::pwrite(fd, &bad, sizeof bad, off_t(PAGE_FILE_HEADER_BYTES + s * sizeof(slot_entry) +
                                                     offsetof(slot_entry, state))) == ssize_t(sizeof bad));
    }
    ::close(fd);
    kv_store_params p;
    p.dir = dir;
    kv_store st(p, stories_geometry(*m), m->fingerprint);
    const std::string notes = st.take_notices();
    INFO(notes);
    CHECK(count(notes, "\n") == 1);
    // The partial 15th page was given back when its sequence ended, and its
    // tokens stored as a tail in one more slot: 16 slots used.
    CHECK(notes.find("5 of 16 slots damaged, dropped") != std::string::npos);
    CHECK(notes.find(path) != std::string::npos);
    CHECK(st.stored_pages() == 14 - 5);
}

TEST_CASE("--kv-capacity bounds the folder across page files; set-aside files count and go first") {
    const std::string dir = test::temp_dir("kv-folder-bound");
    const std::string kv = dir + "/kv";
    const auto base = base_args(prompt_file(dir, 950));  // 14 pages: 280 KiB in F16, 149 KiB in Q8_0
    const uint64_t cap = 200 * 1024;
    auto pages_bytes = [&] {
        uint64_t n = 0;
        for (const page_file_info & f : kv_folder_list(kv)) n += f.readable && !f.set_aside ? f.page_bytes : f.disk_bytes;
        return n;
    };
    REQUIRE(make_private_dirs(kv) == 0);
    const std::string bad = kv + "/0123456789abcdef-f16-p32.kv.bad-1-1";
    test::write_file(bad, std::string(64 * 1024, 'x'));

    const test::run_result f16 = test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv, "--kv-capacity", "200k"}));
    INFO(f16.err);
    REQUIRE(f16.status == 0);
    CHECK(::access(bad.c_str(), F_OK) != 0);  // set aside, counted, and removed to make room
    CHECK(pages_bytes() <= cap);
    CHECK(pages_bytes() > cap / 2);

    // Another K/V type is another page file in the same folder: together they stay within the bound.
    const test::run_result q8 =
        test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv, "--kv-capacity", "200k", "--kv-type", "q8_0"}));
    INFO(q8.err);
    REQUIRE(q8.status == 0);
    CHECK(pages_bytes() <= cap);
    const std::vector<page_file_info> files = kv_folder_list(kv);
    REQUIRE(files.size() == 1);  // the F16 file, unused, made room
    CHECK(files[0].kv_type == type::Q8_0);
    CHECK(files[0].pages == 15);  // and the tail

    // A page file in use is never removed: the new one gets what is left.
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    kv_store_params p;
    p.dir = kv;
    p.kv_type = type::F32;
    p.capacity_bytes = 16 << 20;
    kv_store held(p, stories_geometry(*m), m->fingerprint);
    for (int i = 0; i < 2; ++i) {
        page_ref r = held.begin_page();
        std::memset(const_cast<uint8_t *>(r.data), i + 1, held.page_bytes());
        held.publish(r.slot, uint64_t(1000 + i), 0, 32);
        held.flush();
        held.release(r.slot);
    }
    const test::run_result f16b = test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv, "--kv-capacity", "200k"}));
    INFO(f16b.err);
    REQUIRE(f16b.status == 0);
    CHECK(::access(held.path().c_str(), F_OK) == 0);
    CHECK(pages_bytes() <= cap);
}

TEST_CASE("gloas-kv lists, verifies and clears the folder") {
    const std::string dir = test::temp_dir("gloas-kv");
    const std::string kv = dir + "/kv";
    const auto base = base_args(prompt_file(dir, 950));
    REQUIRE(test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv})).status == 0);
    REQUIRE(test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv, "--kv-type", "q8_0", "--kv-page", "64"})).status == 0);

    const test::run_result list = test::run_tool("gloas-kv", {"list", "--kv-dir", kv});
    INFO(list.out);
    CHECK(list.status == 0);
    CHECK(count(list.out, "stories260K.bin") >= 2);
    CHECK(list.out.find(" f16 ") != std::string::npos);
    CHECK(list.out.find(" q8_0 ") != std::string::npos);
    CHECK(list.out.find(" 64 ") != std::string::npos);
    CHECK(list.out.find("2 files, 23 pages") != std::string::npos);  // 14 of 32 tokens, 7 of 64, and a tail each
    CHECK(list.out.find("last use") != std::string::npos);

    const test::run_result ok = test::run_tool("gloas-kv", {"verify", "--kv-dir", kv});
    CHECK(ok.status == 0);
    CHECK(ok.out.find("23 pages checked, 0 bad") != std::string::npos);

    // A flipped byte in a published page.
    std::string f16;
    for (const page_file_info & f : kv_folder_list(kv))
        if (f.kv_type == type::F16) f16 = f.path;
    REQUIRE(!f16.empty());
    {
        const int fd = ::open(f16.c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        page_file_header h;
        REQUIRE(::pread(fd, &h, sizeof h, 0) == ssize_t(sizeof h));
        uint8_t b = 0;
        const off_t at = off_t(h.data_offset + 2 * h.slot_stride + 100);
        REQUIRE(::pread(fd, &b, 1, at) == 1);
        b ^= 0x40;
        REQUIRE(::pwrite(fd, &b, 1, at) == 1);
        ::close(fd);
    }
    const test::run_result bad = test::run_tool("gloas-kv", {"verify", "--kv-dir", kv});
    CHECK(bad.status == 1);
    CHECK(bad.out.find("slot 2 ") != std::string::npos);
    CHECK(bad.out.find("23 pages checked, 1 bad") != std::string::npos);
    const test::run_result bad8 = test::run_tool("gloas-kv", {"verify", "--kv-dir", kv, "--model", "nothing-like-it"});
    CHECK(bad8.status == 0);

    // One model's pages, by name and by file.
    CHECK(test::run_tool("gloas-kv", {"list", "--kv-dir", kv, "--model", "other.gguf"}).out.find("0 files") != std::string::npos);
    const test::run_result clear1 = test::run_tool("gloas-kv", {"clear", "--kv-dir", kv, "--model", "stories260K.bin"});
    CHECK(clear1.status == 0);
    CHECK(clear1.out.find("removed 2 files") != std::string::npos);
    CHECK(kv_folder_list(kv).empty());
    REQUIRE(test::run_tool("gloas", test::with_args(base, {"--kv-dir", kv})).status == 0);
    test::write_file(kv + "/0123456789abcdef-f16-p32.kv.bad-1-1", "x");
    const test::run_result clear2 =
        test::run_tool("gloas-kv", {"clear", "--kv-dir", kv, "--model", test::require_model("stories260K.bin")});
    CHECK(clear2.status == 0);
    CHECK(clear2.out.find("removed 1 file ") != std::string::npos);
    CHECK(kv_folder_list(kv).size() == 1);  // another model's set-aside file stays
    const test::run_result all = test::run_tool("gloas-kv", {"clear", "--kv-dir", kv});
    CHECK(all.status == 0);
    CHECK(kv_folder_list(kv).empty());

    // The default folder is gloas's.
    {
        scoped_env a("GLOAS_KV_DIR", kv.c_str());
        REQUIRE(test::run_tool("gloas", base).status == 0);
        CHECK(test::run_tool("gloas-kv", {"list"}).out.find("1 file, 15 pages") != std::string::npos);  // 14 and a tail
    }

    const test::run_result help = test::run_tool("gloas-kv", {"--help"});
    CHECK(help.status == 0);
    for (const char * s : {"list", "verify", "clear", "--kv-dir", "--model", "GLOAS_KV_DIR", "exit status"})
        CHECK(help.out.find(s) != std::string::npos);
    for (const std::vector<std::string> & args :
         std::vector<std::vector<std::string>>{{}, {"frobnicate"}, {"list", "--bogus"}, {"list", "--kv-dir"},
                                               {"list", "verify"}, {"clear", "--model", ""}}) {
        const test::run_result r = test::run_tool("gloas-kv", args);
        CHECK(r.status == 2);
        CHECK(r.err.find("--help") != std::string::npos);
    }
}

TEST_CASE("gloas --help states the capacity's default and that it bounds the folder") {
    const test::run_result r = test::run_tool("gloas", {"--help"});
    CHECK(r.status == 0);
    const size_t at = r.out.find("--kv-capacity");
    REQUIRE(at != std::string::npos);
    const std::string text = r.out.substr(at, 300);
    CHECK(text.find("folder") != std::string::npos);
    CHECK(text.find("default: 4G") != std::string::npos);
}
