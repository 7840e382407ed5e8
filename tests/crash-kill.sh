#!/usr/bin/env bash
# Crash consistency of the K/V folder: starts a writer (gloas with a long
# prompt, small pages and a small capacity, so pages are written, published
# and evicted all the time) on one folder, SIGKILLs it at a random instant of
# its life, then checks the folder:
#   - gloas-kv verify: every published page verifies (exit 0);
#   - a rerun on the folder opens the store (no damaged file set aside, no
#     corrupt page met) and prints exactly what a memory-only run
#     (--kv-dir none) prints;
# and goes on with the next kill on the same folder, so the store keeps
# working through all of them. Prompts are drawn from a few lengths of one
# text, so runs share prefixes and reuse each other's pages.
#
# Usage: tests/crash-kill.sh BIN_DIR KILLS [SEED]
#   BIN_DIR  the build's bin/ (gloas, gloas-kv)
#   KILLS    how many writers to kill
#   SEED     of the random instants (default: the clock; printed)
# The model is stories260K.bin from models/, $GLOAS_MODELS or
# ../shared/models (exit 77, skipped, when none has it). Prints one line per
# failure and a summary: kills, writers that had finished before their kill
# came (not counted), instants spread, checks passed. Exit 0 when every check
# passed, 1 otherwise. $CRASH_KILL_KEEP=1 keeps the work folder;
# $CRASH_KILL_ARGS adds gloas arguments to every run (e.g. --kv-policy
# compressed).
set -u
BIN=${1:?usage: crash-kill.sh BIN_DIR KILLS [SEED]}
KILLS=${2:?usage: crash-kill.sh BIN_DIR KILLS [SEED]}
SEED=${3:-$(date +%s)}
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/kv-script-lib.sh
. "$SRC/tests/kv-script-lib.sh"
kv_script_setup crash-kill CRASH_KILL_KEEP
KV="$WORK/kv"
RANDOM=$SEED
echo "crash-kill: $KILLS kills, seed $SEED, model $MODEL, folder $KV"

# Prompts: the README's text (always at hand) cut at several lengths.
TEXT="$SRC/README.md"
LENS=(600 1000 1500 2200)
for n in "${LENS[@]}"; do head -c "$n" "$TEXT" > "$WORK/prompt-$n.txt"; done
ARGS=(-m "$MODEL" --temp 0 -t 1 -c 2048 -n 48 --kv-page 16 --kv-capacity 48p)
# shellcheck disable=SC2206
[ -n "${CRASH_KILL_ARGS:-}" ] && ARGS+=(${CRASH_KILL_ARGS})

# Expected outputs, and how long a writer of each prompt lives on an empty
# folder; every complete rerun below updates its prompt's figure, so the
# instants follow the machine's load.
declare -A life
for n in "${LENS[@]}"; do
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/prompt-$n.txt" --kv-dir none > "$WORK/expect-$n.txt" 2> "$WORK/expect-$n.err" || {
        echo "crash-kill: the memory-only run failed:"; cat "$WORK/expect-$n.err"; exit 1; }
    rm -rf "$KV"
    t0=$(date +%s%N)
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/prompt-$n.txt" --kv-dir "$KV" > /dev/null 2>&1
    life[$n]=$(( ($(date +%s%N) - t0) / 1000000 + 10 ))
done
rm -rf "$KV"
echo "crash-kill: writers live $(for n in "${LENS[@]}"; do printf '%s ' "${life[$n]}"; done)ms (prompts of ${LENS[*]} bytes);" \
    "each kill is drawn uniformly in [0, 1.1 x its prompt's latest figure)"

fail=0 killed=0 finished=0 checks=0
declare -a bucket=(0 0 0 0 0 0 0 0 0 0)
for ((k = 1; k <= KILLS; k++)); do
    n=${LENS[$((RANDOM % ${#LENS[@]}))]}
    span=$(( life[$n] + life[$n] / 10 ))
    at=$(( (RANDOM * 32768 + RANDOM) % span ))
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/prompt-$n.txt" --kv-dir "$KV" > "$WORK/w.out" 2> "$WORK/w.err" &
    pid=$!
    sleep "$(printf '%d.%03d' $((at / 1000)) $((at % 1000)))"
    if kill -KILL "$pid" 2> /dev/null; then
        wait "$pid" 2> /dev/null
        st=$?
        if [ "$st" = 137 ]; then
            killed=$((killed + 1))
            b=$(( at * 10 / span )); bucket[$b]=$(( bucket[$b] + 1 ))
        else
            finished=$((finished + 1))
        fi
    else
        wait "$pid" 2> /dev/null
        st=$?
        finished=$((finished + 1))
        if [ "$st" != 0 ]; then echo "kill $k: the writer failed on its own (exit $st):"; cat "$WORK/w.err"; fail=$((fail + 1)); fi
    fi
    # Every published page verifies.
    if ! "$BIN/gloas-kv" verify --kv-dir "$KV" > "$WORK/v.out" 2>&1; then
        echo "kill $k (at $at ms, prompt $n): gloas-kv verify failed:"; cat "$WORK/v.out"; fail=$((fail + 1))
    fi
    # The store opens and serves pages that give the memory-only output.
    m=${LENS[$((RANDOM % ${#LENS[@]}))]}
    t0=$(date +%s%N)
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/prompt-$m.txt" --kv-dir "$KV" > "$WORK/r.out" 2> "$WORK/r.err"
    st=$?
    # A rerun that wrote pages lived as long as a writer does.
    grep -q " 0 written" "$WORK/r.err" || life[$m]=$(( ($(date +%s%N) - t0) / 1000000 + 10 ))
    if [ "$st" != 0 ] || ! cmp -s "$WORK/r.out" "$WORK/expect-$m.txt"; then
        echo "kill $k (at $at ms, prompt $n): the rerun (prompt $m) exited $st or printed other text:"; tail -5 "$WORK/r.err"; fail=$((fail + 1))
    elif grep -q "set aside\|failed its checksum\|damaged" "$WORK/r.err" || ! grep -q " 0 corrupt" "$WORK/r.err"; then
        echo "kill $k (at $at ms, prompt $n): the rerun met a damaged store:"; grep -i "aside\|checksum\|damaged\|corrupt" "$WORK/r.err"; fail=$((fail + 1))
    fi
    checks=$((checks + 1))
    [ $((k % 50)) = 0 ] && echo "crash-kill: after $k: $killed killed, $finished finished first, $fail failures"
done
echo "crash-kill: $killed writers killed, $finished finished before their kill (not counted), $checks folder checks, $fail failures"
echo "crash-kill: kills per tenth of the span drawn from: ${bucket[*]}"
"$BIN/gloas-kv" list --kv-dir "$KV" | tail -1
[ "$fail" = 0 ]
