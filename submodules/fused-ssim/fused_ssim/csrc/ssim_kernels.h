// Launchers of the fused SSIM kernels (raw pointers, no PyTorch types).
#pragma once

#include <cuda_runtime.h>

namespace fused_ssim {

constexpr int RADIUS = 5;               // 11-tap window
constexpr int WINDOW = 2 * RADIUS + 1;

// The normalized 1D Gaussian, passed by value so it lands in the kernel parameter bank.
struct Window {
  float w[WINDOW];
};

// x, y: [planes, H, W] contiguous. ssim_map: [planes, Hm, Wm], pixel (r, c) of the image is
// map pixel (r - map_off, c - map_off) ("same": map_off 0, Hm = H; "valid": map_off RADIUS).
// d_m1, d_e11, d_e12, d_m2: [planes, H, W] or nullptr (d_m1 == nullptr: store no derivatives;
// d_m2 == nullptr: no derivative for the gradient of y).
cudaError_t launch_forward(const float* x, const float* y, int planes, int H, int W,
                           const Window& win, float C1, float C2, int map_off, int Hm, int Wm,
                           float* ssim_map, float* d_m1, float* d_e11, float* d_e12, float* d_m2,
                           cudaStream_t stream);

// grad_map: [planes, Hm, Wm] = dL/dSSIM-map, or with uniform one value for every pixel (the
// gradient of a mean, without materializing it). grad_y == nullptr: only dL/dx.
cudaError_t launch_backward(const float* x, const float* y, int planes, int H, int W,
                            const Window& win, int map_off, int Hm, int Wm, const float* grad_map,
                            bool uniform, const float* d_m1, const float* d_e11, const float* d_e12,
                            const float* d_m2, float* grad_x, float* grad_y, cudaStream_t stream);

}  // namespace fused_ssim
