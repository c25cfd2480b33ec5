// Portable micro-kernels: plain C++ that the compiler vectorises for the target's baseline
// (SSE2 on x86-64, NEON on aarch64). Also the reference the SIMD kernels are tested against.
#include "microkernel.h"

namespace fastconv {
namespace {

#include "plane_kernels.inc"

// MR x NR accumulators; the fixed trip counts let the compiler keep them in registers.
template <typename T, int MR, int NR>
void gemm_ukernel_baseline(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                           bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* ak = a + k * MR;
    const T* bk = b + k * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = ak[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    if (accumulate) {
      for (int j = 0; j < NR; ++j) ci[j] += acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) ci[j] = acc[i][j];
    }
  }
}

const IsaKernels kBaseline = {
    "baseline",
    {6, 8, &gemm_ukernel_baseline<float, 6, 8>},
    {6, 4, &gemm_ukernel_baseline<double, 6, 4>},
    {&plane_forward<float>, &plane_input_grad<float>, &plane_weight_grad<float>,
     &flat_correlate<float>, &flat_dots<float>},
    {&plane_forward<double>, &plane_input_grad<double>, &plane_weight_grad<double>,
     &flat_correlate<double>, &flat_dots<double>},
};

}  // namespace

const IsaKernels& isa_kernels_baseline() { return kBaseline; }

}  // namespace fastconv
