// Runtime CPU dispatch: the table of micro-kernels in use, chosen once from CPU detection
// (the best supported ISA) and switchable by name (FASTCONV_ISA, fastconv.set_isa).
#pragma once

#include <string>
#include <vector>

#include "microkernel.h"

namespace fastconv {

// Names of the ISAs this build contains and this CPU can run, best last.
std::vector<std::string> available_isas();
// Names of the ISAs compiled into this build, whether or not this CPU can run them.
std::vector<std::string> compiled_isas();
const IsaKernels& active_isa();
// Returns false (and changes nothing) if `name` is unknown or not runnable on this CPU.
bool set_active_isa(const std::string& name);

// Convolution algorithm choice (FASTCONV_ALGORITHM, fastconv.set_algorithm): "auto" picks
// the fastest exact-enough path per layer, "gemm" never uses Winograd, "winograd" uses it
// wherever it applies (3x3, stride 1, undilated, ungrouped), even where it does not pay.
enum class ConvAlgorithm { kAuto, kGemm, kWinograd };
ConvAlgorithm active_conv_algorithm();
std::string conv_algorithm_name();
std::vector<std::string> conv_algorithms();
// Returns false (and changes nothing) if `name` is not one of conv_algorithms().
bool set_conv_algorithm(const std::string& name);

// The kernels of one table for element type T. A call that uses several kernels takes them
// from one table (active_isa() read once), so that a concurrent set_isa cannot mix ISAs.
template <typename T>
struct IsaKernelsOf;
template <>
struct IsaKernelsOf<float> {
  static const MicroKernel<float>& microkernel(const IsaKernels& k) { return k.f32; }
  static const PlaneKernels<float>& planes(const IsaKernels& k) { return k.planes_f32; }
  static const WinogradKernels<float>& winograd(const IsaKernels& k) { return k.winograd_f32; }
  static TransposeFn<float> transpose(const IsaKernels& k) { return k.transpose_f32; }
};
template <>
struct IsaKernelsOf<double> {
  static const MicroKernel<double>& microkernel(const IsaKernels& k) { return k.f64; }
  static const PlaneKernels<double>& planes(const IsaKernels& k) { return k.planes_f64; }
  static const WinogradKernels<double>& winograd(const IsaKernels& k) { return k.winograd_f64; }
  static TransposeFn<double> transpose(const IsaKernels& k) { return k.transpose_f64; }
};

template <typename T>
const MicroKernel<T>& active_microkernel() {
  return IsaKernelsOf<T>::microkernel(active_isa());
}
// uk, or its half-width sibling where a GEMM has at most that many columns (n): the AVX-512
// tile of 32 floats would be half empty on 16 output channels (LeNet's second layer forward
// 1.14x slower than with AVX2's 6x16).
template <typename T>
MicroKernel<T> fitted_microkernel(const MicroKernel<T>& uk, int64_t n) {
  return uk.half != nullptr && n <= uk.half->nr ? *uk.half : uk;
}

template <typename T>
const PlaneKernels<T>& active_plane_kernels() {
  return IsaKernelsOf<T>::planes(active_isa());
}

}  // namespace fastconv
