// Thread control. Every parallel region of fastconv goes through parallel_for: dynamic
// scheduling, so that a thread the OS preempts (the machine may be shared) does not hold the
// others at the barrier; no nested parallelism (a call from inside an outer OpenMP region runs
// serially); and a size threshold so that small problems stay on one thread. Results never
// depend on which thread ran a task: each task writes its own outputs in a fixed order, and
// per-thread scratch is only scratch.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastconv {

int get_num_threads();
void set_num_threads(int n);  // n >= 1, checked by the caller
bool openmp_enabled();

// Threads worth using for `work` units (e.g. flops) when each thread should get at least
// `min_work_per_thread` of them, capped by the task count and the configured thread count.
inline int threads_for(double work, double min_work_per_thread, int64_t tasks) {
  int64_t by_work = static_cast<int64_t>(work / min_work_per_thread);
  int64_t n = std::min<int64_t>({static_cast<int64_t>(get_num_threads()), tasks, by_work});
  return static_cast<int>(std::max<int64_t>(n, 1));
}

// Calls body(task, thread) for task in [0, tasks), thread in [0, nthreads).
template <typename Body>
void parallel_for(int64_t tasks, int nthreads, const Body& body) {
#ifdef _OPENMP
  if (nthreads > 1 && tasks > 1 && !omp_in_parallel()) {
    const int n = static_cast<int>(std::min<int64_t>(nthreads, tasks));
#pragma omp parallel for schedule(dynamic, 1) num_threads(n)
    for (int64_t t = 0; t < tasks; ++t) body(t, omp_get_thread_num());
    return;
  }
#endif
  (void)nthreads;
  for (int64_t t = 0; t < tasks; ++t) body(t, 0);
}

}  // namespace fastconv
