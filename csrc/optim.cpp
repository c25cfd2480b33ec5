// Memory-bound loops over blocks of the parameter, like activation.cpp's. The branches of
// the update are template parameters, so that every loop vectorises for the portable target;
// this file is compiled without FMA contraction (CMakeLists.txt), as NumPy's separate
// multiply and add round twice.
#include "optim.h"

#include <algorithm>

#include "common.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr int64_t kBlock = 1 << 15;  // elements per task

template <typename T, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_block(int64_t n, T* __restrict param, const T* __restrict grad, T* __restrict buf,
               T lr, T momentum, T damp, T decay, T sign) {
  for (int64_t i = 0; i < n; ++i) {
    T g = grad[i] * sign;  // -g exactly when maximizing
    if (kDecay) g = param[i] * decay + g;
    if (kMomentum) {
      const T b = kFirst ? g : buf[i] * momentum + g * damp;
      buf[i] = b;
      g = kNesterov ? b * momentum + g : b;
    }
    param[i] = param[i] - g * lr;
  }
}

template <typename T, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_run(int64_t n, T* param, const T* grad, T* buf, const SgdOptions& o) {
  const int64_t blocks = ceil_div(n, kBlock);
  const T sign = o.maximize ? T(-1) : T(1);
  parallel_for(blocks, threads_for(double(n), 4.0 * kBlock, blocks), [&](int64_t b, int) {
    const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    sgd_block<T, kDecay, kMomentum, kFirst, kNesterov>(
        end - begin, param + begin, grad + begin, kMomentum ? buf + begin : nullptr, T(o.lr),
        T(o.momentum), T(1 - o.dampening), T(o.weight_decay), sign);
  });
}

template <typename T, bool kDecay>
void sgd_with_decay(int64_t n, T* param, const T* grad, T* buf, const SgdOptions& o) {
  if (o.momentum == 0) return sgd_run<T, kDecay, false, false, false>(n, param, grad, buf, o);
  if (o.first_step)
    return o.nesterov ? sgd_run<T, kDecay, true, true, true>(n, param, grad, buf, o)
                      : sgd_run<T, kDecay, true, true, false>(n, param, grad, buf, o);
  return o.nesterov ? sgd_run<T, kDecay, true, false, true>(n, param, grad, buf, o)
                    : sgd_run<T, kDecay, true, false, false>(n, param, grad, buf, o);
}

}  // namespace

template <typename T>
void sgd_update(int64_t n, T* param, const T* grad, T* buf, const SgdOptions& options) {
  if (options.weight_decay != 0) return sgd_with_decay<T, true>(n, param, grad, buf, options);
  sgd_with_decay<T, false>(n, param, grad, buf, options);
}

template void sgd_update<float>(int64_t, float*, const float*, float*, const SgdOptions&);
template void sgd_update<double>(int64_t, double*, const double*, double*, const SgdOptions&);

}  // namespace fastconv
