// Included last by the files that hold ggml's reference quantizers
// (quant.cpp, legacy-quants.cpp, k-quants.cpp): everything after it is
// compiled without contracting a*b+c into fused multiply-adds.
//
// ggml's reference quantizers are plain C whose float operations each round
// (llama.cpp's files are written that way): a fused multiply-add would change
// which levels and scales win in the searches (and q4_0's x*id + 8.5), so
// llama.cpp's bytes come out on every build only without contraction. The
// pragmas apply to the rest of the including file, hence last.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
