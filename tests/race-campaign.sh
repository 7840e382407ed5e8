#!/usr/bin/env bash
# Races on one K/V folder: PROCS processes run gloas at once, for SECONDS,
# over one --kv-dir, with two models (stories260K, and a random-weight model
# of another shape that gloas-gen-model writes: their pages must never mix),
# prompts drawn from a few lengths of one text (so runs share
# prefixes and take each other's pages while they are being written), pages
# of 16 tokens and a capacity small enough that eviction runs all the time.
# Every run must exit 0 and print exactly what a memory-only run
# (--kv-dir none) of the same model and prompt prints; at the end
# `gloas-kv verify` must pass on the folder.
#
# Usage: tests/race-campaign.sh BIN_DIR [SECONDS] [PROCS] [SEED]
#   SECONDS  how long the processes run (default 300)
#   PROCS    how many run at once (default 8)
#   SEED     of the draws (default: the clock; printed)
# stories260K.bin comes from models/, $GLOAS_MODELS or ../shared/models
# (exit 77, skipped, when none has it). Prints one line per failure and a summary;
# exit 0 when every check passed, 1 otherwise. $RACE_KEEP=1 keeps the work
# folder; $RACE_ARGS adds gloas arguments to every run. With a lossy policy
# (RACE_ARGS="--kv-policy compressed": evicted pages come back as q4_0) a
# reused page may change the text, so $RACE_LOSSY=1 counts other text apart
# instead of as a failure.
set -u
BIN=${1:?usage: race-campaign.sh BIN_DIR [SECONDS] [PROCS] [SEED]}
SECONDS_RUN=${2:-300}
PROCS=${3:-8}
SEED=${4:-$(date +%s)}
SRC=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=tests/kv-script-lib.sh
. "$SRC/tests/kv-script-lib.sh"
kv_script_setup race RACE_KEEP
KV="$WORK/kv"
echo "race-campaign: $PROCS processes for $SECONDS_RUN s, seed $SEED, folder $KV"
"$BIN/gloas-gen-model" --preset tiny --seed "$SEED" -q -o "$WORK/tiny.gguf" || exit 1
MODELS=("$MODEL" "$WORK/tiny.gguf")

TEXT="$SRC/README.md"
LENS=(400 700 1000 1500)
for n in "${LENS[@]}"; do head -c "$n" "$TEXT" > "$WORK/prompt-$n.txt"; done
ARGS=(--temp 0 -t 1 -c 2048 -n 32 --kv-page 16 --kv-capacity 1M)
# shellcheck disable=SC2206
[ -n "${RACE_ARGS:-}" ] && ARGS+=(${RACE_ARGS})

for i in "${!MODELS[@]}"; do
    for n in "${LENS[@]}"; do
        "$BIN/gloas" -m "${MODELS[$i]}" "${ARGS[@]}" -f "$WORK/prompt-$n.txt" --kv-dir none \
            > "$WORK/expect-$i-$n.txt" 2> "$WORK/expect.err" || {
            echo "race-campaign: the memory-only run failed:"; cat "$WORK/expect.err"; exit 1; }
    done
done

# One worker: runs until the deadline, one line per run in its log:
# "ok" or "FAIL <why>".
worker() {
    local w=$1 deadline=$2 i n st
    RANDOM=$((SEED + w))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        i=$((RANDOM % 2))
        n=${LENS[$((RANDOM % ${#LENS[@]}))]}
        "$BIN/gloas" -m "${MODELS[$i]}" "${ARGS[@]}" -f "$WORK/prompt-$n.txt" --kv-dir "$KV" \
            > "$WORK/w$w.out" 2> "$WORK/w$w.err"
        st=$?
        if [ "$st" != 0 ]; then
            echo "FAIL model $i prompt $n: exit $st: $(tail -1 "$WORK/w$w.err")"
        elif ! cmp -s "$WORK/w$w.out" "$WORK/expect-$i-$n.txt" && [ "${RACE_LOSSY:-0}" != 1 ]; then
            echo "FAIL model $i prompt $n: other text than the memory-only run"
        elif grep -q "set aside\|failed its checksum\|damaged" "$WORK/w$w.err" || ! grep -q " 0 corrupt" "$WORK/w$w.err"; then
            echo "FAIL model $i prompt $n: met a damaged store: $(grep -i 'aside\|checksum\|damaged\|corrupt' "$WORK/w$w.err" | head -1)"
        elif ! cmp -s "$WORK/w$w.out" "$WORK/expect-$i-$n.txt"; then
            echo "ok other text $(grep -o '[0-9]* reused' "$WORK/w$w.err" | head -1)"
        else
            echo "ok $(grep -o '[0-9]* reused' "$WORK/w$w.err" | head -1)"
        fi
    done > "$WORK/log-$w"
}

deadline=$(( $(date +%s) + SECONDS_RUN ))
for ((w = 0; w < PROCS; w++)); do worker "$w" "$deadline" & done
wait

runs=$(cat "$WORK"/log-* | wc -l)
fails=$(cat "$WORK"/log-* | grep -c '^FAIL')
reusing=$(cat "$WORK"/log-* | grep '^ok' | grep -vc ' 0 reused\|^ok $')
other=$(cat "$WORK"/log-* | grep -c '^ok other text')
grep -h '^FAIL' "$WORK"/log-* | sort | uniq -c | head -20
verify=0
if ! "$BIN/gloas-kv" verify --kv-dir "$KV" > "$WORK/v.out" 2>&1; then
    echo "race-campaign: gloas-kv verify failed:"; cat "$WORK/v.out"; verify=1
fi
echo "race-campaign: $runs runs by $PROCS processes in $SECONDS_RUN s, $reusing of them reused pages, $other gave other text (RACE_LOSSY), $fails failures;" \
     "gloas-kv verify $([ $verify = 0 ] && echo passed || echo FAILED)"
"$BIN/gloas-kv" list --kv-dir "$KV" | tail -2
[ "$fails" = 0 ] && [ "$verify" = 0 ]
