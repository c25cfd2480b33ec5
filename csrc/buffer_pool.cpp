#include "buffer_pool.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace fastconv {
namespace {

constexpr size_t kAlignment = 64;          // the header's size too: the data stays aligned
constexpr size_t kMinPooled = 64 << 10;    // below this, malloc's own bins reuse memory
constexpr size_t kGranule = 4096;

struct Pool {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // by capacity
  size_t cached = 0;
  size_t limit = size_t(1) << 30;  // 1 GiB (FASTCONV_BUFFER_POOL_MB, see _runtime.py)

  void trim_to(size_t bytes) {  // caller holds the mutex
    for (auto it = free_blocks.begin(); cached > bytes && it != free_blocks.end();) {
      while (cached > bytes && !it->second.empty()) {
        std::free(it->second.back());
        it->second.pop_back();
        cached -= it->first;
      }
      it = it->second.empty() ? free_blocks.erase(it) : std::next(it);
    }
  }
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: arrays may outlive static destruction
  return *p;
}

// The block's capacity (data bytes) sits in its first word; the data starts kAlignment later.
size_t capacity_for(size_t nbytes) {
  if (nbytes < kMinPooled) return (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  return (nbytes + kGranule - 1) / kGranule * kGranule;
}

}  // namespace

void* buffer_pool_acquire(size_t nbytes) {
  if (nbytes > SIZE_MAX - 2 * kGranule) throw std::bad_alloc();
  const size_t capacity = capacity_for(nbytes);
  Pool& p = pool();
  void* base = nullptr;
  if (capacity >= kMinPooled) {
    std::lock_guard<std::mutex> lock(p.mutex);
    auto it = p.free_blocks.find(capacity);
    if (it != p.free_blocks.end() && !it->second.empty()) {
      base = it->second.back();
      it->second.pop_back();
      p.cached -= capacity;
    }
  }
  if (!base) base = std::aligned_alloc(kAlignment, capacity + kAlignment);
  if (!base) {  // give back what is cached and try once more
    {
      std::lock_guard<std::mutex> lock(p.mutex);
      p.trim_to(0);
    }
    base = std::aligned_alloc(kAlignment, capacity + kAlignment);
    if (!base) throw std::bad_alloc();
  }
  *static_cast<size_t*>(base) = capacity;
  return static_cast<char*>(base) + kAlignment;
}

void buffer_pool_release(void* block) {
  if (!block) return;
  void* base = static_cast<char*>(block) - kAlignment;
  const size_t capacity = *static_cast<size_t*>(base);
  if (capacity >= kMinPooled) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.cached + capacity <= p.limit) {
      p.free_blocks[capacity].push_back(base);
      p.cached += capacity;
      return;
    }
  }
  std::free(base);
}

void set_buffer_pool_limit(size_t bytes) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.limit = bytes;
  p.trim_to(bytes);
}

size_t buffer_pool_limit() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.limit;
}

size_t buffer_pool_cached_bytes() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.cached;
}

}  // namespace fastconv
