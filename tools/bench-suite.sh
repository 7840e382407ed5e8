#!/usr/bin/env bash
# The benchmark set of BENCHMARKS.md, on one machine, in one go: builds the
# tools, writes random-weight TinyLlama-1.1B-shape models (speed does not
# depend on weight values), and runs gloas-bench. Results go to $OUT (one file
# per table, written as each finishes, so a run cut short keeps what it has).
#
#   tools/bench-suite.sh            # all parts
#   PARTS="depth strategies" tools/bench-suite.sh
#
# Parts: depth       decode at depths 0/1024/4000 per K/V type (Q4_0 weights)
#        strategies  decode at depths 1024..16384 per memory strategy
#        kquant      prefill and decode per weight type, against the read
#                    bandwidth ceiling (Q4_0, Q8_0, Q4_K_M, Q5_K_M, Q6_K)
# Environment: OUT (default bench-out), MODELS (default $OUT/models),
# THREADS (default: all), BUILD (default build-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
MODELS=${MODELS:-$OUT/models}
BUILD=${BUILD:-build-bench}
T=${THREADS:-$(nproc)}
PARTS=${PARTS:-depth strategies kquant}
mkdir -p "$OUT" "$MODELS"

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGLOAS_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target gloas-bench gloas-gen-model gloas-quantize >/dev/null
B=$BUILD/bin

model() {  # model TYPE: the file of that weight type, written once
    local t=$1 f=$MODELS/tinyllama-$1.gguf
    if [ ! -f "$f" ]; then
        case $t in
            q4_K_M|q5_K_M|q6_K)
                model f16 >/dev/null
                "$B/gloas-quantize" -q -t "$T" "$MODELS/tinyllama-f16.gguf" "$f" "$t" ;;
            *) "$B/gloas-gen-model" -q --preset tinyllama-1.1b --type "$t" --threads "$T" -o "$f" ;;
        esac
    fi
    echo "$f"
}

run() {  # run NAME ARGS...: one table, with its command and the machine's state
    local name=$1; shift
    {
        echo "command: gloas-bench $*"
        echo "machine: $(nproc) cores, $(uptime)"
        "$B/gloas-bench" "$@" -t "$T" 2>"$OUT/$name.err"
    } >"$OUT/$name.md"
    cat "$OUT/$name.md"
}

for part in $PARTS; do
    case $part in
        depth)
            run depth -m "$(model q4_0)" -p 0 -n 32 -d 0,1024,4000 --kv-type f16,q8_0,q4_0 --fill random -r 2 --rounds 3 ;;
        strategies)
            run strategies -m "$(model q4_0)" -p 0 -n 16 -d 1024,4096,8192,16384 \
                --strategy speed,balanced,aggressive --fill random --kv-dir "$OUT" -r 1 --rounds 3 ;;
        kquant)
            m=$(model q4_0),$(model q8_0),$(model q4_K_M),$(model q5_K_M),$(model q6_K)
            run kquant -m "$m" -p 256 -n 64 -r 2 --bandwidth ;;
        *) echo "bench-suite: unknown part '$part'" >&2; exit 2 ;;
    esac
done
