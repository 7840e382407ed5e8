#!/usr/bin/env bash
# Resident memory of a long generation, per K/V configuration: runs gloas on
# MODEL generating N tokens (--ignore-eos, a context of N + 64) with each
# strategy and with a --kv-ram bound (pages read through the mapping, which
# trims to the budget at the end of each forward pass, and with --kv-read
# copy, which maps no page it reads), samples the process's resident set
# (VmRSS, and its file-backed and anonymous parts) every half second, and
# prints, per configuration, the peak and the RSS at each tenth of the run,
# beside the model file's size and the K/V bytes the run's tokens hold. A
# flat second half means no growth with the tokens decoded. The weights are
# read through the file's mapping (--mmap), so that RssAnon is gloas's own
# buffers and RssFile the weights and pages resident.
#
# Usage: tools/memory-campaign.sh BIN_DIR MODEL N [THREADS]
# Writes its folders under $TMPDIR (removed at the end); one line per
# configuration on stdout, the samples in memory-<config>.tsv when
# $MEMORY_KEEP names a folder.
set -eu
BIN=${1:?usage: memory-campaign.sh BIN_DIR MODEL N [THREADS]}
MODEL=${2:?usage: memory-campaign.sh BIN_DIR MODEL N [THREADS]}
N=${3:?usage: memory-campaign.sh BIN_DIR MODEL N [THREADS]}
T=${4:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gloas-memory.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "memory-campaign: $MODEL ($(( $(stat -c %s "$MODEL") / 1048576 )) MiB), $N tokens, $T threads"

# $MEMORY_CONFIGS (';'-separated) replaces the list.
CONFIGS=("speed" "balanced" "aggressive" "balanced --kv-ram 16M" "balanced --kv-ram 16M --kv-read copy")
if [ -n "${MEMORY_CONFIGS:-}" ]; then IFS=';' read -r -a CONFIGS <<< "$MEMORY_CONFIGS"; fi
for cfg in "${CONFIGS[@]}"; do
    name=$(echo "$cfg" | tr -c 'a-z0-9\n' '-')
    # shellcheck disable=SC2086
    set -- --strategy $cfg
    "$BIN/gloas" -m "$MODEL" --mmap "$@" -c $((N + 64)) -n "$N" --ignore-eos -t "$T" -p "Once upon a time" \
        --kv-dir "$WORK/kv-$name" > /dev/null 2> "$WORK/$name.err" &
    pid=$!
    : > "$WORK/$name.tsv"
    t0=$(date +%s%N)
    while kill -0 "$pid" 2> /dev/null; do
        if s=$(awk '/^VmRSS|^RssAnon|^RssFile/ {printf "%s ", $2}' "/proc/$pid/status" 2> /dev/null) && [ -n "$s" ]; then
            echo "$(( ($(date +%s%N) - t0) / 1000000 )) $s" >> "$WORK/$name.tsv"
        fi
        sleep 0.5
    done
    wait "$pid" || { echo "memory-campaign: $cfg failed:"; tail -3 "$WORK/$name.err"; exit 1; }
    [ -n "${MEMORY_KEEP:-}" ] && cp "$WORK/$name.tsv" "$MEMORY_KEEP/memory-$name.tsv"
    kvline=$(grep -o '[0-9]* bytes/token' "$WORK/$name.err" | head -1)
    awk -v cfg="$cfg" -v kv="$kvline" -v n="$N" '
        { t[NR] = $1; rss[NR] = $2; anon[NR] = $3; file[NR] = $4; if ($2 > peak) peak = $2 }
        END {
            line = sprintf("%-24s peak %6.0f MiB (anon %.0f, file %.0f at the end); K/V %s x %d tokens = %.0f MiB; RSS per tenth:",
                           cfg, peak / 1024, anon[NR] / 1024, file[NR] / 1024, kv, n, (kv + 0) * n / 1048576)
            for (k = 1; k <= 10; k++) { i = int(NR * k / 10); if (i < 1) i = 1; line = line sprintf(" %.0f", rss[i] / 1024) }
            print line
        }' "$WORK/$name.tsv"
done
