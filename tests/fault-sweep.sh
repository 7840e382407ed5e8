#!/usr/bin/env bash
# I/O fault sweep: runs gloas under the fault-inject shim (tests/fault-inject.c)
# failing the Nth write / pwrite / fallocate / fsync / pread / mmap / ftruncate
# / io_uring_setup / io_uring_enter with ENOSPC, EIO or EINTR, or gives the Nth io_uring completion
# (io_uring_cqe) that error as its result (once, or from the Nth call on: a disk that stays full), N swept over every call the run makes (or a few of them), in four
# scenarios on a K/V folder: fresh (an empty folder: the page file is
# created and written), reuse (a folder a clean run filled: pages are read,
# then a longer prompt writes more), copy (reuse with --kv-read copy:
# decode reads pages with pread) and compressed (a fresh folder with the
# compressed eviction policy: pages re-quantized in place). Every run must
# end with
#   - exit 0 and the output of a memory-only run, or
#   - exit 1 and one message on stderr starting "gloas: "
# never a signal or another status; then gloas-kv verify must pass (no bad
# page published) and a clean rerun on the folder must print the expected
# output meeting no corrupt page.
#
# Usage: tests/fault-sweep.sh BIN_DIR SHIM short|long
#   BIN_DIR  the build's bin/ (gloas, gloas-kv);  SHIM  libgloas-fault-inject.so
#   short    N in {1, 2, middle, last} with one errno each (ctest)
#   long     every N, every errno, both modes (by hand)
# $FAULT_SWEEP_SCENARIOS picks scenarios (default: all four), $FAULT_SWEEP_CALLS
# calls (default: all), $FAULT_SWEEP_STRIDE every how many N the long sweep
# takes (default 1: every one). Prints one line
# per failure and, per call, the faults injected and how the runs ended. Exit 0 when all passed, 1 otherwise, 77 (skipped) without
# models/stories260K.bin (models/, $GLOAS_MODELS or ../shared/models).
set -u
BIN=${1:?usage: fault-sweep.sh BIN_DIR SHIM short|long}
SHIM=${2:?usage: fault-sweep.sh BIN_DIR SHIM short|long}
DEPTH=${3:-short}
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/kv-script-lib.sh
. "$SRC/tests/kv-script-lib.sh"
kv_script_setup fault-sweep FAULT_SWEEP_KEEP
head -c 500 "$SRC/README.md" > "$WORK/short.txt"
head -c 900 "$SRC/README.md" > "$WORK/long.txt"
ARGS=(-m "$MODEL" --temp 0 -t 1 -c 1024 -n 16 --kv-page 16 --kv-capacity 24p)
for p in short long; do
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/$p.txt" --kv-dir none > "$WORK/expect-$p.txt" 2> "$WORK/expect.err" || {
        echo "fault-sweep: the memory-only run failed:"; cat "$WORK/expect.err"; exit 1; }
done

# shellcheck disable=SC2206
CALLS=(${FAULT_SWEEP_CALLS:-write pwrite fallocate fsync pread mmap ftruncate io_uring_setup io_uring_enter io_uring_cqe})
STRIDE=${FAULT_SWEEP_STRIDE:-1}
# shellcheck disable=SC2206
SCENARIOS=(${FAULT_SWEEP_SCENARIOS:-fresh reuse copy compressed})
fail=0 runs=0
declare -A injected ok_runs err_runs

# Sets up the folder of a scenario in $WORK/kv; prints the extra arguments.
setup() {
    rm -rf "$WORK/kv"
    case $1 in
        fresh | compressed) ;;
        reuse | copy) "$BIN/gloas" "${ARGS[@]}" -f "$WORK/short.txt" --kv-dir "$WORK/kv" > /dev/null 2>&1 ;;
    esac
}
extra() {
    case $1 in
        copy) echo "--kv-read copy" ;;
        compressed) echo "--kv-policy compressed --kv-page 32" ;;  # q4_0 blocks need 32-token pages
    esac
}

# One run with a fault; checks it and the folder after it.
one() {
    local sc=$1 call=$2 n=$3 err=$4 mode=$5
    setup "$sc"
    rm -f "$WORK/report"
    # shellcheck disable=SC2046
    GLOAS_FAULT_CALL=$call GLOAS_FAULT_N=$n GLOAS_FAULT_ERRNO=$err GLOAS_FAULT_MODE=$mode GLOAS_FAULT_REPORT="$WORK/report" \
        LD_PRELOAD="$SHIM" "$BIN/gloas" "${ARGS[@]}" -f "$WORK/long.txt" --kv-dir "$WORK/kv" $(extra "$sc") \
        > "$WORK/f.out" 2> "$WORK/f.err"
    local st=$? what="$sc $call #$n $err $mode"
    runs=$((runs + 1))
    grep -q "^injected" "$WORK/report" 2> /dev/null && injected[$call]=$(( ${injected[$call]:-0} + 1 ))
    if [ "$st" = 0 ]; then
        ok_runs[$call]=$(( ${ok_runs[$call]:-0} + 1 ))
        if ! cmp -s "$WORK/f.out" "$WORK/expect-long.txt"; then
            echo "$what: exit 0 with other output"; tail -3 "$WORK/f.err"; fail=$((fail + 1))
        fi
    elif [ "$st" = 1 ]; then
        err_runs[$call]=$(( ${err_runs[$call]:-0} + 1 ))
        echo "$call $err: $(tail -1 "$WORK/f.err" | sed "s|$WORK/||g")" >> "$WORK/messages"
        if [ "$(grep -c "error" "$WORK/f.err")" != 1 ] || ! tail -1 "$WORK/f.err" | grep -q "^gloas: "; then
            echo "$what: exit 1 without one clear message:"; tail -5 "$WORK/f.err"; fail=$((fail + 1))
        fi
    else
        echo "$what: exit status $st (a signal or a bad status):"; tail -5 "$WORK/f.err"; fail=$((fail + 1))
    fi
    if [ -d "$WORK/kv" ] && ! "$BIN/gloas-kv" verify --kv-dir "$WORK/kv" > "$WORK/v.out" 2>&1; then
        echo "$what: gloas-kv verify failed afterwards:"; cat "$WORK/v.out"; fail=$((fail + 1))
    fi
    "$BIN/gloas" "${ARGS[@]}" -f "$WORK/long.txt" --kv-dir "$WORK/kv" $(extra "$sc") > "$WORK/r.out" 2> "$WORK/r.err"
    st=$?
    if [ "$st" != 0 ] || ! cmp -s "$WORK/r.out" "$WORK/expect-long.txt" || ! grep -q " 0 corrupt" "$WORK/r.err"; then
        echo "$what: the clean rerun exited $st, printed other text or met a corrupt page:"; tail -3 "$WORK/r.err"; fail=$((fail + 1))
    fi
}

ERRS=(ENOSPC EIO EINTR)
for sc in "${SCENARIOS[@]}"; do
    # How many calls of each kind the scenario makes.
    setup "$sc"
    rm -f "$WORK/counts"
    # shellcheck disable=SC2046
    GLOAS_FAULT_REPORT="$WORK/counts" LD_PRELOAD="$SHIM" "$BIN/gloas" "${ARGS[@]}" -f "$WORK/long.txt" \
        --kv-dir "$WORK/kv" $(extra "$sc") > /dev/null 2>&1
    for call in "${CALLS[@]}"; do
        total=$(awk -v c="$call" '$1 == c { print $2 }' "$WORK/counts")
        total=${total:-0}
        echo "fault-sweep: $sc: $total $call calls"
        [ "$total" = 0 ] && continue
        if [ "$DEPTH" = long ]; then
            for ((n = 1; n <= total; n += STRIDE)); do
                for err in "${ERRS[@]}"; do one "$sc" "$call" "$n" "$err" once; done
                one "$sc" "$call" "$n" ENOSPC from
            done
        else
            k=0
            for n in $(printf '%s\n' 1 2 $(( (total + 1) / 2 )) "$total" | awk -v t="$total" '$1 <= t' | sort -un); do
                one "$sc" "$call" "$n" "${ERRS[$((k % 3))]}" once
                k=$((k + 1))
            done
            one "$sc" "$call" 1 ENOSPC from
        fi
    done
done
echo "fault-sweep: the errors runs ended with (call, errno: message), each once:"
[ -f "$WORK/messages" ] && sort -u "$WORK/messages" | sed 's/^/  /'
echo "fault-sweep: $runs runs, $fail failures"
for call in "${CALLS[@]}"; do
    echo "fault-sweep: $call: ${injected[$call]:-0} faults injected; ${ok_runs[$call]:-0} runs gave the output, ${err_runs[$call]:-0} ended with one error"
done
[ "$fail" = 0 ]
