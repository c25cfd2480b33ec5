// pybind11 bindings of fastconv._core. This file only converts arguments, checks that the
// arrays are what the kernels may safely read and write (dtype, C order, ndim, the shape
// relations between arrays), and releases the GIL around each kernel. User-facing argument
// checking, shape formulas and output allocation live in python/fastconv/kernels.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "activation.h"
#include "buffer_pool.h"
#include "conv.h"
#include "dispatch.h"
#include "matmul.h"
#include "optim.h"
#include "pool.h"
#include "threading.h"

namespace py = pybind11;
using Pair = std::pair<int64_t, int64_t>;

namespace fastconv {
namespace {

enum class DType { f32, f64 };

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

DType float_dtype(const py::array& a, const char* name) {
  if (py::isinstance<py::array_t<float>>(a)) return DType::f32;
  if (py::isinstance<py::array_t<double>>(a)) return DType::f64;
  throw py::type_error(std::string(name) + ": expected a float32 or float64 array, got " +
                       dtype_name(a));
}

void require_layout(const py::array& a, const char* name, py::ssize_t ndim, bool writable) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) +
                          " dimensions, got " + std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": not writeable");
}

void require_float(const py::array& a, const char* name, py::ssize_t ndim, DType dtype,
                   bool writable = false) {
  if (float_dtype(a, name) != dtype)
    throw py::type_error(std::string(name) + ": dtype " + dtype_name(a) +
                         " differs from the input's");
  require_layout(a, name, ndim, writable);
}

void require_indices(const py::array& a, const char* name, const py::array& like) {
  if (!py::isinstance<py::array_t<int64_t>>(a))
    throw py::type_error(std::string(name) + ": expected an int64 array, got " + dtype_name(a));
  require_layout(a, name, like.ndim(), false);
  for (py::ssize_t d = 0; d < like.ndim(); ++d)
    if (a.shape(d) != like.shape(d))
      throw py::value_error(std::string(name) + ": shape differs from the pooled output's");
}

void require(bool ok, const std::string& what) {
  if (!ok) throw py::value_error(what);
}

void require_positive(const Pair& p, const char* name) {
  require(p.first >= 1 && p.second >= 1, std::string(name) + ": must be >= 1");
}

void require_non_negative(const Pair& p, const char* name) {
  require(p.first >= 0 && p.second >= 0, std::string(name) + ": must be >= 0");
}

// Calls f(T()) with T the C++ type of dtype: one body serves float and double.
template <typename F>
void with_float_type(DType dtype, const F& f) {
  if (dtype == DType::f32)
    f(float());
  else
    f(double());
}

template <typename T>
const T* cdata(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <typename T>
T* mdata(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}
template <typename T>
const T* optional_data(const py::object& a) {
  return a.is_none() ? nullptr : static_cast<const T*>(a.cast<py::array>().data());
}

// Conv2dShape from the input (N,C,H,W), weight (K,C/g,R,S) and output (N,K,Ho,Wo) shapes,
// after checking that they fit together.
Conv2dShape conv_shape(const py::array& x, const py::array& w, const py::array& y,
                       const Pair& stride, const Pair& padding, const Pair& dilation,
                       int64_t groups) {
  require_positive(stride, "stride");
  require_non_negative(padding, "padding");
  require_positive(dilation, "dilation");
  require(groups >= 1, "groups: must be >= 1");
  Conv2dShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(2),
                w.shape(3), y.shape(2), y.shape(3), stride.first, stride.second,
                padding.first, padding.second, dilation.first, dilation.second, groups};
  require(s.C == w.shape(1) * groups, "weight: shape[1] * groups must equal the input channels");
  require(s.K % groups == 0, "weight: shape[0] must be divisible by groups");
  require(y.shape(0) == s.N && y.shape(1) == s.K,
          "output: batch and channels must match the input and weight");
  return s;
}

void check_bias(const py::object& bias, DType dt, int64_t length) {
  if (bias.is_none()) return;
  py::array b = bias.cast<py::array>();
  require_float(b, "bias", 1, dt);
  require(b.shape(0) == length, "bias: wrong length");
}

void conv2d_forward_py(const py::array& x, const py::array& w, const py::object& bias,
                       py::array& out, Pair stride, Pair padding, Pair dilation, int64_t groups) {
  const DType dt = float_dtype(x, "input");
  require_float(x, "input", 4, dt);
  require_float(w, "weight", 4, dt);
  require_float(out, "out", 4, dt, true);
  const Conv2dShape s = conv_shape(x, w, out, stride, padding, dilation, groups);
  check_bias(bias, dt, s.K);
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* b = optional_data<T>(bias);
    py::gil_scoped_release release;
    conv2d_forward(s, cdata<T>(x), cdata<T>(w), b, mdata<T>(out));
  });
}

// out = dx (N,C,H,W); bias (C) optional, added to every dx[:, c] (conv_transpose2d).
void conv2d_input_grad_py(const py::array& w, const py::array& dy, const py::object& bias,
                          py::array& out, Pair stride, Pair padding, Pair dilation,
                          int64_t groups) {
  const DType dt = float_dtype(dy, "grad_output");
  require_float(w, "weight", 4, dt);
  require_float(dy, "grad_output", 4, dt);
  require_float(out, "out", 4, dt, true);
  const Conv2dShape s = conv_shape(out, w, dy, stride, padding, dilation, groups);
  check_bias(bias, dt, s.C);
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* b = optional_data<T>(bias);
    py::gil_scoped_release release;
    conv2d_input_grad(s, cdata<T>(w), cdata<T>(dy), b, mdata<T>(out));
  });
}

// out = dw (K, C/groups, R, S)
void conv2d_weight_grad_py(const py::array& x, const py::array& dy, py::array& out, Pair stride,
                           Pair padding, Pair dilation, int64_t groups) {
  const DType dt = float_dtype(x, "input");
  require_float(x, "input", 4, dt);
  require_float(dy, "grad_output", 4, dt);
  require_float(out, "out", 4, dt, true);
  const Conv2dShape s = conv_shape(x, out, dy, stride, padding, dilation, groups);
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    conv2d_weight_grad(s, cdata<T>(x), cdata<T>(dy), mdata<T>(out));
  });
}

// out = db (K): dy summed over its batch and plane; dy (N, K, Ho, Wo)
void conv2d_bias_grad_py(const py::array& dy, py::array& out) {
  const DType dt = float_dtype(dy, "grad_output");
  require_float(dy, "grad_output", 4, dt);
  require_float(out, "out", 1, dt, true);
  require(out.shape(0) == dy.shape(1), "out: length differs from grad_output's channels");
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    conv2d_bias_grad(dy.shape(0), dy.shape(1), dy.shape(2) * dy.shape(3), cdata<T>(dy),
                     mdata<T>(out));
  });
}

// Pool2dShape from the input-side (N,C,H,W) and output-side (N,C,Ho,Wo) arrays.
Pool2dShape pool_shape(const py::array& big, const py::array& small, const Pair& kernel,
                       const Pair& stride, const Pair& padding, const Pair& dilation) {
  require_positive(kernel, "kernel_size");
  require_positive(stride, "stride");
  require_non_negative(padding, "padding");
  require_positive(dilation, "dilation");
  require(big.shape(0) == small.shape(0) && big.shape(1) == small.shape(1),
          "pooling: batch and channels of input and output differ");
  return {big.shape(0),  big.shape(1),  big.shape(2),   big.shape(3),    small.shape(2),
          small.shape(3), kernel.first, kernel.second, stride.first,    stride.second,
          padding.first, padding.second, dilation.first, dilation.second};
}

void max_pool2d_forward_py(const py::array& x, py::array& out, const py::object& indices,
                           Pair kernel, Pair stride, Pair padding, Pair dilation) {
  const DType dt = float_dtype(x, "input");
  require_float(x, "input", 4, dt);
  require_float(out, "out", 4, dt, true);
  int64_t* idx = nullptr;
  if (!indices.is_none()) {
    py::array ind = indices.cast<py::array>();
    require_indices(ind, "indices", out);
    require(ind.writeable(), "indices: not writeable");
    idx = mdata<int64_t>(ind);
  }
  const Pool2dShape s = pool_shape(x, out, kernel, stride, padding, dilation);
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    max_pool2d_forward(s, cdata<T>(x), mdata<T>(out), idx);
  });
}

void max_pool2d_backward_py(const py::array& dy, const py::array& indices, py::array& out) {
  const DType dt = float_dtype(dy, "grad_output");
  require_float(dy, "grad_output", 4, dt);
  require_float(out, "out", 4, dt, true);
  require_indices(indices, "indices", dy);
  const Pool2dShape s = pool_shape(out, dy, {1, 1}, {1, 1}, {0, 0}, {1, 1});
  bool ok = true;
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    ok = max_pool2d_backward(s, cdata<T>(dy), cdata<int64_t>(indices), mdata<T>(out));
  });
  require(ok, "indices: values must lie in [0, H*W) of the input plane, H*W = " +
                  std::to_string(s.H * s.W));
}

void avg_pool2d_forward_py(const py::array& x, py::array& out, Pair kernel, Pair stride,
                           Pair padding, bool count_include_pad, int64_t divisor_override) {
  const DType dt = float_dtype(x, "input");
  require_float(x, "input", 4, dt);
  require_float(out, "out", 4, dt, true);
  const Pool2dShape s = pool_shape(x, out, kernel, stride, padding, {1, 1});
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    avg_pool2d_forward(s, count_include_pad, divisor_override, cdata<T>(x), mdata<T>(out));
  });
}

void avg_pool2d_backward_py(const py::array& dy, py::array& out, Pair kernel, Pair stride,
                            Pair padding, bool count_include_pad, int64_t divisor_override) {
  const DType dt = float_dtype(dy, "grad_output");
  require_float(dy, "grad_output", 4, dt);
  require_float(out, "out", 4, dt, true);
  const Pool2dShape s = pool_shape(out, dy, kernel, stride, padding, {1, 1});
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    avg_pool2d_backward(s, count_include_pad, divisor_override, cdata<T>(dy), mdata<T>(out));
  });
}

// out (M, N) = op(a) @ op(b), op = transpose or not; a, b 2-D C-contiguous.
void matmul_py(const py::array& a, const py::array& b, py::array& out, bool transpose_a,
               bool transpose_b) {
  const DType dt = float_dtype(a, "a");
  require_float(a, "a", 2, dt);
  require_float(b, "b", 2, dt);
  require_float(out, "out", 2, dt, true);
  const int64_t a0 = a.shape(0), a1 = a.shape(1), b0 = b.shape(0), b1 = b.shape(1);
  MatmulShape s{transpose_a ? a1 : a0, transpose_b ? b0 : b1, transpose_a ? a0 : a1,
                transpose_a ? 1 : a1, transpose_a ? a1 : 1, transpose_b ? 1 : b1,
                transpose_b ? b1 : 1};
  require((transpose_b ? b1 : b0) == s.K, "b: inner dimensions of a and b differ");
  require(out.shape(0) == s.M && out.shape(1) == s.N, "out: wrong shape for the product");
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    matmul(s, cdata<T>(a), cdata<T>(b), mdata<T>(out));
  });
}

// out = relu(x); flat (1-D) C-contiguous arrays of one size.
void relu_forward_py(const py::array& x, py::array& out) {
  const DType dt = float_dtype(x, "input");
  require_float(x, "input", 1, dt);
  require_float(out, "out", 1, dt, true);
  require(out.shape(0) == x.shape(0), "out: size differs from the input's");
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    relu_forward(x.shape(0), cdata<T>(x), mdata<T>(out));
  });
}

// out = d relu / d input, from relu's output and the gradient of it; flat arrays of one size.
void relu_backward_py(const py::array& y, const py::array& dy, py::array& out) {
  const DType dt = float_dtype(dy, "grad_output");
  require_float(dy, "grad_output", 1, dt);
  require_float(y, "output", 1, dt);
  require_float(out, "out", 1, dt, true);
  require(y.shape(0) == dy.shape(0) && out.shape(0) == dy.shape(0),
          "output, grad_output and out must have one size");
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    py::gil_scoped_release release;
    relu_backward(dy.shape(0), cdata<T>(y), cdata<T>(dy), mdata<T>(out));
  });
}

// An array of a list argument, as `name[i]`: C-contiguous, of dtype dt and of n elements.
py::array list_item(const py::list& list, size_t i, const char* name, DType dt, int64_t n,
                    bool writable) {
  const std::string item = std::string(name) + "[" + std::to_string(i) + "]";
  if (!py::isinstance<py::array>(list[i]))
    throw py::type_error(item + ": expected a numpy.ndarray");
  py::array a = py::reinterpret_borrow<py::array>(list[i]);
  require_float(a, item.c_str(), a.ndim(), dt, writable);
  require(n < 0 || a.size() == n, item + ": size differs from params[" + std::to_string(i) +
                                      "]'s");
  return a;
}

// One SGD step in place on each parameter of a list (C-contiguous arrays of any shape), with
// the same options: grads[i] and buffers[i] (buffers None when momentum == 0) of params[i]'s
// size and dtype; no array written may overlap another array of the call.
void sgd_update_py(const py::list& params, const py::list& grads, const py::object& buffers,
                   double lr, double momentum, double dampening, double weight_decay,
                   bool nesterov, bool maximize, bool first_step) {
  const size_t count = params.size();
  require(grads.size() == count, "grads: expected as many arrays as params");
  py::list bufs;
  if (!buffers.is_none()) {
    if (!py::isinstance<py::list>(buffers))
      throw py::type_error("momentum_buffers: expected a list of numpy.ndarray or None");
    bufs = py::reinterpret_borrow<py::list>(buffers);
    require(bufs.size() == count, "momentum_buffers: expected as many arrays as params");
  }
  require(momentum == 0 || !buffers.is_none(), "momentum_buffers: required when momentum != 0");
  if (count == 0) return;
  if (!py::isinstance<py::array>(params[0]))
    throw py::type_error("params[0]: expected a numpy.ndarray");
  const DType dt = float_dtype(py::reinterpret_borrow<py::array>(params[0]), "params[0]");
  const SgdOptions options{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
  with_float_type(dt, [&](auto zero) {
    using T = decltype(zero);
    std::vector<SgdArrays<T>> arrays;
    for (size_t i = 0; i < count; ++i) {
      py::array p = list_item(params, i, "params", dt, -1, true);
      const int64_t n = p.size();
      py::array g = list_item(grads, i, "grads", dt, n, false);
      T* b = nullptr;
      if (!buffers.is_none()) {
        py::array buf = list_item(bufs, i, "momentum_buffers", dt, n, true);
        b = mdata<T>(buf);
      }
      arrays.push_back({n, mdata<T>(p), cdata<T>(g), b});
    }
    const int64_t clash = first_overlap(arrays);
    require(clash < 0, "params[" + std::to_string(clash) + "]: it, its grad or its momentum "
                       "buffer shares memory with an array of the call");
    py::gil_scoped_release release;
    sgd_update(arrays, options);
  });
}

py::dict build_info() {
  py::dict info;
  info["version"] = FASTCONV_VERSION;
  info["compiler"] = FASTCONV_COMPILER;
  info["openmp"] = openmp_enabled();
#ifdef _OPENMP
  info["openmp_version"] = _OPENMP;
#else
  info["openmp_version"] = py::none();
#endif
  info["isas_compiled"] = compiled_isas();
  return info;
}

// One block of the buffer pool, the base object of the arrays built on it: it goes back to the
// pool when the array and every view of it are gone. It exposes a writeable buffer, so that
// NumPy lets such an array be made read-only and writeable again, as one that owns its data.
struct PoolBlock {
  void* data;
  size_t nbytes;
  PoolBlock(void* d, size_t n) : data(d), nbytes(n) {}
  PoolBlock(const PoolBlock&) = delete;
  PoolBlock& operator=(const PoolBlock&) = delete;
  ~PoolBlock() { buffer_pool_release(data); }
};

// An uninitialised C-contiguous array on a block of the buffer pool.
py::array pooled_empty(const std::vector<py::ssize_t>& shape, const py::dtype& dtype) {
  size_t nbytes = static_cast<size_t>(dtype.itemsize());
  for (py::ssize_t d : shape) {
    if (d < 0) throw py::value_error("pooled_empty: negative dimension " + std::to_string(d));
    if (d != 0 && nbytes > SIZE_MAX / static_cast<size_t>(d)) throw std::bad_alloc();
    nbytes *= static_cast<size_t>(d);
  }
  auto block = std::make_unique<PoolBlock>(buffer_pool_acquire(nbytes), nbytes);
  void* data = block->data;
  py::object owner = py::cast(std::move(block));
  return py::array(dtype, shape, std::vector<py::ssize_t>{}, data, owner);
}

}  // namespace
}  // namespace fastconv

PYBIND11_MODULE(_core, m) {
  using namespace fastconv;
  m.doc() = "fastconv's C++ kernels. Private: use the functions of the fastconv package.";
  m.attr("__version__") = FASTCONV_VERSION;

  m.def("conv2d_forward", &conv2d_forward_py, py::arg("input"), py::arg("weight"),
        py::arg("bias"), py::arg("out"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_input_grad", &conv2d_input_grad_py, py::arg("weight"), py::arg("grad_output"),
        py::arg("bias"), py::arg("out"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_bias_grad", &conv2d_bias_grad_py, py::arg("grad_output"), py::arg("out"));
  m.def("conv2d_weight_grad", &conv2d_weight_grad_py, py::arg("input"), py::arg("grad_output"),
        py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"));
  m.def("max_pool2d_forward", &max_pool2d_forward_py, py::arg("input"), py::arg("out"),
        py::arg("indices"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"));
  m.def("max_pool2d_backward", &max_pool2d_backward_py, py::arg("grad_output"),
        py::arg("indices"), py::arg("out"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward_py, py::arg("input"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("count_include_pad"), py::arg("divisor_override"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward_py, py::arg("grad_output"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("count_include_pad"), py::arg("divisor_override"));

  m.def("matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("out"),
        py::arg("transpose_a"), py::arg("transpose_b"));

  m.def("sgd_update", &sgd_update_py, py::arg("params"), py::arg("grads"), py::arg("buffers"),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
        py::arg("nesterov"), py::arg("maximize"), py::arg("first_step"));
  m.def("relu_forward", &relu_forward_py, py::arg("input"), py::arg("out"));
  m.def("relu_backward", &relu_backward_py, py::arg("output"), py::arg("grad_output"),
        py::arg("out"));

  m.def("get_num_threads", &get_num_threads);
  m.def("_peak_threads_claimed", &peak_threads_claimed, py::arg("reset"),
        "The most threads fastconv's parallel regions used at once since the last reset.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    set_num_threads(n);
  });
  m.def("available_isas", &available_isas);
  m.def("get_isa", []() { return std::string(active_isa().name); });
  m.def("set_isa", &set_active_isa, py::arg("name"));
  m.def("conv_algorithms", &conv_algorithms);
  m.def("get_algorithm", &conv_algorithm_name);
  m.def("set_algorithm", &set_conv_algorithm, py::arg("name"));
  m.def("build_info", &build_info);
  // module_local: another build of _core loaded in the same process (bench/ab.py) registers the
  // same C++ type again.
  py::class_<PoolBlock>(m, "_PoolBlock", py::buffer_protocol(), py::module_local())
      .def_buffer([](PoolBlock& b) {
        return py::buffer_info(b.data, 1, "B", 1, {static_cast<py::ssize_t>(b.nbytes)}, {1},
                               false);
      });
  m.def("pooled_empty", &pooled_empty, py::arg("shape"), py::arg("dtype"));
  m.def("set_buffer_pool_limit", &set_buffer_pool_limit, py::arg("nbytes"));
  m.def("buffer_pool_limit", &buffer_pool_limit);
  m.def("buffer_pool_cached_bytes", &buffer_pool_cached_bytes);
}
