// Fused SSIM forward and backward (11x11 separable Gaussian window, zero padding).
//
// Notation (per image plane, * is the zero-padded "same" Gaussian blur G):
//   m1 = G*x, m2 = G*y, e11 = G*(x x), e22 = G*(y y), e12 = G*(x y)
//   s1 = e11 - m1^2, s2 = e22 - m2^2, s12 = e12 - m1 m2
//   S  = (2 m1 m2 + C1)(2 s12 + C2) / ((m1^2 + m2^2 + C1)(s1 + s2 + C2))
// S is a pointwise function of the five blurred moments, so with g = dL/dS
//   dL/dx = G^T*(g dS/dm1) + 2 x G^T*(g dS/de11) + y G^T*(g dS/de12)
//   dL/dy = G^T*(g dS/dm2) + 2 y G^T*(g dS/de22) + x G^T*(g dS/de12)
// and dS/de22 = dS/de11 (both equal -S / (s1 + s2 + C2)). The Gaussian is symmetric and the
// blur zero-pads, so G^T is the same zero-padded blur: out-of-image pixels contribute nothing.
// The forward pass stores dS/dm1, dS/de11, dS/de12 (and dS/dm2 when y needs a gradient); the
// backward pass multiplies them by g, blurs the three (four) products and combines them.
// "valid" padding is the "same" result cropped by the window radius; in the backward pass g is
// zero outside the cropped region, which is exactly the adjoint of the crop.
//
// Layout: one block of 32x8 threads computes a 32-wide, (8 * ROWS)-tall tile of one plane. It
// stages the tile plus a RADIUS halo in shared memory. The horizontal pass gives each thread a
// run of H_RUN consecutive columns of one staged row (a register sliding window: 10 + H_RUN
// reads for H_RUN outputs); the vertical pass gives each thread ROWS consecutive rows of one
// column (10 + ROWS reads for ROWS outputs). Row strides are odd (43, 33 floats) so that the
// lanes of a warp, which walk down rows in the horizontal pass, hit distinct banks.
//
// This file has no PyTorch dependency: ext.cpp does the tensor checks and allocation and calls
// the launchers below with raw pointers and the current stream.

#include <cuda_runtime.h>

#include "ssim_kernels.h"

namespace fused_ssim {
namespace {

constexpr int BLOCK_X = 32;
constexpr int BLOCK_Y = 8;
constexpr int THREADS = BLOCK_X * BLOCK_Y;
constexpr int TILE_W = BLOCK_X;
constexpr int SM_W = TILE_W + 2 * RADIUS;  // staged columns
constexpr int SRC_STRIDE = SM_W + 1;       // odd row strides: conflict-free column walks
constexpr int HS_STRIDE = TILE_W + 1;
constexpr int H_RUN = 8;                   // columns per thread in the horizontal pass
constexpr int RUNS = TILE_W / H_RUN;
constexpr int FWD_ROWS = 4;                // rows per thread in the vertical pass
constexpr int BWD_ROWS = 3;                // (smaller: the backward stages four planes)

__device__ __forceinline__ bool inside(int r, int c, int h, int w) {
  return r >= 0 && r < h && c >= 0 && c < w;
}

// acc[j] += sum_k w[k] v[j + k] as the values v[t] stream by (t = 0 .. N + 2R - 1).
template <int N>
__device__ __forceinline__ void slide(float (&acc)[N], const Window& win, int t, float v) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int k = t - j;
    if (k >= 0 && k < WINDOW) acc[j] += win.w[k] * v;
  }
}

template <int ROWS, bool kStoreGrads, bool kGradY>
__global__ void __launch_bounds__(THREADS)
    ssim_forward_kernel(const float* __restrict__ x, const float* __restrict__ y, int H, int W,
                        Window win, float C1, float C2, int map_off, int Hm, int Wm,
                        float* __restrict__ ssim_map, float* __restrict__ d_m1,
                        float* __restrict__ d_e11, float* __restrict__ d_e12,
                        float* __restrict__ d_m2) {
  constexpr int TILE_H = BLOCK_Y * ROWS;
  constexpr int SM_H = TILE_H + 2 * RADIUS;
  __shared__ float sx[SM_H][SRC_STRIDE];
  __shared__ float sy[SM_H][SRC_STRIDE];
  __shared__ float hs[5][SM_H][HS_STRIDE];  // horizontal sums of x, y, xx, yy, xy

  const size_t plane = blockIdx.z;
  x += plane * H * W;
  y += plane * H * W;
  const int tid = threadIdx.y * BLOCK_X + threadIdx.x;
  const int row0 = blockIdx.y * TILE_H - RADIUS;
  const int col0 = blockIdx.x * TILE_W - RADIUS;

  // Stage the tile and its halo; zeros outside the image are the zero padding.
  for (int i = tid; i < SM_H * SM_W; i += THREADS) {
    const int rr = i / SM_W, cc = i % SM_W;
    const int r = row0 + rr, c = col0 + cc;
    const bool in = inside(r, c, H, W);
    sx[rr][cc] = in ? x[(size_t)r * W + c] : 0.f;
    sy[rr][cc] = in ? y[(size_t)r * W + c] : 0.f;
  }
  __syncthreads();

  // Horizontal pass over every staged row (halo rows included), H_RUN columns per thread.
  for (int i = tid; i < SM_H * RUNS; i += THREADS) {
    const int rr = i % SM_H, c0 = (i / SM_H) * H_RUN;
    float a[H_RUN] = {}, b[H_RUN] = {}, aa[H_RUN] = {}, bb[H_RUN] = {}, ab[H_RUN] = {};
#pragma unroll
    for (int t = 0; t < H_RUN + 2 * RADIUS; ++t) {
      const float u = sx[rr][c0 + t], v = sy[rr][c0 + t];
      slide(a, win, t, u);
      slide(b, win, t, v);
      slide(aa, win, t, u * u);
      slide(bb, win, t, v * v);
      slide(ab, win, t, u * v);
    }
#pragma unroll
    for (int j = 0; j < H_RUN; ++j) {
      hs[0][rr][c0 + j] = a[j];
      hs[1][rr][c0 + j] = b[j];
      hs[2][rr][c0 + j] = aa[j];
      hs[3][rr][c0 + j] = bb[j];
      hs[4][rr][c0 + j] = ab[j];
    }
  }
  __syncthreads();

  // Vertical pass: ROWS consecutive output rows of one column per thread.
  const int tx = threadIdx.x, r0 = threadIdx.y * ROWS;
  float m1[ROWS] = {}, m2[ROWS] = {}, e11[ROWS] = {}, e22[ROWS] = {}, e12[ROWS] = {};
#pragma unroll
  for (int t = 0; t < ROWS + 2 * RADIUS; ++t) {
    slide(m1, win, t, hs[0][r0 + t][tx]);
    slide(m2, win, t, hs[1][r0 + t][tx]);
    slide(e11, win, t, hs[2][r0 + t][tx]);
    slide(e22, win, t, hs[3][r0 + t][tx]);
    slide(e12, win, t, hs[4][r0 + t][tx]);
  }

  const int c = blockIdx.x * TILE_W + tx;
#pragma unroll
  for (int j = 0; j < ROWS; ++j) {
    const int r = blockIdx.y * TILE_H + r0 + j;
    if (r >= H || c >= W) continue;
    const float mu1 = m1[j], mu2 = m2[j];
    const float m1m1 = mu1 * mu1, m2m2 = mu2 * mu2, m1m2 = mu1 * mu2;
    const float s1 = e11[j] - m1m1, s2 = e22[j] - m2m2, s12 = e12[j] - m1m2;
    const float A1 = 2.f * m1m2 + C1, A2 = 2.f * s12 + C2;
    const float B1 = m1m1 + m2m2 + C1, B2 = s1 + s2 + C2;
    const float S = (A1 * A2) / (B1 * B2);

    const int mr = r - map_off, mc = c - map_off;
    if (inside(mr, mc, Hm, Wm)) ssim_map[plane * Hm * Wm + (size_t)mr * Wm + mc] = S;

    if (kStoreGrads) {
      // Partials of S with the variances held fixed ...
      const float D = B1 * B2;
      const float dS_dmu1 = 2.f * mu2 * A2 / D - 2.f * mu1 * S / B1;
      const float dS_dvar = -S / B2;  // dS/ds1 = dS/ds2
      const float dS_dcov = 2.f * A1 / D;
      // ... chained through s1 = e11 - m1^2 and s12 = e12 - m1 m2 to the blurred moments.
      const size_t o = plane * H * W + (size_t)r * W + c;
      d_m1[o] = dS_dmu1 - 2.f * mu1 * dS_dvar - mu2 * dS_dcov;
      d_e11[o] = dS_dvar;
      d_e12[o] = dS_dcov;
      if (kGradY) {
        const float dS_dmu2 = 2.f * mu1 * A2 / D - 2.f * mu2 * S / B1;
        d_m2[o] = dS_dmu2 - 2.f * mu2 * dS_dvar - mu1 * dS_dcov;
      }
    }
  }
}

// grad_map is either [planes, Hm, Wm] or, when uniform, a single value that holds everywhere
// (the gradient of a mean).
template <int ROWS, bool kGradY>
__global__ void __launch_bounds__(THREADS)
    ssim_backward_kernel(const float* __restrict__ x, const float* __restrict__ y, int H, int W,
                         Window win, int map_off, int Hm, int Wm,
                         const float* __restrict__ grad_map, bool uniform,
                         const float* __restrict__ d_m1, const float* __restrict__ d_e11,
                         const float* __restrict__ d_e12, const float* __restrict__ d_m2,
                         float* __restrict__ grad_x, float* __restrict__ grad_y) {
  constexpr int NQ = kGradY ? 4 : 3;  // g dS/dm1, g dS/de11, g dS/de12 (, g dS/dm2)
  constexpr int TILE_H = BLOCK_Y * ROWS;
  constexpr int SM_H = TILE_H + 2 * RADIUS;
  __shared__ float sp[NQ][SM_H][SRC_STRIDE];
  __shared__ float hs[NQ][SM_H][HS_STRIDE];

  const size_t plane = blockIdx.z;
  const size_t base = plane * H * W;
  if (!uniform) grad_map += plane * Hm * Wm;
  const float g_all = uniform ? grad_map[0] : 0.f;
  const int tid = threadIdx.y * BLOCK_X + threadIdx.x;
  const int row0 = blockIdx.y * TILE_H - RADIUS;
  const int col0 = blockIdx.x * TILE_W - RADIUS;

  // Stage g * dS/d(moment) with its halo. g is zero outside the image (zero padding) and,
  // for "valid", outside the cropped map.
  for (int i = tid; i < SM_H * SM_W; i += THREADS) {
    const int rr = i / SM_W, cc = i % SM_W;
    const int r = row0 + rr, c = col0 + cc;
    const int mr = r - map_off, mc = c - map_off;
    float p[NQ] = {};
    if (inside(r, c, H, W) && inside(mr, mc, Hm, Wm)) {
      const float g = uniform ? g_all : grad_map[(size_t)mr * Wm + mc];
      const size_t o = base + (size_t)r * W + c;
      p[0] = g * d_m1[o];
      p[1] = g * d_e11[o];
      p[2] = g * d_e12[o];
      if (kGradY) p[NQ - 1] = g * d_m2[o];
    }
#pragma unroll
    for (int q = 0; q < NQ; ++q) sp[q][rr][cc] = p[q];
  }
  __syncthreads();

  for (int i = tid; i < SM_H * RUNS; i += THREADS) {
    const int rr = i % SM_H, c0 = (i / SM_H) * H_RUN;
    float acc[NQ][H_RUN] = {};
#pragma unroll
    for (int t = 0; t < H_RUN + 2 * RADIUS; ++t) {
#pragma unroll
      for (int q = 0; q < NQ; ++q) slide(acc[q], win, t, sp[q][rr][c0 + t]);
    }
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
#pragma unroll
      for (int j = 0; j < H_RUN; ++j) hs[q][rr][c0 + j] = acc[q][j];
    }
  }
  __syncthreads();

  const int tx = threadIdx.x, r0 = threadIdx.y * ROWS;
  float acc[NQ][ROWS] = {};
#pragma unroll
  for (int t = 0; t < ROWS + 2 * RADIUS; ++t) {
#pragma unroll
    for (int q = 0; q < NQ; ++q) slide(acc[q], win, t, hs[q][r0 + t][tx]);
  }

  const int c = blockIdx.x * TILE_W + tx;
#pragma unroll
  for (int j = 0; j < ROWS; ++j) {
    const int r = blockIdx.y * TILE_H + r0 + j;
    if (r >= H || c >= W) continue;
    const size_t o = base + (size_t)r * W + c;
    const float xv = x[o], yv = y[o];
    grad_x[o] = acc[0][j] + 2.f * xv * acc[1][j] + yv * acc[2][j];
    if (kGradY) grad_y[o] = acc[NQ - 1][j] + 2.f * yv * acc[1][j] + xv * acc[2][j];
  }
}

dim3 grid_for(int planes, int H, int W, int rows) {
  const int tile_h = BLOCK_Y * rows;
  return dim3((W + TILE_W - 1) / TILE_W, (H + tile_h - 1) / tile_h, planes);
}

}  // namespace

cudaError_t launch_forward(const float* x, const float* y, int planes, int H, int W,
                           const Window& win, float C1, float C2, int map_off, int Hm, int Wm,
                           float* ssim_map, float* d_m1, float* d_e11, float* d_e12, float* d_m2,
                           cudaStream_t stream) {
  const dim3 grid = grid_for(planes, H, W, FWD_ROWS), block(BLOCK_X, BLOCK_Y);
  if (d_m1 == nullptr) {
    ssim_forward_kernel<FWD_ROWS, false, false><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, nullptr, nullptr, nullptr, nullptr);
  } else if (d_m2 == nullptr) {
    ssim_forward_kernel<FWD_ROWS, true, false><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, d_m1, d_e11, d_e12, nullptr);
  } else {
    ssim_forward_kernel<FWD_ROWS, true, true><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, d_m1, d_e11, d_e12, d_m2);
  }
  return cudaGetLastError();
}

cudaError_t launch_backward(const float* x, const float* y, int planes, int H, int W,
                            const Window& win, int map_off, int Hm, int Wm, const float* grad_map,
                            bool uniform, const float* d_m1, const float* d_e11,
                            const float* d_e12, const float* d_m2, float* grad_x, float* grad_y,
                            cudaStream_t stream) {
  const dim3 grid = grid_for(planes, H, W, BWD_ROWS), block(BLOCK_X, BLOCK_Y);
  if (grad_y == nullptr) {
    ssim_backward_kernel<BWD_ROWS, false><<<grid, block, 0, stream>>>(
        x, y, H, W, win, map_off, Hm, Wm, grad_map, uniform, d_m1, d_e11, d_e12, nullptr, grad_x,
        nullptr);
  } else {
    ssim_backward_kernel<BWD_ROWS, true><<<grid, block, 0, stream>>>(
        x, y, H, W, win, map_off, Hm, Wm, grad_map, uniform, d_m1, d_e11, d_e12, d_m2, grad_x,
        grad_y);
  }
  return cudaGetLastError();
}

}  // namespace fused_ssim
