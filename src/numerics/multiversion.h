// VITQ_MULTIVERSION: compile a function for x86-64-v4 (AVX-512), v3 (AVX2) and the baseline and
// pick one at load time by the CPU (target_clones), so one binary runs everywhere at the
// speed of the machine. The one definition; element-wise kernels in numerics/, engine/ and
// quant/ use it. Every clone of a function computes the same bits (numerics/ builds with
// -ffp-contract=off, and the kernels avoid reassociation).
#pragma once

#if defined(__clang__)
// Clang 14 (the sanitizer and fuzzing build) silently drops target_clones from a function declared
// earlier without it (our headers) and compiles the one body for the first target, AVX-512: SIGILL
// on an AVX2-only CPU. Clang builds get the portable baseline code.
#define VITQ_MULTIVERSION
#else
#define VITQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
