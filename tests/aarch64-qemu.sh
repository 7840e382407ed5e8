#!/bin/sh
# tests/aarch64-qemu.sh [--install]: the aarch64 build and test suite on an
# x86-64 Debian machine. Cross-compiles with Debian's g++-aarch64-linux-gnu
# (cmake/aarch64-linux-gnu.cmake) into build-aarch64/ (or $GLOAS_AARCH64_BUILD),
# runs the whole suite there under qemu-user (qemu-aarch64-static, its CPU
# "max": ARMv8.2 dot products and fp16 arithmetic, so the dispatch picks the
# NEON kernels), then the dispatch test again on a plain ARMv8.0 CPU model
# (cortex-a53), where the scalar variant must be chosen and neon refused.
# --install first installs the packages (apt, as root): the cross compiler,
# qemu-user-static and the arm64 libraries the build links.
# gloas-server is not built (GLOAS_SERVER=OFF: test-server reports a skip), nor
# the CUDA backend (nvcc compiles for the host).
# $GLOAS_CTEST_ARGS is passed to ctest (e.g. "-R test-simd-dispatch").
# Speed is not measured here: qemu runs NEON code as a sequence of host
# instructions, so its timings say nothing about an ARM CPU.
set -eu
cd "$(dirname "$0")/.."
build=${GLOAS_AARCH64_BUILD:-build-aarch64}
jobs=$(nproc)

if [ "${1:-}" = --install ]; then
    export DEBIAN_FRONTEND=noninteractive
    dpkg --add-architecture arm64
    apt-get update
    apt-get install -y --no-install-recommends g++-aarch64-linux-gnu qemu-user-static \
        libxxhash-dev:arm64 libgomp1:arm64 libstdc++6:arm64
elif [ $# -gt 0 ]; then
    echo "usage: tests/aarch64-qemu.sh [--install]" >&2
    exit 2
fi

missing=""
command -v aarch64-linux-gnu-g++ > /dev/null || missing="$missing g++-aarch64-linux-gnu"
command -v qemu-aarch64-static > /dev/null || missing="$missing qemu-user-static"
[ -e /usr/lib/aarch64-linux-gnu/libxxhash.so ] || missing="$missing libxxhash-dev:arm64"
[ -e /usr/lib/aarch64-linux-gnu/libgomp.so.1 ] || missing="$missing libgomp1:arm64"
[ -e /usr/lib/aarch64-linux-gnu/libstdc++.so.6 ] || missing="$missing libstdc++6:arm64"
if [ -n "$missing" ]; then
    echo "tests/aarch64-qemu.sh: missing packages:$missing (run it with --install, as root)" >&2
    exit 1
fi

launcher=""
if command -v ccache > /dev/null; then
    launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"
fi
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
    -DGLOAS_SERVER=OFF -DGLOAS_CUDA=OFF $launcher
cmake --build "$build" -j "$jobs"

start=$(date +%s)
# shellcheck disable=SC2086
(cd "$build" && ctest --output-on-failure -j "$jobs" ${GLOAS_CTEST_ARGS:-})
echo "aarch64-qemu: the suite under qemu took $(( $(date +%s) - start )) s"

echo "== test-simd-dispatch on an ARMv8.0 CPU (cortex-a53: no dot products, no fp16 arithmetic)"
(cd "$build/tests" && OMP_WAIT_POLICY=passive qemu-aarch64-static -cpu cortex-a53 \
    ./test-simd-dispatch)
