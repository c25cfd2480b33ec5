// Memory-bound loops over blocks of the parameters, like activation.cpp's. The branches of
// the update are template parameters, so that every loop vectorises for the portable target;
// this file is compiled without FMA contraction (CMakeLists.txt), as NumPy's separate
// multiply and add round twice.
#include "optim.h"

#include <algorithm>
#include <cstdint>
#include <vector>

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

// Tasks: blocks of kBlock elements of each parameter in turn; a task finds its parameter by
// a binary search in the running block counts.
template <typename T, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_run(const std::vector<SgdArrays<T>>& arrays, const SgdOptions& o) {
  std::vector<int64_t> first_block(arrays.size() + 1, 0);
  double elements = 0;
  for (size_t a = 0; a < arrays.size(); ++a) {
    first_block[a + 1] = first_block[a] + ceil_div(arrays[a].n, kBlock);
    elements += double(arrays[a].n);
  }
  const int64_t blocks = first_block.back();
  const T sign = o.maximize ? T(-1) : T(1);
  parallel_for(blocks, threads_for(elements, 4.0 * kBlock, blocks), [&](int64_t b, int) {
    const size_t a = size_t(std::upper_bound(first_block.begin(), first_block.end(), b) -
                            first_block.begin() - 1);
    const SgdArrays<T>& p = arrays[a];
    const int64_t begin = (b - first_block[a]) * kBlock, end = std::min(p.n, begin + kBlock);
    sgd_block<T, kDecay, kMomentum, kFirst, kNesterov>(
        end - begin, p.param + begin, p.grad + begin, kMomentum ? p.buf + begin : nullptr,
        T(o.lr), T(o.momentum), T(1 - o.dampening), T(o.weight_decay), sign);
  });
}

template <typename T, bool kDecay>
void sgd_with_decay(const std::vector<SgdArrays<T>>& arrays, const SgdOptions& o) {
  if (o.momentum == 0) return sgd_run<T, kDecay, false, false, false>(arrays, o);
  if (o.first_step)
    return o.nesterov ? sgd_run<T, kDecay, true, true, true>(arrays, o)
                      : sgd_run<T, kDecay, true, true, false>(arrays, o);
  return o.nesterov ? sgd_run<T, kDecay, true, false, true>(arrays, o)
                    : sgd_run<T, kDecay, true, false, false>(arrays, o);
}

}  // namespace

template <typename T>
void sgd_update(const std::vector<SgdArrays<T>>& arrays, const SgdOptions& options) {
  if (options.weight_decay != 0) return sgd_with_decay<T, true>(arrays, options);
  sgd_with_decay<T, false>(arrays, options);
}

// Sorted by start, a range overlaps an earlier one exactly when it starts before the end of
// one of them: before the furthest end of the earlier written ranges, or (when it is written
// itself) of all the earlier ranges. Empty ranges overlap nothing.
template <typename T>
int64_t first_overlap(const std::vector<SgdArrays<T>>& arrays) {
  struct Range {
    uintptr_t begin, end;
    int64_t owner;
    bool written;
  };
  std::vector<Range> ranges;
  const auto add = [&](const T* data, int64_t n, int64_t owner, bool written) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
    if (data != nullptr && n > 0) ranges.push_back({begin, begin + n * sizeof(T), owner, written});
  };
  for (size_t a = 0; a < arrays.size(); ++a) {
    add(arrays[a].param, arrays[a].n, int64_t(a), true);
    add(arrays[a].grad, arrays[a].n, int64_t(a), false);
    add(arrays[a].buf, arrays[a].n, int64_t(a), true);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& x, const Range& y) { return x.begin < y.begin; });
  uintptr_t end_all = 0, end_written = 0;
  for (const Range& r : ranges) {
    if (r.begin < end_written || (r.written && r.begin < end_all)) return r.owner;
    end_all = std::max(end_all, r.end);
    if (r.written) end_written = std::max(end_written, r.end);
  }
  return -1;
}

#define FASTCONV_INSTANTIATE_SGD(T)                                                  \
  template void sgd_update<T>(const std::vector<SgdArrays<T>>&, const SgdOptions&); \
  template int64_t first_overlap<T>(const std::vector<SgdArrays<T>>&);
FASTCONV_INSTANTIATE_SGD(float)
FASTCONV_INSTANTIATE_SGD(double)
#undef FASTCONV_INSTANTIATE_SGD

}  // namespace fastconv
