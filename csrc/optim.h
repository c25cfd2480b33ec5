// Optimizer updates, one fused, threaded pass over each parameter, with PyTorch's
// single-tensor (foreach=False) rules applied operation for operation in the order that
// fastconv.optim's NumPy code applies them, so that both give the same bits.
#pragma once

#include <cstdint>
#include <vector>

namespace fastconv {

struct SgdOptions {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  bool first_step;  // the momentum buffer is set to the gradient instead of updated
};

// For i < n, in T (the options cast to T first, 1 - dampening computed in double):
//   g = -grad[i] if maximize else grad[i]
//   g = param[i] * weight_decay + g                         if weight_decay != 0
//   if momentum != 0:
//     buf[i] = g (first step) | buf[i] * momentum + g * (1 - dampening)
//     g = buf[i] * momentum + g if nesterov else buf[i]
//   param[i] = param[i] - g * lr
// buf may be null when momentum == 0. Arrays must not overlap.
template <typename T>
struct SgdArrays {
  int64_t n;
  T* param;
  const T* grad;
  T* buf;
};

// The update of each parameter of `arrays` (all with the same options), in one parallel
// region over blocks of all of them: a model's many small parameters cost one region, not one
// each.
template <typename T>
void sgd_update(const std::vector<SgdArrays<T>>& arrays, const SgdOptions& options);

// -1 when no array written (param, buf) overlaps another array of `arrays`, its own
// parameter's included; else the index of a parameter with such an overlap (a sort of the
// ranges by address and one sweep).
template <typename T>
int64_t first_overlap(const std::vector<SgdArrays<T>>& arrays);

}  // namespace fastconv
