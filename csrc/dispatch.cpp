#include "dispatch.h"

#include <atomic>
#include <iterator>

namespace fastconv {
namespace {

#ifdef FASTCONV_HAVE_AVX2  // defined by CMakeLists.txt on x86 only
bool cpu_has_avx2_fma() {
  // libgcc's detection also checks that the OS saves the YMM state (XGETBV).
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool cpu_has_avx512() {
  // Also checks that the OS saves the ZMM state (XGETBV). VL: the AVX-512 file's 256-bit
  // kernels use the 32 vector registers (every AVX-512 CPU since Skylake-SP has it; Xeon Phi,
  // without it, takes the AVX2 table).
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

struct IsaEntry {
  const IsaKernels* kernels;
  bool runnable;
};

std::vector<IsaEntry> isa_table() {
  std::vector<IsaEntry> table = {{&isa_kernels_baseline(), true}};
#ifdef FASTCONV_HAVE_AVX2
  const bool avx2 = cpu_has_avx2_fma();
  // Only take the AVX2 table's address when the CPU can run it.
  table.push_back({avx2 ? &isa_kernels_avx2() : nullptr, avx2});
  const bool avx512 = cpu_has_avx512();
  table.push_back({avx512 ? &isa_kernels_avx512() : nullptr, avx512});
#endif
  return table;
}

const std::vector<IsaEntry>& isas() {
  static const std::vector<IsaEntry> table = isa_table();
  return table;
}

const IsaKernels* best_isa() {
  const IsaKernels* best = nullptr;
  for (const IsaEntry& e : isas())
    if (e.runnable) best = e.kernels;
  return best;
}

std::atomic<const IsaKernels*>& active_slot() {
  static std::atomic<const IsaKernels*> slot{best_isa()};
  return slot;
}

constexpr const char* kAlgorithmNames[] = {"auto", "gemm", "winograd"};

std::atomic<ConvAlgorithm>& algorithm_slot() {
  static std::atomic<ConvAlgorithm> slot{ConvAlgorithm::kAuto};
  return slot;
}

}  // namespace

ConvAlgorithm active_conv_algorithm() { return algorithm_slot().load(std::memory_order_relaxed); }

std::string conv_algorithm_name() {
  return kAlgorithmNames[static_cast<int>(active_conv_algorithm())];
}

std::vector<std::string> conv_algorithms() {
  return std::vector<std::string>(std::begin(kAlgorithmNames), std::end(kAlgorithmNames));
}

bool set_conv_algorithm(const std::string& name) {
  for (int i = 0; i < 3; ++i) {
    if (name == kAlgorithmNames[i]) {
      algorithm_slot().store(static_cast<ConvAlgorithm>(i), std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const IsaEntry& e : isas())
    if (e.runnable) names.emplace_back(e.kernels->name);
  return names;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names = {"baseline"};
#ifdef FASTCONV_HAVE_AVX2
  names.emplace_back("avx2");
  names.emplace_back("avx512");
#endif
  return names;
}

const IsaKernels& active_isa() { return *active_slot().load(std::memory_order_acquire); }

bool set_active_isa(const std::string& name) {
  for (const IsaEntry& e : isas()) {
    if (e.runnable && name == e.kernels->name) {
      active_slot().store(e.kernels, std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace fastconv
