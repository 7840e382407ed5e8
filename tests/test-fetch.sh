#!/usr/bin/env bash
# models/fetch.sh against a manifest of its own, in a temporary tree
# (TMP/repo/models beside TMP/shared/models): links verified copies from the
# shared folder (subfolders too), ignores a wrong copy, says where a file
# without a public download comes from, gives up downloading after the first
# connect failure, and with --tests exits 0 however much is missing.
set -euo pipefail
# The cases set the download mode themselves (tests/fresh-clone.sh --offline
# exports GLOAS_FETCH_OFFLINE=1 to the whole suite).
unset GLOAS_FETCH_OFFLINE GLOAS_MODELS
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gloas-test-fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
check() {  # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok    $what"; else echo "FAIL  $what"; failures=$((failures + 1)); fi
}

mkdir -p "$tmp/repo/models" "$tmp/shared/models/sub"
cp "$src/models/fetch.sh" "$tmp/repo/models/"
printf 'hello\n' > "$tmp/shared/models/a.bin"
printf 'in a subfolder\n' > "$tmp/shared/models/sub/b.gguf"
printf 'wrong\n' > "$tmp/shared/models/wrong.bin"
sha() { sha256sum "$1" | cut -d' ' -f1; }
# A port nothing listens on: the connection is refused at once.
dead=http://127.0.0.1:9
{
    printf '# test manifest\n'
    printf 'a\ta.bin\t%s/a.bin\t6\t%s\tllama2c\tin the shared folder\n' "$dead" "$(sha "$tmp/shared/models/a.bin")"
    printf 'b\tsub/b.gguf\t-\t15\t%s\tgguf\tin a subfolder, no public download\n' "$(sha "$tmp/shared/models/sub/b.gguf")"
    printf 'wrong\twrong.bin\t%s/wrong.bin\t6\t%s\tllama2c\tthe shared copy is wrong\n' "$dead" "$(sha "$tmp/shared/models/a.bin")"
    printf 'later\tlater.bin\t%s/later.bin\t6\t-\tllama2c\tnot tried once offline\n' "$dead"
    printf 'private\tprivate.gguf\t-\t5\t-\tgguf\tmade by hand, see the notes\n'
} > "$tmp/repo/models/manifest.tsv"

cd "$tmp/repo"
rc=0
models/fetch.sh a sub/b.gguf > "$tmp/out" 2>&1 || rc=$?
check "present files are linked (exit 0)" [ $rc -eq 0 ]
check "a.bin links the shared copy" [ "$(readlink models/a.bin)" = "$tmp/shared/models/a.bin" ]
check "sub/b.gguf links into models/sub/" [ "$(readlink models/sub/b.gguf)" = "$tmp/shared/models/sub/b.gguf" ]

rc=0
models/fetch.sh private > "$tmp/out" 2>&1 || rc=$?
check "a missing file without a URL: exit 1" [ $rc -eq 1 ]
check "... saying it has no public download and what it is" grep -q "no public download" "$tmp/out"
check "... with its notes" grep -q "made by hand, see the notes" "$tmp/out"

start=$(date +%s)
rc=0
GLOAS_FETCH_CONNECT_TIMEOUT=2 models/fetch.sh --tests wrong later private > "$tmp/out" 2>&1 || rc=$?
elapsed=$(( $(date +%s) - start ))
check "--tests exits 0 with files missing" [ $rc -eq 0 ]
check "--tests is quick without network (${elapsed}s)" [ "$elapsed" -lt 20 ]
check "a wrong shared copy is ignored" grep -q "ignoring $tmp/shared/models/wrong.bin" "$tmp/out"
check "a failed download names the file" grep -q "could not download wrong.bin" "$tmp/out"
check "after a connect failure, no other download is tried" grep -q "missing later.bin (no network" "$tmp/out"
check "--tests says the tests will skip" grep -q "tests that need them will be skipped" "$tmp/out"
check "no partial download is left" [ -z "$(find models -name '*.part.*')" ]

rc=0
GLOAS_FETCH_OFFLINE=1 models/fetch.sh later > "$tmp/out" 2>&1 || rc=$?
check "GLOAS_FETCH_OFFLINE=1: no download, exit 1" [ $rc -eq 1 ]
check "... naming the URL" grep -q "$dead/later.bin" "$tmp/out"

rc=0
models/fetch.sh --no-such-option > "$tmp/out" 2>&1 || rc=$?
check "a bad option: exit 2" [ $rc -eq 2 ]

if [ $failures -ne 0 ]; then
    echo "last output:"; cat "$tmp/out"
    exit 1
fi
