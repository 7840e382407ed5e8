#!/usr/bin/env bash
# Lists the tests of the last ctest run in BUILD that skipped cases for want
# of a file, with the files (the "SKIPPED: needs" lines of tests/test-util.h).
#
#   tests/skipped-files.sh BUILD          list them; exit 0
#   tests/skipped-files.sh BUILD --fail   list them; exit 1 if there are any
#                                         (CI, which has ../shared)
set -euo pipefail
build=${1:?usage: tests/skipped-files.sh BUILD [--fail]}
fail=0
[ "${2:-}" = --fail ] && fail=1
log=$build/Testing/Temporary/LastTest.log
if [ ! -r "$log" ]; then
    echo "tests/skipped-files.sh: no ctest log at $log" >&2
    exit 1
fi
# Sections start with "N/M Testing: NAME"; the lines of interest start with
# the marker. One line per test: NAME: file, file...
report=$(awk '
    / Testing: / { name = $NF; next }
    /^SKIPPED: needs / {
        f = $3
        if (!((name, f) in seen)) { seen[name, f] = 1; files[name] = files[name] (files[name] == "" ? "" : ", ") f }
    }
    END { for (n in files) printf "  %s: %s\n", n, files[n] }' "$log" | sort)
[ -n "$report" ] || exit 0
echo "Tests skipped for missing files (models/fetch.sh --tests; or GLOAS_MODELS, GLOAS_DATA):"
echo "$report"
exit $fail
