// Fuzz target for the page file as the K/V store opens it (kvcache/kv-store.h,
// kvcache/page-file.h): header, slot table and pages, then the store in use,
// then gloas-kv's listing and verification of the folder.
//
// A page file is mostly sparse (a slot table of 64Ki entries), so the input
// is a compact image of its bytes that matter:
//   byte 0            flags: bit 0 recompute the header checksum, bit 1
//                     recompute the checksum of every READY page in the image
//                     (so mutations reach past the checksums), bit 2 the
//                     COMPRESSED eviction policy instead of LRU
//   next 4096 bytes   the header page (file bytes [0, 4096))
//   next 8 x 64       slot table entries 0..7
//   then              the data of slots 0..7, slot_stride bytes each
// The file written is exactly that long where the image ends inside the header
// or the table; else the table is zeros past entry 7 and the file ends where
// the image's data ends. Geometry: F16 pages of 32 tokens, 1 layer, 1 KV head
// of 2 channels (256 bytes), capacity 6 pages, so eviction runs.
//
// With the file in a folder of its own, the store opens it (a damaged file
// is set aside, never used) and must: serve only pages whose bytes lie in
// the file and whose checksum matches (every byte of each is read, so a page
// past the end of the file would fault), publish and evict new pages, and
// close. Before and after, kv_folder_list and kv_folder_verify (gloas-kv
// list / verify) must read the folder, which may hold a set-aside file. Anything but
// gloas::error escaping, a fault or a sanitizer report is a bug.
//
// The seed corpus' valid file comes from this target:
//   GLOAS_FUZZ_WRITE_SEED=tests/fuzz/seeds/fuzz-page-file/valid.seed build/tests/fuzz-page-file x
// writes the file of a store given 8 pages with room for 6, and exits.
#include "kvcache/kv-folder.h"
#include "kvcache/kv-store.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

constexpr uint64_t FINGERPRINT = 0x676c6f617366757aull;
constexpr size_t N_SLOTS = 8;
const page_geometry GEOM{32, 1, 1, 2};

std::string g_dir;
size_t g_data_offset = 0;   // where slot 0's data lies in a file the store creates
size_t g_stride = 0;

kv_store_params params(bool compressed) {
    kv_store_params p;
    p.dir = g_dir;
    p.kv_type = type::F16;
    p.page_tokens = GEOM.page_tokens;
    p.capacity_bytes = 6 * GEOM.page_bytes(type::F16);
    p.policy = compressed ? evict_policy::COMPRESSED : evict_policy::LRU;
    p.compressed_share = 0.5;
    p.on_notice = [](const std::string &) {};
    return p;
}

std::string file_path() {
    char name[64];
    std::snprintf(name, sizeof name, "/%016llx-f16-p%d.kv", (unsigned long long) FINGERPRINT, GEOM.page_tokens);
    return g_dir + name;
}

void clear_dir() {
    if (DIR * d = ::opendir(g_dir.c_str())) {
        while (dirent * e = ::readdir(d))
            if (e->d_name[0] != '.') ::unlink((g_dir + "/" + e->d_name).c_str());
        ::closedir(d);
    }
}

// The prefix hashes of pages of tokens base, base+1, ...
std::vector<uint64_t> chain(int32_t base, size_t n) {
    std::vector<uint64_t> h;
    uint64_t prev = PREFIX_SEED;
    for (size_t i = 0; i < n; ++i) {
        int32_t tok[32];
        for (int32_t k = 0; k < 32; ++k) tok[k] = base + int32_t(i) * 32 + k;
        prev = page_hash(prev, tok, 32);
        h.push_back(prev);
    }
    return h;
}

void add_pages(kv_store & st, int32_t base, size_t n) {
    const std::vector<uint64_t> h = chain(base, n);
    std::vector<int64_t> held;
    for (size_t i = 0; i < n; ++i) {
        page_ref r = st.begin_page();
        std::memset(const_cast<uint8_t *>(r.data), 0, st.page_bytes());
        for (size_t k = 0; k < st.page_bytes() / 2; ++k) {
            const uint16_t half = uint16_t(0x3c00 + ((base + int32_t(i + k)) & 0x1ff));  // finite f16 values
            std::memcpy(const_cast<uint8_t *>(r.data) + 2 * k, &half, 2);
        }
        st.publish(r.slot, h[i], i ? h[i - 1] : 0, 32);
        held.push_back(r.slot);
    }
    st.flush();
    for (int64_t s : held) st.release(s);
}

volatile uint64_t g_sink;

void read_page(const page_ref & r, size_t bytes) {
    uint64_t s = 0;
    for (size_t k = 0; k < bytes; ++k) s += r.data[k];
    g_sink = s;
}

// What gloas-kv list and verify do with the folder.
void check_folder() {
    for (const page_file_info & i : kv_folder_list(g_dir)) {
        if (!i.readable || i.set_aside) continue;
        try {
            std::vector<page_check> bad;
            (void) kv_folder_verify(i.path, bad);
        } catch (const error &) {
        }
    }
}

void write_seed(const char * out) {
    clear_dir();
    {
        kv_store st(params(true), GEOM, FINGERPRINT);
        add_pages(st, 100, 8);  // capacity 6 pages: evicts (compresses) some
    }
    const int fd = ::open(file_path().c_str(), O_RDONLY);
    if (fd < 0) std::abort();
    std::vector<uint8_t> img(1 + 4096 + N_SLOTS * 64 + N_SLOTS * g_stride, 0);
    img[0] = 0;
    if (::pread(fd, img.data() + 1, 4096, 0) != 4096) std::abort();
    if (::pread(fd, img.data() + 1 + 4096, N_SLOTS * 64, 4096) != ssize_t(N_SLOTS * 64)) std::abort();
    const ssize_t n = ::pread(fd, img.data() + 1 + 4096 + N_SLOTS * 64, N_SLOTS * g_stride, off_t(g_data_offset));
    if (n < 0) std::abort();
    img.resize(1 + 4096 + N_SLOTS * 64 + size_t(n));
    ::close(fd);
    FILE * f = std::fopen(out, "wb");
    if (!f || std::fwrite(img.data(), 1, img.size(), f) != img.size()) std::abort();
    std::fclose(f);
    std::printf("wrote %s (%zu bytes)\n", out, img.size());
    clear_dir();
    std::exit(0);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char * tmp = std::getenv("TMPDIR");
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (tmp && *tmp ? tmp : "/tmp");
    g_dir = base + "/gloas-fuzz-page-file-" + std::to_string(::getpid());
    ::mkdir(g_dir.c_str(), 0700);
    clear_dir();
    {
        kv_store st(params(false), GEOM, FINGERPRINT);
    }
    page_file_header h;
    const int fd = ::open(file_path().c_str(), O_RDONLY);
    if (fd < 0 || ::pread(fd, &h, sizeof h, 0) != ssize_t(sizeof h)) std::abort();
    ::close(fd);
    g_data_offset = size_t(h.data_offset);
    g_stride = size_t(h.slot_stride);
    clear_dir();
    std::atexit([] {
        clear_dir();
        ::rmdir(g_dir.c_str());
    });
    if (const char * out = std::getenv("GLOAS_FUZZ_WRITE_SEED")) write_seed(out);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (g_dir.empty()) LLVMFuzzerInitialize(nullptr, nullptr);
    if (size < 1) return 0;
    const uint8_t flags = data[0];
    std::vector<uint8_t> img(data + 1, data + size);
    const size_t table_at = 4096, data_at = 4096 + N_SLOTS * 64;

    if ((flags & 1) && img.size() >= sizeof(page_file_header)) {
        page_file_header h;
        std::memcpy(&h, img.data(), sizeof h);
        h.checksum = page_checksum(&h, offsetof(page_file_header, checksum), 0);
        std::memcpy(img.data(), &h, sizeof h);
    }
    if ((flags & 2) && img.size() > data_at) {
        for (size_t s = 0; s < N_SLOTS; ++s) {
            slot_entry e;
            std::memcpy(&e, img.data() + table_at + s * 64, sizeof e);
            if (e.state != uint32_t(slot_state::READY) || e.type >= TYPE_ID_LIMIT || !type_known(e.type) ||
                !GEOM.valid_for(type(e.type)))
                continue;
            const size_t at = data_at + s * g_stride, bytes = GEOM.page_bytes(type(e.type));
            if (at + bytes > img.size()) continue;
            e.checksum = page_checksum(img.data() + at, bytes, e.hash);
            std::memcpy(img.data() + table_at + s * 64, &e, sizeof e);
        }
    }

    clear_dir();
    const std::string path = file_path();
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) std::abort();
    const size_t head = std::min(img.size(), data_at);
    if (head && ::pwrite(fd, img.data(), head, 0) != ssize_t(head)) std::abort();
    if (img.size() > data_at) {
        const size_t n = img.size() - data_at;
        if (::ftruncate(fd, off_t(g_data_offset + n)) != 0 ||
            ::pwrite(fd, img.data() + data_at, n, off_t(g_data_offset)) != ssize_t(n))
            std::abort();
    }
    ::close(fd);

    check_folder();  // gloas-kv on the file as it was found
    try {
        kv_store st(params(flags & 4), GEOM, FINGERPRINT);
        // Every hash the table lists, and the chain of the seed's pages.
        for (size_t s = 0; s < N_SLOTS && table_at + (s + 1) * 64 <= img.size(); ++s) {
            slot_entry e;
            std::memcpy(&e, img.data() + table_at + s * 64, sizeof e);
            page_ref r;
            if (st.acquire(e.hash, &r)) {
                if (r.slot < 0 || (r.t != type::F16 && r.t != type::Q4_0)) __builtin_trap();
                read_page(r, GEOM.page_bytes(r.t));
                st.release(r.slot);
            }
        }
        const std::vector<uint64_t> h = chain(100, N_SLOTS);
        page_ref refs[N_SLOTS];
        const size_t got = st.acquire_chain(h.data(), h.size(), refs);
        if (got > N_SLOTS) __builtin_trap();
        for (size_t i = 0; i < got; ++i) read_page(refs[i], GEOM.page_bytes(refs[i].t));
        add_pages(st, 5000 + int32_t(flags), 3);
        for (size_t i = 0; i < got; ++i) st.release(refs[i].slot);
        // A page published just now is served back.
        page_ref r;
        if (st.persistent() && !st.read_only() && st.acquire(chain(5000 + int32_t(flags), 1)[0], &r)) {
            read_page(r, GEOM.page_bytes(r.t));
            st.release(r.slot);
        }
        (void) st.take_notices();
    } catch (const error &) {
    }

    check_folder();
    return 0;
}
