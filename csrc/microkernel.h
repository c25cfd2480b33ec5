// The one ISA-specific piece of the GEMM: an MR x NR register-blocked micro-kernel.
//
// Contract of a micro-kernel, for one MR x NR tile of C (row stride ldc, column stride 1):
//   acc[i][j] = sum_{k < kc} a[k*MR + i] * b[k*NR + j]      (summed from zero, k ascending)
//   c[i][j]   = accumulate ? c[i][j] + acc[i][j] : acc[i][j]
// `a` is one packed MR-row panel of A (k-major), `b` one packed NR-column panel of B (k-major).
// Every ISA file defines its kernels inside an anonymous namespace and exports only a table.
// This header must stay free of inline functions: it is included by files compiled with
// AVX2 flags, and an inline function emitted there could be picked by the linker for the
// portable path.
#pragma once

#include <cstdint>

namespace fastconv {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                               bool accumulate);

template <typename T>
struct MicroKernel {
  int mr;
  int nr;
  MicroKernelFn<T> fn;
};

struct IsaKernels {
  const char* name;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
};

const IsaKernels& isa_kernels_baseline();
const IsaKernels& isa_kernels_avx2();  // defined only in x86 builds; call only if the CPU has AVX2+FMA

}  // namespace fastconv
