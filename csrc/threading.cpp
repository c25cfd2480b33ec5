#include "threading.h"

#include "common.h"

#include <atomic>

namespace fastconv {
namespace {

int default_num_threads() {
#ifdef _OPENMP
  // Honours OMP_NUM_THREADS; otherwise the CPUs this process may run on.
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int>& num_threads_slot() {
  static std::atomic<int> slot{default_num_threads()};
  return slot;
}

}  // namespace

int get_num_threads() { return num_threads_slot().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  // Without OpenMP there is one thread, whatever was asked for.
  num_threads_slot().store(openmp_enabled() ? std::max(1, n) : 1, std::memory_order_relaxed);
}

void* thread_scratch_bytes(ScratchSlot slot, size_t bytes) {
  struct Slots {
    AlignedBuffer<char> buffers[kScratchSlots];
    size_t sizes[kScratchSlots] = {};
  };
  thread_local Slots slots;
  if (bytes > slots.sizes[slot]) {
    slots.sizes[slot] = 0;         // stays right if the allocation below throws
    slots.buffers[slot].reset(0);  // free first: the old contents are not needed
    slots.buffers[slot].reset(static_cast<int64_t>(bytes));
    slots.sizes[slot] = bytes;
  }
  return slots.buffers[slot].data();
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fastconv
