// Winograd F(2x2, 3x3) (Lavin & Gray, 2015) over tiles of 2x2 outputs, each read from a 4x4
// input patch d (zero outside the image):
//   V = B^T d B      per input channel                 B^T = [1  0 -1  0]
//   M = sum_c U[k,c] (.) V[c]   (16 independent GEMMs)        [0  1  1  0]
//   Y = A^T M A      per output channel                       [0 -1  1  0]
//   U = G g G^T      per (k, c), once per call                [0  1  0 -1]
//   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],  A^T = [1 1 1 0; 0 1 -1 -1]
//
// Shapes, for the correlation being computed (the forward pass, or the input gradient as a
// correlation of dy with the flipped, transposed weights and padding 2 - pad):
//   x (N, C, H, W), y (N, K, Ho, Wo); tiles: ceil(Ho/2) x ceil(Wo/2) per image, numbered
//   image by image, row by row; a panel is NR consecutive tiles (NR = the micro-kernel's width).
// Loop order, parallel over panels (each writes its own outputs, so no races):
//   transform the panel's input patches into V[xi] (C x NR, the packed-B layout: k-major)
//   for chunks of output channels:
//     for each xi < 16: M[xi] (chunk x NR) = U[xi] (packed A, chunk x C) * V[xi]   micro-kernels
//     Y = A^T M A for the chunk, stored (with the bias) into the 2x2 tiles of y
// V of one panel stays in L1/L2; the packed U (16 * K * C) is read from L2 by every panel.
// The transforms are winograd_transforms.inc's, except AVX2's float input and output transforms
// (winograd_avx2.cpp: d B kept in registers, masked loads at the padding; whole blocks of
// output tiles stored from registers) and AVX-512's float input transform (winograd_avx512.cpp,
// the same on 16 lanes).
// The weight gradient (winograd_weight_grad_tiles) transforms channels-last copies of x and dy
// instead, so that its 16 GEMMs reduce over the tiles.
#include "winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "channels_last.h"
#include "common.h"
#include "dispatch.h"
#include "gemm.h"
#include "threading.h"

namespace fastconv {
namespace {

constexpr double kMinFlopsPerThread = 2e5;
// Output channels per output-transform pass: M[16] of one chunk stays in L1/L2.
constexpr int64_t kChannelChunk = 48;

struct WinogradGeometry {
  int64_t N, C, H, W;  // input of the correlation
  int64_t K, Ho, Wo;   // its output
  int64_t pad_h, pad_w;
  int64_t tiles_h, tiles_w;
};

WinogradGeometry make_geometry(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                               int64_t Ho, int64_t Wo, int64_t pad_h, int64_t pad_w) {
  return {N, C, H, W, K, Ho, Wo, pad_h, pad_w, ceil_div(Ho, 2), ceil_div(Wo, 2)};
}

// The runs of tile rows that lanes [0, nr) of the panel starting at tile first_tile cover.
int panel_runs(const WinogradGeometry& g, int64_t first_tile, int nr, WinogradTileRun* runs) {
  const int64_t per_image = g.tiles_h * g.tiles_w, total = g.N * per_image;
  int count = 0;
  for (int lane = 0; lane < nr && first_tile + lane < total;) {
    const int64_t t = first_tile + lane, n = t / per_image, rem = t % per_image;
    const int64_t ti = rem / g.tiles_w, tj = rem % g.tiles_w;
    const int len = static_cast<int>(std::min<int64_t>({g.tiles_w - tj, nr - lane, total - t}));
    runs[count++] = {n, ti, tj, lane, len};
    lane += len;
  }
  return count;
}

// U[xi][k][c] = (G g G^T)[xi] for the 3x3 filter g of output k and input c (one k per call);
// for the input gradient (flip) g[r][s] = w[c][k][2-r][2-s] of the forward weights w
// (C_fwd = K, K_fwd = C).
template <typename T>
void transform_weights(const T* w, int64_t K, int64_t C, bool flip, int64_t k, T* u) {
  const T half = T(0.5);
  // Blocks of channels through a local buffer, then 16 contiguous runs out: storing each
  // channel's 16 values straight into u hit 16 rows K*C apart, which share L1 sets when
  // K*C*sizeof(T) is a multiple of 4 KiB (64x64: 3.2x slower).
  constexpr int64_t kBlock = 64;
  T t[16 * kBlock];
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t cb = std::min(kBlock, C - c0);
    for (int64_t c = c0; c < c0 + cb; ++c) {
      T g[3][3];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s)
          g[r][s] = flip ? w[((c * K + k) * 3 + 2 - r) * 3 + 2 - s]
                         : w[((k * C + c) * 3 + r) * 3 + s];
      T gg[4][3];  // G g
      for (int s = 0; s < 3; ++s) {
        gg[0][s] = g[0][s];
        gg[1][s] = half * (g[0][s] + g[1][s] + g[2][s]);
        gg[2][s] = half * (g[0][s] - g[1][s] + g[2][s]);
        gg[3][s] = g[2][s];
      }
      for (int i = 0; i < 4; ++i) {  // (G g) G^T
        const T row[4] = {gg[i][0], half * (gg[i][0] + gg[i][1] + gg[i][2]),
                          half * (gg[i][0] - gg[i][1] + gg[i][2]), gg[i][2]};
        for (int j = 0; j < 4; ++j) t[(i * 4 + j) * kBlock + c - c0] = row[j];
      }
    }
    for (int64_t ij = 0; ij < 16; ++ij)
      std::copy(t + ij * kBlock, t + ij * kBlock + cb, u + (ij * K + k) * C + c0);
  }
}

// The panels of one call, NR (the micro-kernel's width) fixed so the transforms vectorise.
template <typename T, int NR>
bool winograd_panels(const WinogradGeometry& g, const MicroKernel<T>& uk,
                     const WinogradKernels<T>& wk, int64_t KC, const T* a, int64_t a_size,
                     const T* x, const T* bias, T* y) {
  const int mr = uk.mr;
  const int64_t m_pad = round_up(g.K, mr);
  const int64_t tiles = g.N * g.tiles_h * g.tiles_w, panels = ceil_div(tiles, NR);
  const int64_t chunk = std::min(m_pad, round_up(kChannelChunk, mr));
  // Each xi's V and M padded by two panel rows: strides of a multiple of 4 KiB would make the
  // transforms' loads and stores of different xi alias in the CPU's store buffer.
  const int64_t v_stride = g.C * NR + 2 * NR, m_stride = chunk * NR + 2 * NR;
  const int64_t v_size = 16 * v_stride, m_size = 16 * m_stride;
  const int nthreads = threads_for(32.0 * g.K * g.C * tiles, kMinFlopsPerThread, panels);
  T* v_scratch = thread_scratch<T>(kScratchColumns, nthreads * v_size);
  T* m_scratch = thread_scratch<T>(kScratchPackedB, nthreads * m_size);
  std::atomic<bool> finite{true};

  parallel_for(panels, nthreads, [&](int64_t panel, int thread) {
    WinogradTileRun runs[NR];
    const WinogradPanel p = {g.C, g.H, g.W, g.K, g.Ho, g.Wo, g.pad_h, g.pad_w, v_stride, runs,
                             panel_runs(g, panel * NR, NR, runs)};
    T* v = v_scratch + thread * v_size;
    T* m = m_scratch + thread * m_size;
    wk.input_panel(p, x, v);
    for (int64_t k0 = 0; k0 < g.K; k0 += chunk) {
      const int64_t kn = std::min(chunk, g.K - k0);
      for (int64_t pc = 0; pc < g.C; pc += KC) {
        const int64_t kc = std::min(KC, g.C - pc);
        for (int xi = 0; xi < 16; ++xi) {
          const T* a_block = a + xi * a_size + pc * m_pad;
          const T* b_panel = v + xi * v_stride + pc * NR;
          T* m_xi = m + xi * m_stride;
          for (int64_t i0 = k0; i0 < k0 + kn; i0 += mr)
            uk.fn(kc, a_block + i0 * kc, b_panel, m_xi + (i0 - k0) * NR, NR, pc > 0);
        }
      }
      if (!wk.output_panel(p, m, m_stride, k0, kn, bias, y))
        finite.store(false, std::memory_order_relaxed);
    }
  });
  return finite.load(std::memory_order_relaxed);
}

// Returns false where an output value was non-finite (see winograd_forward).
template <typename T>
bool winograd_run(const WinogradGeometry& g, const T* x, const T* w, bool flip, const T* bias,
                  T* y) {
  if (g.N == 0 || g.K == 0 || g.Ho == 0 || g.Wo == 0) return true;
  if (g.C == 0) {  // no input channels: the bias alone
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t k = 0; k < g.K; ++k)
        std::fill(y + (n * g.K + k) * g.Ho * g.Wo, y + (n * g.K + k + 1) * g.Ho * g.Wo,
                  bias ? bias[k] : T(0));
    return true;
  }
  const IsaKernels& isa = active_isa();  // one ISA for the whole call
  const MicroKernel<T> uk = IsaKernelsOf<T>::microkernel(isa);
  const WinogradKernels<T> wk = IsaKernelsOf<T>::winograd(isa);
  const int64_t KC = gemm_blocking(uk).kc;
  const int64_t a_size = round_up(g.K, uk.mr) * g.C;

  // The weights' transform and packing, in parallel too: serial, they were a sixth of
  // resnet_b1's forward at 2 threads (the other thread waiting).
  T* u = thread_scratch<T>(kScratchPartials, 16 * g.K * g.C);
  const int weight_threads = threads_for(64.0 * g.K * g.C, 1e5, g.K);
  parallel_for(g.K, weight_threads, [&](int64_t k, int) {
    transform_weights(w, g.K, g.C, flip, k, u);
  });
  T* a = thread_scratch<T>(kScratchPackedA, 16 * a_size);
  parallel_for(16, weight_threads, [&](int64_t xi, int) {
    pack_a_full(u + xi * g.K * g.C, g.C, 1, g.K, g.C, KC, uk.mr, a + xi * a_size);
  });

  switch (uk.nr) {
    case 4: return winograd_panels<T, 4>(g, uk, wk, KC, a, a_size, x, bias, y);
    case 8: return winograd_panels<T, 8>(g, uk, wk, KC, a, a_size, x, bias, y);
    case 16: return winograd_panels<T, 16>(g, uk, wk, KC, a, a_size, x, bias, y);
    case 32: return winograd_panels<T, 32>(g, uk, wk, KC, a, a_size, x, bias, y);
  }
  return false;  // no such micro-kernel width: the caller's GEMM path
}

// The weight gradient, dW = G^T (sum over tiles of (A dY A^T) (.) (B^T d B)) G.
// Tasks: fixed ranges of the batch's tiles, one per thread (so the result depends only on the
// thread count), in one parallel region. A task copies each image it meets, x and dy, into
// its own channels-last buffers (x zero-padded so that tile (ti, tj) reads padded pixels
// 2ti..2ti+3 x 2tj..2tj+3; dy zero past Ho, Wo; channels padded to C_pad and to whole
// vectors), still in its cache when the transforms read them; then blocks of KT of the
// image's tiles are transformed along the channels straight into GEMM operands whose
// reduction runs over the tiles, one row of channels per tile and xi:
//   V[xi] (KT x C_pad), read as B rows through a pointer table; Z[xi] (KT x lda), read as A by
//   the strided-A micro-kernel (A(k, t) = Z[xi][t][k])
//   dU_split[xi] (K_pad x C_pad) += Z[xi]^T * V[xi]                           micro-kernels
// then dW[k][c] = G^T (sum over splits, in split order, of dU[.][k][c]) G. (Copies of
// batch chunks shared by all threads, between barriers, left the threads waiting for each
// other a sixth of the time; against them, bench/ab.py both orders at 2 threads: cifar_c2
// 1.13-1.31x, cifar_c3 1.14-1.31x, resnet_b8 1.04-1.10x, float64 cifar_c2 1.38x, and with
// the rows of an image split between tasks copied once, resnet_b1 1.05-1.10x.)
// Dilation (dh, dw): g is then the geometry of one phase (a, b) of the rows and columns,
//   x_ab[c][i][j] = x[c][i*dh + a][j*dw + b]   (dy likewise; conv.cpp's dilation phases),
// an image holds dh*dw phases of g's tiles, and the copies are of the image itself: a phase's
// tile reads every dh-th row and every dw-th pixel of them, so no phase is copied out
// (against copying x's and dy's phases out first, bench/ab.py both orders, the suite's
// dilated layer: 1.24-1.64x, 1.15x with the caches flushed, float64 1.18-1.23x, AVX2
// 1.18-1.25x, 1 thread 1.10-1.16x).
template <typename T>
void winograd_weight_grad_tiles(const WinogradGeometry& g, int64_t dh, int64_t dw,
                                const MicroKernel<T>& uk, const WinogradKernels<T>& wk,
                                const T* x, const T* dy, T* dW) {
  const int MR = uk.mr, NR = uk.nr;
  constexpr int64_t kLanes = 32 / sizeof(T);  // one vector of the tile transforms
  const TransposeFn<T> transpose = IsaKernelsOf<T>::transpose(active_isa());
  const int64_t C = g.C, K = g.K, c_pad = round_up(C, NR), k_pad = round_up(K, MR);
  // dy's channels: whole vectors; Z's rows: room for the last MR-row panel, whole vectors.
  const int64_t k_vec = round_up(K, kLanes), lda = round_up(k_pad, kLanes);
  const int64_t c_panels = c_pad / NR, k_panels = k_pad / MR;
  const int64_t th = g.tiles_h, tw = g.tiles_w, per_phase = th * tw;
  const int64_t per_image = dh * dw * per_phase, tiles = g.N * per_image;
  // The image copies, in the image's own (dilated) coordinates: x padded by dh*pad_h rows and
  // dw*pad_w columns, Hx x Wx pixels; dy Hd x Wd pixels, zero past Ho, Wo.
  const int64_t Hx = (2 * th + 2) * dh, Wx = (2 * tw + 2) * dw, Hd = 2 * th * dh, Wd = 2 * tw * dw;
  const int64_t H = g.H * dh, W = g.W * dw, Ho = g.Ho * dh, Wo = g.Wo * dw;
  const int64_t x_image = Hx * Wx * c_pad, dy_image = Hd * Wd * k_vec;
  // Phase (a, b)'s tile (ti, tj) starts at pixel (2ti*dh + a, 2tj*dw + b) of the copies; its
  // rows are dh rows apart, its pixels dw pixels.
  const int64_t x_row = dh * Wx * c_pad, x_pixel = dw * c_pad;
  const int64_t dy_row = dh * Wd * k_vec, dy_pixel = dw * k_vec;
  // KT: V and Z of one block about 256 KiB together (half of L2).
  const int64_t kt = std::clamp<int64_t>(
      (256 << 10) / (16 * (c_pad + lda) * static_cast<int64_t>(sizeof(T))), 16, 256);
  const int nthreads = threads_for(32.0 * K * C * tiles, kMinFlopsPerThread,
                                   ceil_div(tiles, kt));
  const int64_t splits = nthreads;
  const int64_t vb_size = 16 * c_pad * kt, za_size = 16 * lda * kt;
  // Per thread: the image copies, V, Z, V's row pointers and a flag per copied row of x and
  // of dy (each rounded so that the next stays aligned).
  const int64_t pointer_elems =
      round_up(ceil_div(kt * int64_t(sizeof(T*)), int64_t(sizeof(T))), 16);
  const int64_t flag_elems = round_up(ceil_div(Hx + Hd, int64_t(sizeof(T))), 16);
  const int64_t copies = round_up(x_image + dy_image, 16);
  const int64_t per_thread = copies + vb_size + za_size + pointer_elems + flag_elems;
  const int64_t du_size = 16 * k_pad * c_pad;
  T* scratch = thread_scratch<T>(kScratchPackedB, nthreads * per_thread);
  T* du = thread_scratch<T>(kScratchPartials, splits * du_size);
  std::fill(du, du + splits * du_size, T(0));

  parallel_for(splits, nthreads, [&](int64_t split, int thread) {
    T* xt = scratch + thread * per_thread;
    T* dyt = xt + x_image;
    T* vb = xt + copies;
    T* za = vb + vb_size;
    const T** v_rows = reinterpret_cast<const T**>(za + za_size);
    char* x_copied = reinterpret_cast<char*>(za + za_size + pointer_elems);
    char* dy_copied = x_copied + Hx;
    for (int64_t tl = 0; tl < kt; ++tl) v_rows[tl] = vb + tl * c_pad;
    for (int64_t r = 0; r < 16 * kt; ++r)  // Z's columns [k_vec, lda): never written
      std::fill(za + r * lda + k_vec, za + (r + 1) * lda, T(0));
    T* du_split = du + split * du_size;
    const int64_t t_end = tiles * (split + 1) / splits;
    for (int64_t t0 = tiles * split / splits; t0 < t_end;) {
      const int64_t n = t0 / per_image, image_end = std::min(t_end, (n + 1) * per_image);
      // Only the rows of the task's tiles (an image split between tasks: batch 1), each once:
      // phase by phase, tile rows ti_first..ti_last read rows 2ti_first..2ti_last+3 of it.
      std::fill(x_copied, x_copied + Hx + Hd, char(0));
      for (int64_t first = t0; first < image_end;) {
        const int64_t phase = (first % per_image) / per_phase, a = phase / dw;
        const int64_t last = std::min(image_end, n * per_image + (phase + 1) * per_phase) - 1;
        const int64_t ti_first = (first % per_phase) / tw, ti_last = (last % per_phase) / tw;
        for (int64_t r = 2 * ti_first; r < 2 * ti_last + 4; ++r) {
          const int64_t row = r * dh + a;
          if (!x_copied[row])
            channels_last_row(x + n * C * H * W, C, H, W, dh * g.pad_h, dw * g.pad_w, row, Wx,
                              c_pad, xt + row * Wx * c_pad, transpose);
          x_copied[row] = 1;
          if (r < 2 * ti_last + 2 && !dy_copied[row])  // dy's rows of these tiles
            channels_last_row(dy + n * K * Ho * Wo, K, Ho, Wo, int64_t(0), int64_t(0), row, Wd,
                              k_vec, dyt + row * Wd * k_vec, transpose);
          if (r < 2 * ti_last + 2) dy_copied[row] = 1;
        }
        first = last + 1;
      }
      for (int64_t first = t0; first < image_end; first += kt) {
        const int64_t count = std::min(kt, image_end - first);
        for (int64_t tl = 0; tl < count; ++tl) {
          const int64_t t = (first + tl) % per_image, phase = t / per_phase;
          const int64_t ti = (t % per_phase) / tw, tj = t % tw;
          const int64_t i0 = 2 * ti * dh + phase / dw, j0 = 2 * tj * dw + phase % dw;
          wk.input_tile(xt + (i0 * Wx + j0) * c_pad, x_row, x_pixel, c_pad, vb + tl * c_pad,
                        kt * c_pad);
          wk.grad_tile(dyt + (i0 * Wd + j0) * k_vec, dy_row, dy_pixel, k_vec, za + tl * lda,
                       kt * lda);
        }
        for (int xi = 0; xi < 16; ++xi)
          for (int64_t kp = 0; kp < k_panels; ++kp)
            for (int64_t cp = 0; cp < c_panels; ++cp)
              uk.strided_a(count, za + xi * kt * lda + kp * MR, lda, v_rows,
                           xi * kt * c_pad + cp * NR,
                           du_split + xi * k_pad * c_pad + kp * MR * c_pad + cp * NR, c_pad,
                           true);
      }
      t0 = image_end;
    }
  });

  const T half = T(0.5);
  // The splits' sums of row k of each dU[xi] are added along the channels, in blocks, into
  // m_rows (the 16 rows of one (k, split) are 4 * k_pad * c_pad bytes apart, so that summing
  // them channel by channel kept 32 lines of one L1 set in use: 9% of resnet_b1's weight
  // gradient at 2 threads), then transformed channel by channel.
  constexpr int64_t kBlock = 64;
  parallel_for(K, threads_for(double(K) * C * 16 * splits, 1e5, K), [&](int64_t k, int) {
    T m_rows[16][kBlock];
    for (int64_t c = 0; c < C; ++c) {
      const int64_t cb = c % kBlock;
      if (cb == 0) {
        const int64_t width = std::min(kBlock, C - c);
        for (int xi = 0; xi < 16; ++xi) {
          const T* row = du + xi * k_pad * c_pad + k * c_pad + c;
          std::copy(row, row + width, m_rows[xi]);
          for (int64_t sp = 1; sp < splits; ++sp)
            for (int64_t j = 0; j < width; ++j) m_rows[xi][j] += row[sp * du_size + j];
        }
      }
      T m[4][4];
      for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = m_rows[xi][cb];
      T gm[3][4];  // G^T M, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]
      for (int j = 0; j < 4; ++j) {
        gm[0][j] = m[0][j] + half * (m[1][j] + m[2][j]);
        gm[1][j] = half * (m[1][j] - m[2][j]);
        gm[2][j] = half * (m[1][j] + m[2][j]) + m[3][j];
      }
      T* out = dW + (k * C + c) * 9;
      for (int i = 0; i < 3; ++i) {  // (G^T M) G
        out[i * 3 + 0] = gm[i][0] + half * (gm[i][1] + gm[i][2]);
        out[i * 3 + 1] = half * (gm[i][1] - gm[i][2]);
        out[i * 3 + 2] = half * (gm[i][1] + gm[i][2]) + gm[i][3];
      }
    }
  });
}

}  // namespace

bool winograd_preferred(const Conv2dShape& s) {
  const ConvAlgorithm algorithm = active_conv_algorithm();
  if (algorithm == ConvAlgorithm::kGemm) return false;
  const bool applies = s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 &&
                       s.dil_h == 1 && s.dil_w == 1 && s.groups == 1;
  if (!applies || algorithm == ConvAlgorithm::kWinograd) return applies;
  // Auto: enough channels that the 16 GEMMs, not the transforms, dominate.
  return s.C >= 16 && s.K >= 16;
}

template <typename T>
bool all_finite(const T* a, int64_t n, const T* b, int64_t m) {
  // Integer test of the exponent bits (vectorises without fast-math): adding one unit to an
  // all-ones exponent carries into the sign bit. Blocks are scanned in parallel (memory-bound).
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr int kMantissa = sizeof(T) == 4 ? 23 : 52;
  constexpr Bits kExponent = (sizeof(T) == 4 ? Bits(0xff) : Bits(0x7ff)) << kMantissa;
  constexpr Bits kCarry = Bits(1) << kMantissa, kSign = Bits(1) << (8 * sizeof(T) - 1);
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks_a = ceil_div(n, kBlock), blocks = blocks_a + ceil_div(m, kBlock);
  std::atomic<bool> finite{true};
  parallel_for(blocks, threads_for(double(n + m), 1e6, blocks), [&](int64_t block, int) {
    const bool in_a = block < blocks_a;
    const int64_t start = (in_a ? block : block - blocks_a) * kBlock;
    const T* p = (in_a ? a : b) + start;
    const int64_t len = std::min(kBlock, (in_a ? n : m) - start);
    Bits acc = 0;
    for (int64_t i = 0; i < len; ++i) {
      Bits bits;
      std::memcpy(&bits, p + i, sizeof bits);
      acc |= (bits & kExponent) + kCarry;
    }
    if (acc & kSign) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load(std::memory_order_relaxed);
}

template <typename T>
bool winograd_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const WinogradGeometry g =
      make_geometry(s.N, s.C, s.H, s.W, s.K, s.Ho, s.Wo, s.pad_h, s.pad_w);
  return winograd_run(g, x, w, false, bias, y);
}

template <typename T>
bool winograd_input_grad(const Conv2dShape& s, const T* w, const T* dy, const T* bias, T* dx) {
  // dx[ih] = sum_r dy[ih + pad - r] w[r] = sum_r' dy[ih - (2 - pad) + r'] w[2 - r']
  const WinogradGeometry g =
      make_geometry(s.N, s.K, s.Ho, s.Wo, s.C, s.H, s.W, 2 - s.pad_h, 2 - s.pad_w);
  return winograd_run(g, dy, w, true, bias, dx);
}

template <typename T>
bool winograd_weight_grad(const Conv2dShape& s, const T* x, const T* dy, T* dW) {
  if (s.K == 0 || s.C == 0) return true;
  // Dilated: the geometry of one phase (the caller checked that the dilation divides H, W
  // and the padding).
  const int64_t dh = s.dil_h, dw = s.dil_w;
  const WinogradGeometry g = make_geometry(s.N, s.C, s.H / dh, s.W / dw, s.K, s.Ho / dh,
                                           s.Wo / dw, s.pad_h / dh, s.pad_w / dw);
  if (g.N * g.tiles_h * g.tiles_w == 0) {
    std::fill(dW, dW + s.K * s.C * 9, T(0));
    return true;
  }
  const IsaKernels& isa = active_isa();  // one ISA for the whole call
  const MicroKernel<T> uk = IsaKernelsOf<T>::microkernel(isa);
  const WinogradKernels<T> wk = IsaKernelsOf<T>::winograd(isa);
  winograd_weight_grad_tiles(g, dh, dw, uk, wk, x, dy, dW);
  return all_finite(dW, s.K * s.C * 9, dW, 0);
}

#define FASTCONV_INSTANTIATE(T)                                                            \
  template bool all_finite<T>(const T*, int64_t, const T*, int64_t);                     \
  template bool winograd_weight_grad<T>(const Conv2dShape&, const T*, const T*, T*);      \
  template bool winograd_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*); \
  template bool winograd_input_grad<T>(const Conv2dShape&, const T*, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
