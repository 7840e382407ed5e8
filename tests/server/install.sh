#!/usr/bin/env bash
# Installs the npm package test-server drives gloas-server with (the official
# openai client, pinned in package-lock.json) into tests/server/node_modules,
# once. Without npm, or without a network, it says so and exits 0: the test
# is then reported as skipped, with the reason.
set -uo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ -d "$dir/node_modules/openai" ] && exit 0
if ! command -v npm > /dev/null; then
    echo "tests/server/install.sh: npm is not installed; test-server will be skipped" >&2
    exit 0
fi
if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error > /dev/null); then
    echo "tests/server/install.sh: npm ci failed (no network?); test-server will be skipped" >&2
fi
exit 0
