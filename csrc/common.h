// Small helpers shared by the kernel files: aligned scratch memory, integer division, short
// copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace fastconv {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// 0 <= i < limit, in one comparison.
inline bool inside(int64_t i, int64_t limit) {
  return static_cast<uint64_t>(i) < static_cast<uint64_t>(limit);
}

// The outputs o in [0, count) whose input position o*stride + offset lies in [0, limit),
// as the half-open range [*lo, *hi) (empty when *lo == *hi). stride >= 1.
inline void inside_range(int64_t offset, int64_t stride, int64_t limit, int64_t count,
                         int64_t* lo, int64_t* hi) {
  const int64_t first = offset >= 0 ? 0 : ceil_div(-offset, stride);
  const int64_t last = limit - 1 - offset;  // o*stride <= last
  const int64_t end = last < 0 ? 0 : last / stride + 1;
  *lo = first < count ? first : count;
  *hi = end < count ? end : count;
  if (*hi < *lo) *hi = *lo;
}

// dst[0:n) = src[0:n) for the short runs of the kernels (a row of a small plane, a panel row):
// memcpy with a run-time length is a libc call per run, so runs under 512 bytes are copied
// inline in fixed 32/16/8/4-byte pieces (vector moves).
template <typename T>
inline void copy_run(const T* src, int64_t n, T* dst) {
  const size_t bytes = static_cast<size_t>(n > 0 ? n : 0) * sizeof(T);
  switch (bytes) {  // a whole GEMM panel row: straight-line moves (the loop below measured
    case 32:        // 12% slower on float64 packing)
      std::memcpy(dst, src, 32);
      return;
    case 64:
      std::memcpy(dst, src, 64);
      return;
    case 128:
      std::memcpy(dst, src, 128);
      return;
  }
  if (bytes >= 512) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const char* s = reinterpret_cast<const char*>(src);
  char* d = reinterpret_cast<char*>(dst);
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) std::memcpy(d + i, s + i, 32);
  if (i + 16 <= bytes) std::memcpy(d + i, s + i, 16), i += 16;
  if (i + 8 <= bytes) std::memcpy(d + i, s + i, 8), i += 8;
  if (i + 4 <= bytes) std::memcpy(d + i, s + i, 4);
}

// Uninitialised, 64-byte aligned scratch array. Allocated before parallel regions, because an
// exception must never escape an OpenMP region; bad_alloc here reaches Python as MemoryError.
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(int64_t count) { reset(count); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  void reset(int64_t count) {
    std::free(data_);
    data_ = nullptr;
    if (count <= 0) return;
    size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!data_) throw std::bad_alloc();
  }
  T* data() { return data_; }
  const T* data() const { return data_; }

 private:
  T* data_ = nullptr;
};

// Scratch memory kept between calls, per calling thread: repeated kernel calls reuse it instead
// of faulting in fresh pages every time. A call takes each buffer it needs from its own slot
// (its pointer stays valid until the same thread asks for that slot again); the parallel
// regions of the call share them. Grows to the largest request, freed when the thread exits.
// kScratchPhases: conv.cpp's dilation phases, which call the undilated kernels (and so every
// other slot) while they hold it.
enum ScratchSlot { kScratchPackedA = 0, kScratchPackedB, kScratchColumns, kScratchPartials,
                   kScratchStacked, kScratchPhases, kScratchSlots };

void* thread_scratch_bytes(ScratchSlot slot, size_t bytes);

template <typename T>
T* thread_scratch(ScratchSlot slot, int64_t count) {
  return static_cast<T*>(thread_scratch_bytes(slot, static_cast<size_t>(count > 0 ? count : 0) *
                                                        sizeof(T)));
}

}  // namespace fastconv
