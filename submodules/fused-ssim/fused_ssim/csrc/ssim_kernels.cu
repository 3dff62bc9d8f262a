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
// Layout: one thread block computes a TILE_H x TILE_W tile of one plane. It stages the tile
// plus a RADIUS halo in shared memory, runs the horizontal 11-tap pass over all halo rows into
// shared memory, then each thread runs the vertical pass for its own output pixel.
//
// This file has no PyTorch dependency: ext.cpp does the tensor checks and allocation and calls
// the launchers below with raw pointers and the current stream.

#include <cuda_runtime.h>

#include "ssim_kernels.h"

namespace fused_ssim {
namespace {

constexpr int TILE_W = 32;
constexpr int TILE_H = 16;
constexpr int THREADS = TILE_W * TILE_H;
constexpr int SM_W = TILE_W + 2 * RADIUS;  // staged columns
constexpr int SM_H = TILE_H + 2 * RADIUS;  // staged rows

__device__ __forceinline__ bool inside(int r, int c, int h, int w) {
  return r >= 0 && r < h && c >= 0 && c < w;
}

template <bool kStoreGrads, bool kGradY>
__global__ void __launch_bounds__(THREADS)
    ssim_forward_kernel(const float* __restrict__ x, const float* __restrict__ y, int H, int W,
                        Window win, float C1, float C2, int map_off, int Hm, int Wm,
                        float* __restrict__ ssim_map, float* __restrict__ d_m1,
                        float* __restrict__ d_e11, float* __restrict__ d_e12,
                        float* __restrict__ d_m2) {
  __shared__ float sx[SM_H][SM_W];
  __shared__ float sy[SM_H][SM_W];
  __shared__ float hs[5][SM_H][TILE_W];  // horizontal sums of x, y, xx, yy, xy

  const size_t plane = blockIdx.z;
  x += plane * H * W;
  y += plane * H * W;
  const int tid = threadIdx.y * TILE_W + threadIdx.x;
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

  // Horizontal pass over every staged row (halo rows included) for the tile's columns.
  for (int i = tid; i < SM_H * TILE_W; i += THREADS) {
    const int rr = i / TILE_W, cc = i % TILE_W;
    float a = 0.f, b = 0.f, aa = 0.f, bb = 0.f, ab = 0.f;
#pragma unroll
    for (int k = 0; k < WINDOW; ++k) {
      const float wk = win.w[k];
      const float u = sx[rr][cc + k], v = sy[rr][cc + k];
      a += wk * u;
      b += wk * v;
      aa += wk * (u * u);
      bb += wk * (v * v);
      ab += wk * (u * v);
    }
    hs[0][rr][cc] = a;
    hs[1][rr][cc] = b;
    hs[2][rr][cc] = aa;
    hs[3][rr][cc] = bb;
    hs[4][rr][cc] = ab;
  }
  __syncthreads();

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int r = blockIdx.y * TILE_H + ty, c = blockIdx.x * TILE_W + tx;
  if (r >= H || c >= W) return;

  // Vertical pass for this thread's pixel.
  float m1 = 0.f, m2 = 0.f, e11 = 0.f, e22 = 0.f, e12 = 0.f;
#pragma unroll
  for (int k = 0; k < WINDOW; ++k) {
    const float wk = win.w[k];
    m1 += wk * hs[0][ty + k][tx];
    m2 += wk * hs[1][ty + k][tx];
    e11 += wk * hs[2][ty + k][tx];
    e22 += wk * hs[3][ty + k][tx];
    e12 += wk * hs[4][ty + k][tx];
  }

  const float m1m1 = m1 * m1, m2m2 = m2 * m2, m1m2 = m1 * m2;
  const float s1 = e11 - m1m1, s2 = e22 - m2m2, s12 = e12 - m1m2;
  const float A1 = 2.f * m1m2 + C1, A2 = 2.f * s12 + C2;
  const float B1 = m1m1 + m2m2 + C1, B2 = s1 + s2 + C2;
  const float S = (A1 * A2) / (B1 * B2);

  const int mr = r - map_off, mc = c - map_off;
  if (inside(mr, mc, Hm, Wm)) ssim_map[plane * Hm * Wm + (size_t)mr * Wm + mc] = S;

  if (kStoreGrads) {
    // Partials of S with the variances held fixed ...
    const float D = B1 * B2;
    const float dS_dmu1 = 2.f * m2 * A2 / D - 2.f * m1 * S / B1;
    const float dS_dvar = -S / B2;  // dS/ds1 = dS/ds2
    const float dS_dcov = 2.f * A1 / D;
    // ... chained through s1 = e11 - m1^2 and s12 = e12 - m1 m2 to the blurred moments.
    const size_t o = plane * H * W + (size_t)r * W + c;
    d_m1[o] = dS_dmu1 - 2.f * m1 * dS_dvar - m2 * dS_dcov;
    d_e11[o] = dS_dvar;
    d_e12[o] = dS_dcov;
    if (kGradY) {
      const float dS_dmu2 = 2.f * m1 * A2 / D - 2.f * m2 * S / B1;
      d_m2[o] = dS_dmu2 - 2.f * m2 * dS_dvar - m1 * dS_dcov;
    }
  }
}

template <bool kGradY>
__global__ void __launch_bounds__(THREADS)
    ssim_backward_kernel(const float* __restrict__ x, const float* __restrict__ y, int H, int W,
                         Window win, int map_off, int Hm, int Wm,
                         const float* __restrict__ grad_map, const float* __restrict__ d_m1,
                         const float* __restrict__ d_e11, const float* __restrict__ d_e12,
                         const float* __restrict__ d_m2, float* __restrict__ grad_x,
                         float* __restrict__ grad_y) {
  constexpr int NQ = kGradY ? 4 : 3;  // g dS/dm1, g dS/de11, g dS/de12 (, g dS/dm2)
  __shared__ float sp[NQ][SM_H][SM_W];
  __shared__ float hs[NQ][SM_H][TILE_W];

  const size_t plane = blockIdx.z;
  const size_t base = plane * H * W;
  grad_map += plane * Hm * Wm;
  const int tid = threadIdx.y * TILE_W + threadIdx.x;
  const int row0 = blockIdx.y * TILE_H - RADIUS;
  const int col0 = blockIdx.x * TILE_W - RADIUS;

  // Stage g * dS/d(moment) with its halo. g is zero outside the image (zero padding) and,
  // for "valid", outside the cropped map.
  for (int i = tid; i < SM_H * SM_W; i += THREADS) {
    const int rr = i / SM_W, cc = i % SM_W;
    const int r = row0 + rr, c = col0 + cc;
    const int mr = r - map_off, mc = c - map_off;
    float p[NQ];
#pragma unroll
    for (int q = 0; q < NQ; ++q) p[q] = 0.f;
    if (inside(r, c, H, W) && inside(mr, mc, Hm, Wm)) {
      const float g = grad_map[(size_t)mr * Wm + mc];
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

  for (int i = tid; i < SM_H * TILE_W; i += THREADS) {
    const int rr = i / TILE_W, cc = i % TILE_W;
    float acc[NQ];
#pragma unroll
    for (int q = 0; q < NQ; ++q) acc[q] = 0.f;
#pragma unroll
    for (int k = 0; k < WINDOW; ++k) {
      const float wk = win.w[k];
#pragma unroll
      for (int q = 0; q < NQ; ++q) acc[q] += wk * sp[q][rr][cc + k];
    }
#pragma unroll
    for (int q = 0; q < NQ; ++q) hs[q][rr][cc] = acc[q];
  }
  __syncthreads();

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int r = blockIdx.y * TILE_H + ty, c = blockIdx.x * TILE_W + tx;
  if (r >= H || c >= W) return;

  float acc[NQ];
#pragma unroll
  for (int q = 0; q < NQ; ++q) acc[q] = 0.f;
#pragma unroll
  for (int k = 0; k < WINDOW; ++k) {
    const float wk = win.w[k];
#pragma unroll
    for (int q = 0; q < NQ; ++q) acc[q] += wk * hs[q][ty + k][tx];
  }

  const size_t o = base + (size_t)r * W + c;
  const float xv = x[o], yv = y[o];
  grad_x[o] = acc[0] + 2.f * xv * acc[1] + yv * acc[2];
  if (kGradY) grad_y[o] = acc[NQ - 1] + 2.f * yv * acc[1] + xv * acc[2];
}

dim3 grid_for(int planes, int H, int W) {
  return dim3((W + TILE_W - 1) / TILE_W, (H + TILE_H - 1) / TILE_H, planes);
}

}  // namespace

cudaError_t launch_forward(const float* x, const float* y, int planes, int H, int W,
                           const Window& win, float C1, float C2, int map_off, int Hm, int Wm,
                           float* ssim_map, float* d_m1, float* d_e11, float* d_e12, float* d_m2,
                           cudaStream_t stream) {
  const dim3 grid = grid_for(planes, H, W), block(TILE_W, TILE_H);
  if (d_m1 == nullptr) {
    ssim_forward_kernel<false, false><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, nullptr, nullptr, nullptr, nullptr);
  } else if (d_m2 == nullptr) {
    ssim_forward_kernel<true, false><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, d_m1, d_e11, d_e12, nullptr);
  } else {
    ssim_forward_kernel<true, true><<<grid, block, 0, stream>>>(
        x, y, H, W, win, C1, C2, map_off, Hm, Wm, ssim_map, d_m1, d_e11, d_e12, d_m2);
  }
  return cudaGetLastError();
}

cudaError_t launch_backward(const float* x, const float* y, int planes, int H, int W,
                            const Window& win, int map_off, int Hm, int Wm, const float* grad_map,
                            const float* d_m1, const float* d_e11, const float* d_e12,
                            const float* d_m2, float* grad_x, float* grad_y,
                            cudaStream_t stream) {
  const dim3 grid = grid_for(planes, H, W), block(TILE_W, TILE_H);
  if (grad_y == nullptr) {
    ssim_backward_kernel<false><<<grid, block, 0, stream>>>(x, y, H, W, win, map_off, Hm, Wm,
                                                            grad_map, d_m1, d_e11, d_e12, nullptr,
                                                            grad_x, nullptr);
  } else {
    ssim_backward_kernel<true><<<grid, block, 0, stream>>>(x, y, H, W, win, map_off, Hm, Wm,
                                                           grad_map, d_m1, d_e11, d_e12, d_m2,
                                                           grad_x, grad_y);
  }
  return cudaGetLastError();
}

}  // namespace fused_ssim
