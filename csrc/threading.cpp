#include "threading.h"

#include "common.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>

namespace fastconv {
namespace {

int openmp_limit() {
#ifdef _OPENMP
  // This thread's nthreads-var: OMP_NUM_THREADS, omp_set_num_threads (threadpoolctl), or the
  // CPUs this process may run on.
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int>& num_threads_slot() {
  static std::atomic<int> slot{openmp_limit()};
  return slot;
}

std::atomic<bool> threads_started{false};
std::atomic<bool> forked_child{false};

// Registered once at load: the child of a fork taken after threads were started must not
// enter a parallel region.
const bool fork_handler_registered = [] {
  pthread_atfork(nullptr, nullptr, [] {
    if (threads_started.load(std::memory_order_relaxed))
      forked_child.store(true, std::memory_order_relaxed);
  });
  return true;
}();

}  // namespace

int get_num_threads() {
  if (in_forked_child()) return 1;
  return std::min(num_threads_slot().load(std::memory_order_relaxed), openmp_limit());
}

void set_num_threads(int n) {
  // Without OpenMP there is one thread, whatever was asked for.
  n = openmp_enabled() ? std::max(1, n) : 1;
  num_threads_slot().store(n, std::memory_order_relaxed);
#ifdef _OPENMP
  omp_set_num_threads(n);  // this thread's limit too: the two agree, threadpoolctl sees n
#endif
}

namespace {
std::atomic<int> threads_claimed{0};
std::atomic<int> threads_claimed_peak{0};
}  // namespace

ThreadClaim::ThreadClaim(int wanted) {
  const int budget = get_num_threads();
  int in_use = threads_claimed.load(std::memory_order_relaxed);
  int n;
  do {
    n = std::clamp(budget - in_use, 1, std::max(wanted, 1));
  } while (!threads_claimed.compare_exchange_weak(in_use, in_use + n, std::memory_order_relaxed));
  n_ = n;
  int peak = threads_claimed_peak.load(std::memory_order_relaxed);
  while (in_use + n > peak &&
         !threads_claimed_peak.compare_exchange_weak(peak, in_use + n, std::memory_order_relaxed)) {
  }
}

ThreadClaim::~ThreadClaim() { threads_claimed.fetch_sub(n_, std::memory_order_relaxed); }

int peak_threads_claimed(bool reset) {
  return reset ? threads_claimed_peak.exchange(0, std::memory_order_relaxed)
               : threads_claimed_peak.load(std::memory_order_relaxed);
}

bool in_forked_child() { return forked_child.load(std::memory_order_relaxed); }

void note_threads_started() {
  if (!threads_started.load(std::memory_order_relaxed))
    threads_started.store(true, std::memory_order_relaxed);
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
