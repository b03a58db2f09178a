// VITQ_MULTIVERSION: compile a function for x86-64-v4 (AVX-512), v3 (AVX2) and the baseline and
// pick one at load time by the CPU (target_clones), so one binary runs everywhere at the
// speed of the machine. The one definition; element-wise kernels in numerics/, engine/ and
// quant/ use it. In numerics/ every clone computes the same bits (built with -ffp-contract=off;
// its reductions are integer sums, minima and maxima, exact in any order), which is what keeps the
// integer runtime equal to the simulation on every CPU. The float reductions of engine/ (LayerNorm,
// softmax) and quant/ (similarity sums) vectorise at the clone's width and may contract into FMAs,
// so they round differently on an AVX-512 and an AVX2 machine, as oneDNN's FP32 GEMMs do: a
// calibration is reproducible byte for byte on one CPU type, not across them (docs/RESULTS.md,
// ONNX export section, on the paper's W8A8 plans).
#pragma once

#if defined(__clang__)
// Clang 14 (the sanitizer and fuzzing build) silently drops target_clones from a function declared
// earlier without it (our headers) and compiles the one body for the first target, AVX-512: SIGILL
// on an AVX2-only CPU. Clang builds get the portable baseline code.
#define VITQ_MULTIVERSION
#else
#define VITQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
