#!/bin/sh
# Installs the build into a temporary prefix (cmake --install) and builds
# examples/simple.c against it the way a C programmer would, with pkg-config:
#   shared: cc simple.c $(pkg-config --cflags --libs gloas)
#   static: cc simple.c $(pkg-config --cflags gloas) $(pkg-config --static --libs gloas)
# with libgloas.so removed from the prefix for the static link, so that
# -lgloas can only be libgloas.a and gloas.pc's Libs.private must carry the
# rest. Each program must run: its usage (exit 2) without arguments, and a
# short generation when models/stories260K.bin is found. libgloas.so must
# export only gloas_* symbols.
#   test-install.sh CMAKE BUILD_DIR SOURCE_DIR CC [EXTRA_CFLAGS]
# Exit 77 (ctest: skipped) without pkg-config.
set -eu
cmake=$1 build=$2 src=$3 cc=$4 extra=${5:-}

fail() { echo "test-install: $*" >&2; exit 1; }
command -v pkg-config >/dev/null 2>&1 || { echo "SKIPPED: needs pkg-config"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gloas-test-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$cmake" --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
pc=$(find "$tmp/prefix" -name gloas.pc | head -n 1)
[ -n "$pc" ] || fail "no gloas.pc installed"
libdir=$(dirname "$(dirname "$pc")")
[ -f "$tmp/prefix/include/gloas.h" ] || fail "no include/gloas.h installed"
[ -f "$libdir/libgloas.a" ] || fail "no libgloas.a installed"
# only this prefix's gloas.pc
PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=$(dirname "$pc")
export PKG_CONFIG_PATH PKG_CONFIG_LIBDIR
echo "gloas $(pkg-config --modversion gloas): Libs.private: $(pkg-config --static --libs gloas)"

model=
for d in "$src/models" "${GLOAS_MODELS:-}" "$src/../shared/models"; do
    if [ -n "$d" ] && [ -r "$d/stories260K.bin" ]; then model=$d/stories260K.bin; break; fi
done

# Runs a built example: usage without arguments, text with the model. A
# cross build's tests set GLOAS_TEST_RUN to the emulator that runs it.
# shellcheck disable=SC2086
check_runs() {
    status=0
    ${GLOAS_TEST_RUN:-} "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
    [ "$status" -eq 2 ] || { cat "$tmp/err" >&2; fail "$1 without arguments exited $status, expected 2 (usage)"; }
    if [ -n "$model" ]; then
        ${GLOAS_TEST_RUN:-} "$@" "$model" "Once upon a time" 8 >"$tmp/out" 2>"$tmp/err" ||
            { cat "$tmp/err" >&2; fail "$1 $model failed"; }
        grep -q "Once upon a time" "$tmp/out" || fail "$1 printed no text"
    fi
}

# shared
# shellcheck disable=SC2046,SC2086
"$cc" $extra -o "$tmp/simple-shared" "$src/examples/simple.c" $(pkg-config --cflags --libs gloas) ||
    fail "cannot link examples/simple.c with pkg-config --libs gloas"
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} check_runs "$tmp/simple-shared"

# the shared library exports only the C API
if command -v nm >/dev/null 2>&1; then
    others=$(nm -D --defined-only "$libdir/libgloas.so" | awk '$3 != "" && $3 !~ /^gloas_/ { print $3 }')
    [ -z "$others" ] || fail "libgloas.so exports symbols outside gloas_*: $(echo "$others" | head -n 5)"
fi

# static
rm -f "$libdir"/libgloas.so*
# shellcheck disable=SC2046,SC2086
"$cc" $extra -o "$tmp/simple-static" "$src/examples/simple.c" $(pkg-config --cflags gloas) \
    $(pkg-config --static --libs gloas) ||
    fail "cannot link examples/simple.c with pkg-config --static --libs gloas (Libs.private: $(pkg-config --static --libs gloas))"
if command -v readelf >/dev/null 2>&1 && readelf -d "$tmp/simple-static" | grep -q 'libgloas'; then
    fail "the static example still needs libgloas.so"
fi
check_runs "$tmp/simple-static"
echo "test-install: shared and static builds of examples/simple.c link and run${model:+ (generated with $model)}"
