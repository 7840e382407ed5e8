#!/usr/bin/env bash
# What a new user gets from the README: clones this repository's HEAD commit
# into an empty temporary folder (no ../shared beside it; GLOAS_MODELS and
# GLOAS_DATA unset), runs the README's test command (make test) there, and
# checks that
#   - it succeeds, and ctest reports 0 tests failed;
#   - every test ctest lists as skipped printed "SKIPPED: ..." lines
#     (tests/test-util.h: "SKIPPED: needs FILE" for a missing file), and every
#     test that printed one is listed as skipped: a missing file never passes
#     or fails a test;
#   - each models/FILE named that way is really absent from the clone;
#   - the run left the clone's tracked files as they were.
# models/fetch.sh downloads what it can; without network it gives up after
# the first connect failure, and the tests that need those files skip.
#
#   tests/fresh-clone.sh [--offline] [--keep]
#     --offline  never download (GLOAS_FETCH_OFFLINE=1): the most skips
#     --keep     keep the clone (it is kept anyway when a check fails)
#
# Uncommitted changes are not part of the clone. CMAKE_ARGS and JOBS pass
# through to make (e.g. CMAKE_ARGS=-DCMAKE_CXX_COMPILER_LAUNCHER=ccache).
set -euo pipefail

me=tests/fresh-clone.sh
keep=0
for arg in "$@"; do
    case $arg in
        --offline) export GLOAS_FETCH_OFFLINE=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "$me: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
commit=$(git -C "$src" rev-parse HEAD)
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    echo "$me: note: testing commit ${commit:0:12}; uncommitted changes are not in it" >&2
fi

# The README's test command: the line of its sh blocks that starts with "make test".
test_cmd=$(awk '/^```sh/ { on = 1; next } /^```/ { on = 0 } on && /^make test/ { print; exit }' "$src/README.md")
if [ -z "$test_cmd" ]; then
    echo "$me: README.md has no sh block line starting with 'make test'" >&2
    exit 1
fi

top=$(mktemp -d "${TMPDIR:-/tmp}/gloas-fresh.XXXXXX")
clone=$top/gloas
fail() {
    echo "$me: FAILED: $*" >&2
    echo "$me: the clone is kept in $clone" >&2
    exit 1
}
git clone --quiet --no-checkout "$src" "$clone"
git -C "$clone" checkout --quiet --detach "$commit"
[ ! -e "$top/shared" ] || fail "$top/shared exists"

echo "$me: $test_cmd in a clone of ${commit:0:12} at $clone"
log=$top/make-test.log
rc=0
(cd "$clone" && env -u GLOAS_MODELS -u GLOAS_DATA -u GLOAS_KV_DIR bash -c "$test_cmd") > "$log" 2>&1 || rc=$?
tail -n 40 "$log"
[ $rc -eq 0 ] || fail "'$test_cmd' exited with $rc (whole output: $log)"

grep -q ' 0 tests failed out of ' "$log" || fail "ctest's summary does not say 0 tests failed"

# ctest's skipped tests, and the tests that printed SKIPPED lines.
skipped=$(awk '/The following tests did not run:/ { on = 1; next }
               on && /\(Skipped\)/ { print $3; next } on { on = 0 }' "$log" | sort -u)
ctest_log=$clone/build/Testing/Temporary/LastTest.log
[ -r "$ctest_log" ] || fail "no ctest log at $ctest_log"
marked=$(awk '/ Testing: / { name = $NF } /^SKIPPED: / { print name }' "$ctest_log" | sort -u)
[ "$skipped" = "$marked" ] ||
    fail "tests skipped by ctest ($(echo "$skipped" | tr '\n' ' ')) differ from those that printed SKIPPED lines ($(echo "$marked" | tr '\n' ' '))"

# Each file named missing is missing.
while read -r file; do
    case $file in
        models/*) [ ! -e "$clone/$file" ] || fail "a test said it needs $file, but the clone has it" ;;
    esac
done < <(awk '/^SKIPPED: needs / { print $3 }' "$ctest_log" | sort -u)

[ -z "$(git -C "$clone" status --porcelain --untracked-files=no)" ] ||
    fail "the run changed tracked files: $(git -C "$clone" status --porcelain --untracked-files=no | head -5)"

n_skipped=$(echo "$skipped" | grep -c . || true)
echo "$me: ok: '$test_cmd' passed in a fresh clone; $n_skipped tests skipped, for want of:"
awk '/^SKIPPED: needs / { print "  " $3 } /^SKIPPED: / && !/^SKIPPED: needs / { sub(/ -- test case .*/, ""); print "  " $0 }' "$ctest_log" | sort -u
if [ $keep = 0 ]; then rm -rf "$top"; else echo "$me: kept $clone"; fi
