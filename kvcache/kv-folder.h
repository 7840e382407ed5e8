// The K/V folder: the page files of every model, K/V type and page size
// (kvcache/page-file.h), and the damaged ones set aside beside them. What the
// store needs to keep the whole folder within its capacity, and what
// gloas-kv needs to list, verify and clear it.
//
// Page files are named <fingerprint>-<type>-p<page>.kv; a damaged one is set
// aside as <name>.kv.bad-<time>-<pid>. Nothing else in the folder is touched.
#pragma once

#include "kvcache/page-file.h"

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace gloas {

// The folder a program uses when none is given: $GLOAS_KV_DIR ('none': empty,
// pages in memory), else $XDG_CACHE_HOME/gloas/kv, else ~/.cache/gloas/kv;
// empty when none of these is set.
std::string kv_default_dir();

// mkdir -p, each folder it creates 0700 whatever the umask. 0, or -1 with errno.
int make_private_dirs(const std::string & dir);

struct page_file_info {
    std::string path;
    bool set_aside = false;     // a *.kv.bad-* file
    bool readable = false;      // a page file of this build's version whose header checks
    std::string problem;        // why not, when not readable
    uint64_t fingerprint = 0;
    type kv_type = type::F16;
    int32_t page_tokens = 0;
    std::string model_name;     // from the label (empty in files written without one)
    std::string model_file;
    uint64_t pages = 0;         // published pages, a tail (a partial page, in pieces: kv-store.h) counted once
    uint64_t page_bytes = 0;    // bytes of those pages (a tail: of all its pieces)
    uint64_t disk_bytes = 0;    // blocks the file takes on disk
    std::time_t last_use = 0;   // modification time
};

// Page files and set-aside files in `dir`, by name; empty if it cannot be read.
std::vector<page_file_info> kv_folder_list(const std::string & dir);

// Bytes on disk of the page files and set-aside files in `dir`, except `skip`.
uint64_t kv_folder_bytes(const std::string & dir, const std::string & skip);

// True when no process has the page file at `path` open (the in-use lock of
// page-file.h is free); it is then removed. Set-aside files are removed
// without asking. False when it is in use or cannot be removed.
bool kv_folder_remove_unused(const std::string & path);

// Removes set-aside files, then page files no process has open, least
// recently used first, leaving `skip`, until `bytes` are freed or nothing
// else can go. Returns the bytes freed.
uint64_t kv_folder_make_room(const std::string & dir, const std::string & skip, uint64_t bytes);

struct page_check {
    uint64_t slot = 0;
    uint64_t hash = 0;
};
// Verifies the checksum of every published page of the page file at `path`
// (each under a shared lock on its entry, so no writer changes it meanwhile).
// Returns the number checked (a tail's pieces count as one page); `bad`
// receives the slots that fail. Throws
// gloas::error when the file cannot be read.
uint64_t kv_folder_verify(const std::string & path, std::vector<page_check> & bad);

} // namespace gloas
