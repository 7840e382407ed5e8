#!/usr/bin/env bash
# Checks that this machine has what building and testing gloas needs, and on
# Debian or Ubuntu installs what is missing (`make run`, `make test` and
# `make build` call it first):
#
#   CMake 3.18+, a C++17 compiler (with make), OpenMP, xxHash (xxhash.h and
#   libxxhash), doctest (doctest/doctest.h), nlohmann-json (nlohmann/json.hpp),
#   cpp-httplib (httplib.h) and pkg-config for gloas-server, and curl or wget
#   for models/fetch.sh.
#
# Everything present: silent, a few small compiles (well under a second),
# no apt-get.
# Something missing on Debian/Ubuntu: `apt-get update` and `apt-get install`
# of the missing packages (through sudo when not root). Elsewhere: one message
# naming the packages for this system (dnf, pacman, Homebrew), exit 1.
#
#   tools/setup-deps.sh            check, and install on Debian/Ubuntu
#   tools/setup-deps.sh --check    check only: name what is missing, exit 1
#
# Environment: CXX (the compiler CMake will use; default c++, else g++ or
# clang++), GLOAS_NO_INSTALL=1 (same as --check).
set -euo pipefail

me=tools/setup-deps.sh
say() { printf '%s: %s\n' "$me" "$*" >&2; }

install=1
case ${1:-} in
    "") ;;
    --check) install=0 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) say "unknown option $1 (see --help)"; exit 2 ;;
esac
[ "${GLOAS_NO_INSTALL:-0}" = 1 ] && install=0

# The compiler CMake would pick.
cxx=${CXX:-}
if [ -z "$cxx" ]; then
    for c in c++ g++ clang++; do
        if command -v "$c" > /dev/null; then cxx=$c; break; fi
    done
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gloas-setup.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# compiles SOURCE (C++17) with extra flags; 0 if it compiles and links.
try_cxx() {
    local src=$1; shift
    [ -n "$cxx" ] || return 1
    printf '%s\n' "$src" > "$tmp/t.cpp"
    "$cxx" -std=c++17 "$tmp/t.cpp" -o "$tmp/t" "$@" > "$tmp/log" 2>&1
}

# try_header HEADER: 0 if the compiler finds it.
try_header() {
    [ -n "$cxx" ] || return 1
    printf '#include <%s>\n' "$1" | "$cxx" -std=c++17 -E -x c++ - > /dev/null 2>&1
}

cmake_ok() {
    command -v cmake > /dev/null || return 1
    local v
    v=$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
    # shellcheck disable=SC2086
    set -- $v
    [ "${1:-0}" -gt 3 ] || { [ "${1:-0}" -eq 3 ] && [ "${2:-0}" -ge 18 ]; }
}

# Sets missing: the keys of what is absent (cmake make cxx omp xxhash doctest
# json httplib fetch).
check() {
    missing=()
    cmake_ok || missing+=(cmake)
    command -v make > /dev/null || missing+=(make)
    if ! try_cxx 'int main() { if constexpr (sizeof(int) > 1) return 0; return 1; }'; then
        missing+=(cxx)
    else
        try_cxx '#include <omp.h>
int main() { return omp_get_max_threads() > 0 ? 0 : 1; }' -fopenmp || missing+=(omp)
        try_cxx '#include <xxhash.h>
int main() { return XXH64("", 0, 0) == 1 ? 1 : 0; }' -lxxhash || missing+=(xxhash)
        try_header doctest/doctest.h || missing+=(doctest)
        try_header nlohmann/json.hpp || missing+=(json)
        { try_header httplib.h && command -v pkg-config > /dev/null; } || missing+=(httplib)
    fi
    command -v curl > /dev/null || command -v wget > /dev/null || missing+=(fetch)
}

is_clang() { [ -n "$cxx" ] && "$cxx" --version 2> /dev/null | grep -qi clang; }

# packages SYSTEM: the package names of $missing on that system.
packages() {
    local sys=$1 k
    pkgs=()
    for k in "${missing[@]}"; do
        case $sys:$k in
            debian:cmake) pkgs+=(cmake) ;;
            debian:make|debian:cxx) pkgs+=(build-essential) ;;
            debian:omp) if is_clang; then pkgs+=(libomp-dev); else pkgs+=(build-essential); fi ;;
            debian:xxhash) pkgs+=(libxxhash-dev) ;;
            debian:doctest) pkgs+=(doctest-dev) ;;
            debian:json) pkgs+=(nlohmann-json3-dev) ;;
            debian:httplib) pkgs+=(libcpp-httplib-dev pkg-config) ;;
            debian:fetch) pkgs+=(curl ca-certificates) ;;
            fedora:cmake) pkgs+=(cmake) ;;
            fedora:make) pkgs+=(make) ;;
            fedora:cxx) pkgs+=(gcc-c++) ;;
            fedora:omp) if is_clang; then pkgs+=(libomp-devel); else pkgs+=(gcc-c++); fi ;;
            fedora:xxhash) pkgs+=(xxhash-devel) ;;
            fedora:doctest) pkgs+=(doctest-devel) ;;
            fedora:json) pkgs+=(json-devel) ;;
            fedora:httplib) pkgs+=(cpp-httplib-devel pkgconf-pkg-config) ;;
            fedora:fetch) pkgs+=(curl) ;;
            arch:cmake) pkgs+=(cmake) ;;
            arch:make) pkgs+=(make) ;;
            arch:cxx) pkgs+=(gcc) ;;
            arch:omp) if is_clang; then pkgs+=(openmp); else pkgs+=(gcc); fi ;;
            arch:xxhash) pkgs+=(xxhash) ;;
            arch:doctest) pkgs+=(doctest) ;;
            arch:json) pkgs+=(nlohmann-json) ;;
            arch:httplib) pkgs+=(cpp-httplib pkgconf) ;;
            arch:fetch) pkgs+=(curl) ;;
            brew:cmake) pkgs+=(cmake) ;;
            brew:make) pkgs+=(make) ;;
            brew:cxx) pkgs+=(gcc) ;;
            brew:omp) pkgs+=(libomp) ;;
            brew:xxhash) pkgs+=(xxhash) ;;
            brew:doctest) pkgs+=(doctest) ;;
            brew:json) pkgs+=(nlohmann-json) ;;
            brew:httplib) pkgs+=(cpp-httplib pkg-config) ;;
            brew:fetch) pkgs+=(curl) ;;
        esac
    done
    # without repeats, in order
    local seen=" " p out=()
    for p in "${pkgs[@]}"; do
        case $seen in *" $p "*) ;; *) out+=("$p"); seen="$seen$p " ;; esac
    done
    pkgs=("${out[@]}")
}

describe() {
    local k out=()
    for k in "${missing[@]}"; do
        case $k in
            cmake) out+=("CMake 3.18+") ;;
            make) out+=("make") ;;
            cxx) out+=("a C++17 compiler${cxx:+ ($cxx does not compile C++17)}") ;;
            omp) out+=("OpenMP for $cxx") ;;
            xxhash) out+=("xxHash (xxhash.h, libxxhash)") ;;
            doctest) out+=("doctest (doctest/doctest.h)") ;;
            json) out+=("nlohmann-json (nlohmann/json.hpp)") ;;
            httplib) out+=("cpp-httplib (httplib.h) and pkg-config") ;;
            fetch) out+=("curl or wget") ;;
        esac
    done
    local joined="" x
    for x in "${out[@]}"; do joined="${joined:+$joined, }$x"; done
    echo "$joined"
}

check
[ ${#missing[@]} -eq 0 ] && exit 0

what=$(describe)
system=
if command -v apt-get > /dev/null && [ -r /etc/debian_version ]; then system=debian
elif command -v dnf > /dev/null; then system=fedora
elif command -v pacman > /dev/null; then system=arch
elif command -v brew > /dev/null; then system=brew
fi

root="sudo "
[ "$(id -u)" = 0 ] && root=
if [ "$system" != debian ] || [ $install = 0 ]; then
    say "missing: $what."
    if [ -n "$system" ]; then
        packages "$system"
        case $system in
            debian) say "install with: ${root}apt-get install ${pkgs[*]}" ;;
            fedora) say "install with: ${root}dnf install ${pkgs[*]}" ;;
            arch) say "install with: ${root}pacman -S --needed ${pkgs[*]}" ;;
            brew) say "install with: brew install ${pkgs[*]}" ;;
        esac
    else
        packages fedora; say "Fedora: sudo dnf install ${pkgs[*]}"
        packages arch; say "Arch: sudo pacman -S --needed ${pkgs[*]}"
        packages brew; say "macOS: brew install ${pkgs[*]}"
        packages debian; say "Debian/Ubuntu: sudo apt-get install ${pkgs[*]}"
    fi
    exit 1
fi

packages debian
sudo=()
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo > /dev/null; then
        say "missing: $what; as root, run: apt-get update && apt-get install ${pkgs[*]}"
        exit 1
    fi
    sudo=(sudo)
fi
say "missing: $what; installing ${pkgs[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"

check
if [ ${#missing[@]} -ne 0 ]; then
    say "still missing after apt-get install: $(describe)"
    exit 1
fi
