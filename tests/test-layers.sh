#!/usr/bin/env bash
# Dependencies point one way: a folder's sources include only its own folder
# and the folders below it,
#   tools -> decoder -> kvcache -> tensor -> quant -> base
# with api/ (the C API, include/gloas.h) beside tools over decoder. Prints
# every include that points up and fails if there is one.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
declare -A below=(
    [base]="base"
    [quant]="quant base"
    [tensor]="tensor quant base"
    [kvcache]="kvcache tensor quant base"
    [decoder]="decoder kvcache tensor quant base"
    [api]="api include decoder kvcache tensor quant base"
    [tools]="tools include decoder kvcache tensor quant base"
)
failures=0
for dir in "${!below[@]}"; do
    [ -d "$src/$dir" ] || continue
    while IFS= read -r hit; do
        file=${hit%%:*}
        to=${hit#*#include \"}
        to=${to%%/*}
        case " ${below[$dir]} " in
            *" $to "*) ;;
            *) echo "FAIL  ${file#$src/} includes $to/ (above $dir/)"; failures=$((failures + 1)) ;;
        esac
    done < <(grep -rHE '^#include "[a-z]+/' --include='*.h' --include='*.cpp' --include='*.c' --include='*.inc' \
                  --include='*.cu' --include='*.cuh' "$src/$dir" || true)
done
if [ "$failures" -gt 0 ]; then
    echo "$failures include(s) point up"
    exit 1
fi
echo "ok    every include points down"
