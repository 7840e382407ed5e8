// gloas-kv: lists, verifies and clears the K/V folder (kvcache/kv-folder.h).
//
//   gloas-kv list   [--kv-dir DIR] [--model NAME|FILE]
//   gloas-kv verify [--kv-dir DIR] [--model NAME|FILE]
//   gloas-kv clear  [--kv-dir DIR] [--model NAME|FILE]
#include "decoder/model.h"
#include "kvcache/kv-folder.h"
#include "base/error.h"
#include "tools/common/cli.h"
#include "tools/common/files.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

void print_help() {
    std::printf(R"(usage: gloas-kv COMMAND [options]

Manages the K/V folder: the page files in which gloas keeps the K/V pages of
every prompt it has seen, so that a later prompt with the same beginning
reuses them. Each page file holds the pages of one model, K/V type and page
size; damaged files are set aside beside them as *.kv.bad-*.

commands:
  list                one line per page file: model, model file, K/V type,
                      page size in tokens, published pages (a prompt's
                      partial last page counts as one), their bytes, bytes
                      on disk, last use; then the folder's total
  verify              checks the checksum of every published page; reports
                      each bad page and page files that cannot be read, and
                      exits 1 if there is any
  clear               removes the page files and set-aside files (all, or one
                      model's with --model); a run that has one open keeps
                      working without it

options:
  --kv-dir DIR        the K/V folder (default: $GLOAS_KV_DIR, else
                      $XDG_CACHE_HOME/gloas/kv, else ~/.cache/gloas/kv, as
                      gloas uses)
  --model NAME|FILE   only the page files of this model: its name or model
                      file name as list shows them, or the model file itself
                      (which matches its pages exactly)
  -h, --help          this help

exit status: 0 done, 1 bad pages or a folder that cannot be read or changed,
2 a bad command line.
)");
}

std::string human_bytes(uint64_t b) {
    if (b >= (uint64_t(1) << 30)) return format("%.1f GiB", double(b) / double(uint64_t(1) << 30));
    if (b >= (uint64_t(1) << 20)) return format("%.1f MiB", double(b) / double(uint64_t(1) << 20));
    if (b >= 1024) return format("%.1f KiB", double(b) / 1024.0);
    return format("%llu B", (unsigned long long) b);
}

std::string when(std::time_t t) {
    char buf[32];
    struct tm tm;
    if (!localtime_r(&t, &tm) || !std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm)) return "?";
    return buf;
}

std::string base_name(const std::string & p) { return p.substr(p.find_last_of('/') + 1); }

// The fingerprint a page file's name (or a set-aside one's) starts with.
bool name_fingerprint(const std::string & path, uint64_t * fp) {
    const std::string n = base_name(path);
    if (n.size() < 17 || n[16] != '-') return false;
    const std::string hex = n.substr(0, 16);
    char * end = nullptr;
    *fp = std::strtoull(hex.c_str(), &end, 16);
    return end == hex.c_str() + hex.size();
}

struct model_filter {
    bool on = false;
    std::string name;
    bool by_fingerprint = false;
    uint64_t fingerprint = 0;
    std::vector<uint64_t> named;  // fingerprints of the page files labelled `name`

    void prepare(const std::vector<page_file_info> & files) {
        for (const page_file_info & f : files)
            if (f.readable && !f.set_aside && (f.model_name == name || f.model_file == name)) named.push_back(f.fingerprint);
    }
    bool match(const page_file_info & f) const {
        if (!on) return true;
        uint64_t fp = f.fingerprint;
        if (!f.readable && !name_fingerprint(f.path, &fp)) return false;
        if (by_fingerprint) return fp == fingerprint;
        for (uint64_t x : named)
            if (x == fp) return true;
        return false;
    }
};

int cmd_list(const std::string & dir, const std::vector<page_file_info> & files, const model_filter & mf) {
    std::printf("%-20s %-24s %-5s %5s %8s %11s %11s  %-16s  %s\n", "model", "model file", "kv", "page", "pages", "bytes",
                "on disk", "last use", "page file");
    uint64_t n = 0, pages = 0, bytes = 0, disk = 0;
    for (const page_file_info & f : files) {
        if (!mf.match(f)) continue;
        n++;
        disk += f.disk_bytes;
        if (f.readable && !f.set_aside) {
            pages += f.pages;
            bytes += f.page_bytes;
            std::printf("%-20s %-24s %-5s %5d %8llu %11s %11s  %-16s  %s\n", f.model_name.empty() ? "?" : f.model_name.c_str(),
                        f.model_file.empty() ? "?" : f.model_file.c_str(), type_name(f.kv_type), f.page_tokens,
                        (unsigned long long) f.pages, human_bytes(f.page_bytes).c_str(), human_bytes(f.disk_bytes).c_str(),
                        when(f.last_use).c_str(), base_name(f.path).c_str());
        } else {
            std::printf("%-20s %-24s %-5s %5s %8s %11s %11s  %-16s  %s (%s)\n", "-", "-", "-", "-", "-", "-",
                        human_bytes(f.disk_bytes).c_str(), when(f.last_use).c_str(), base_name(f.path).c_str(),
                        f.set_aside ? "set aside" : f.problem.c_str());
        }
    }
    std::printf("%s: %llu file%s, %llu pages, %s of pages, %s on disk\n", dir.c_str(), (unsigned long long) n,
                n == 1 ? "" : "s", (unsigned long long) pages, human_bytes(bytes).c_str(), human_bytes(disk).c_str());
    return 0;
}

int cmd_verify(const std::vector<page_file_info> & files, const model_filter & mf) {
    uint64_t checked = 0, n_bad = 0, unreadable = 0;
    for (const page_file_info & f : files) {
        if (!mf.match(f) || f.set_aside) continue;
        std::vector<page_check> bad;
        try {
            checked += kv_folder_verify(f.path, bad);
        } catch (const error & e) {
            std::printf("%s\n", e.what());
            unreadable++;
            continue;
        }
        for (const page_check & b : bad)
            std::printf("%s: the page in slot %llu (prefix hash %016" PRIx64 ") fails its checksum\n", f.path.c_str(),
                        (unsigned long long) b.slot, b.hash);
        n_bad += bad.size();
    }
    std::printf("%llu pages checked, %llu bad%s\n", (unsigned long long) checked, (unsigned long long) n_bad,
                unreadable ? format(", %llu page file%s unreadable", (unsigned long long) unreadable, unreadable == 1 ? "" : "s").c_str() : "");
    return n_bad || unreadable ? 1 : 0;
}

int cmd_clear(const std::string & dir, const std::vector<page_file_info> & files, const model_filter & mf) {
    uint64_t n = 0, bytes = 0;
    int rc = 0;
    for (const page_file_info & f : files) {
        if (!mf.match(f)) continue;
        if (::unlink(f.path.c_str()) != 0) {
            std::fprintf(stderr, "gloas-kv: %s: cannot remove: %s\n", f.path.c_str(), std::strerror(errno));
            rc = 1;
            continue;
        }
        n++;
        bytes += f.disk_bytes;
    }
    std::printf("%s: removed %llu file%s (%s)\n", dir.c_str(), (unsigned long long) n, n == 1 ? "" : "s",
                human_bytes(bytes).c_str());
    return rc;
}

} // namespace

int main(int argc, char ** argv) {
    cli::prog = "gloas-kv";
    std::string command, dir, model;
    bool dir_given = false, model_given = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&] { return std::string(cli::next_value(argc, argv, i)); };
        if (a == "-h" || a == "--help") {
            print_help();
            return 0;
        } else if (a == "--kv-dir") {
            dir = value();
            dir_given = true;
        } else if (a == "--model") {
            model = value();
            model_given = true;
            if (model.empty()) cli::usage_error("--model needs a model name or file");
        } else if (!a.empty() && a[0] == '-') {
            cli::usage_error("unknown option '" + a + "'");
        } else if (command.empty()) {
            if (a != "list" && a != "verify" && a != "clear")
                cli::usage_error("unknown command '" + a + "' (list, verify or clear)");
            command = a;
        } else {
            cli::usage_error("one command at a time, got '" + command + "' and '" + a + "'");
        }
    }
    if (command.empty()) cli::usage_error("give a command: list, verify or clear");
    if (!dir_given) dir = kv_default_dir();
    if (dir.empty() || dir == "none")
        cli::usage_error(dir_given ? "--kv-dir none has no folder to manage"
                                   : "no K/V folder: $GLOAS_KV_DIR, $XDG_CACHE_HOME and $HOME are unset (give --kv-dir)");
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno != ENOENT) {
            std::fprintf(stderr, "gloas-kv: %s: %s\n", dir.c_str(), std::strerror(errno));
            return 1;
        }
        std::printf("%s: no K/V folder (nothing stored yet)\n", dir.c_str());
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        std::fprintf(stderr, "gloas-kv: %s: not a folder\n", dir.c_str());
        return 1;
    }
    if (::access(dir.c_str(), R_OK | X_OK) != 0) {
        std::fprintf(stderr, "gloas-kv: %s: cannot read the folder: %s\n", dir.c_str(), std::strerror(errno));
        return 1;
    }
    return cli::run_main([&] {
        const std::vector<page_file_info> files = kv_folder_list(dir);
        model_filter mf;
        if (model_given) {
            mf.on = true;
            mf.name = model;
            if (cli::is_file(model)) {
                mf.fingerprint = model::load({model, ""})->fingerprint;
                mf.by_fingerprint = true;
            } else {
                mf.prepare(files);
            }
        }
        if (command == "list") return cmd_list(dir, files, mf);
        if (command == "verify") return cmd_verify(files, mf);
        return cmd_clear(dir, files, mf);
    });
}
