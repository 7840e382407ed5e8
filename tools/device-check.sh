#!/bin/sh
# The CUDA backend on a GPU machine, in one go and within 8 minutes:
#   tools/device-check.sh OUT        (from the repository root)
# configures a build of its own (build-device/, or $GLOAS_DEVICE_BUILD) with
# -DGLOAS_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native, builds the tools and the
# CUDA tests, runs the tests (test-cuda-math, test-cuda-select, test-cuda),
# generates TinyLlama-1.1B and Llama-2-7B shaped models with random Q4_0
# weights (gloas-gen-model --preset, kept in the build folder, not in OUT),
# and runs gloas-bench on the GPU (-ngl 99 --bandwidth): prefill pp512 and
# decode tg128 at depth 0, and the 1.1B shape's decode at depth 4096 with
# Q8_0 pages. Everything it prints goes to OUT: summary.txt (each step, its
# exit status and seconds), nvidia-smi.txt, configure.log, build.log,
# tests.log, gen-*.log, bench-*.md. The golden-text tests need
# models/stories260K.bin (models/fetch.sh stories260K, or $GLOAS_MODELS);
# without it they report SKIPPED: needs ..., and the rest still runs.
# Each step gets what is left of the 8 minutes (timeout); a step that fails
# or runs out is recorded and the script goes on. Exit status: 0 when every
# step passed, 1 otherwise, 2 for a bad command line.
set -u
if [ $# -ne 1 ]; then
    echo "usage: tools/device-check.sh OUTPUT_FOLDER (from the repository root)" >&2
    exit 2
fi
if [ ! -f CMakeLists.txt ] || [ ! -d tensor/cuda ]; then
    echo "device-check: run from the repository root (no CMakeLists.txt and tensor/cuda here)" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
build=${GLOAS_DEVICE_BUILD:-build-device}
jobs=$(nproc 2>/dev/null || echo 4)
start=$(date +%s)
deadline=$((start + ${GLOAS_DEVICE_SECONDS:-470}))
failed=0
: >"$out/summary.txt"

note() { echo "device-check: $*" | tee -a "$out/summary.txt"; }

# step NAME MAX_SECONDS LOG COMMAND...: runs COMMAND with its output in LOG,
# for at most MAX_SECONDS and never past the deadline.
step() {
    name=$1 max=$2 log=$3
    shift 3
    left=$((deadline - $(date +%s)))
    [ "$left" -lt "$max" ] && max=$left
    if [ "$max" -le 5 ]; then
        note "$name: not run (the 8 minutes are spent)"
        failed=1
        return 1
    fi
    t0=$(date +%s)
    timeout "$max" "$@" >"$log" 2>&1
    rc=$?
    dt=$(($(date +%s) - t0))
    if [ $rc -eq 0 ]; then note "$name: ok (${dt} s)"
    elif [ $rc -eq 124 ]; then note "$name: TIMED OUT after ${dt} s (log: $(basename "$log"))"; failed=1
    elif [ $rc -eq 77 ]; then note "$name: SKIPPED (exit status 77: $(grep -m 1 'SKIPPED' "$log"))"; failed=1
    else note "$name: FAILED, exit status $rc (${dt} s; log: $(basename "$log"))"; failed=1
    fi
    return $rc
}

note "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), $jobs cores"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1
    note "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
else
    note "nvidia-smi not found"
fi

launcher=
command -v ccache >/dev/null 2>&1 && launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"
# shellcheck disable=SC2086
step configure 120 "$out/configure.log" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGLOAS_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=native $launcher || { note "no build, nothing else can run"; exit 1; }
step build 300 "$out/build.log" cmake --build "$build" -j "$jobs" --target gloas gloas-bench gloas-gen-model \
    test-cuda-math test-cuda-select test-cuda || { note "the build failed, nothing else can run"; exit 1; }

# The tests: ctest's verdict (test-cuda must pass, not be skipped, on a GPU),
# then test-cuda's own output (the device's name, any skip's reason).
step ctest 120 "$out/tests.log" sh -c "cd '$build' && ctest -R '^test-cuda' --output-on-failure"
if grep -q "Skipped" "$out/tests.log"; then
    note "ctest reports a CUDA test skipped on this machine (see tests.log)"
    failed=1
fi
step test-cuda 60 "$out/test-cuda.log" "$build/tests/test-cuda" -d

bin=$build/bin
models=$build/device-models
mkdir -p "$models"
gen() {  # gen PRESET FILE
    [ -s "$2" ] && { note "gen $1: kept $2"; return 0; }
    step "gen $1" 150 "$out/gen-$1.log" "$bin/gloas-gen-model" -q --preset "$1" --type q4_0 -o "$2"
}
bench() {  # bench NAME MAX_SECONDS ARGS...
    name=$1 max=$2
    shift 2
    step "bench $name" "$max" "$out/bench-$name.md" "$bin/gloas-bench" -ngl 99 --bandwidth "$@"
}
tiny=$models/tinyllama-1.1b-q4_0.gguf
big=$models/llama2-7b-q4_0.gguf
gen tinyllama-1.1b "$tiny" &&
    bench tinyllama-1.1b 90 -m "$tiny" -p 512 -n 128 -r 3
gen llama2-7b "$big" &&
    bench llama2-7b 120 -m "$big" -p 512 -n 128 -r 2
[ -s "$tiny" ] &&
    bench tinyllama-1.1b-depth 90 -m "$tiny" -p 0 -n 64 -r 2 -d 0,4096 --fill random -ctk q8_0

note "done in $(($(date +%s) - start)) s; results in $out"
exit $failed
