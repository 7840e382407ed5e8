#!/bin/sh
# isa-check.sh NM OBJECT...: fails when an object of a SIMD variant
# (<build>/isa/<variant>/..., quant/isa.h) defines a global symbol outside the
# variant's namespace. Such a symbol (an inline function or library template
# the compiler kept out of line) is one function to the linker, which keeps
# one variant's copy for every caller: baseline code could then run AVX-512
# instructions. The fix is to keep it out of the kernels (isa::thread_scratch
# for buffers) or to put it in the variant's (inline) namespace.
nm=$1
shift
bad=0
for o in "$@"; do
    case $o in */isa/*/*) ;; *) continue ;; esac
    v=$(basename "$(dirname "$o")")
    # global and weak code (data such as typeinfo holds no instructions)
    s=$("$nm" -C --defined-only "$o" | awk '$2 ~ /^[TWi]$/' | cut -d' ' -f3- | grep -v -e "::$v::" -e '^__clang_call_terminate$')
    if [ -n "$s" ]; then
        echo "$o: symbols outside namespace $v in a SIMD variant's object:" >&2
        echo "$s" >&2
        bad=1
    fi
done
exit $bad
