// PyTorch bindings of the fused SSIM kernels: argument checks, allocation, stream.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <vector>

#include "ssim_kernels.h"

namespace {

void check_image(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(t.dim() == 4, name, " must be [B, C, H, W]");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

fused_ssim::Window make_window(const std::vector<double>& taps) {
  TORCH_CHECK(taps.size() == fused_ssim::WINDOW, "the window must have ", fused_ssim::WINDOW,
              " taps, got ", taps.size());
  fused_ssim::Window win;
  for (int k = 0; k < fused_ssim::WINDOW; ++k) win.w[k] = static_cast<float>(taps[k]);
  return win;
}

const float* ptr_or_null(const torch::Tensor& t) {
  return t.numel() ? t.data_ptr<float>() : nullptr;
}

}  // namespace

// Returns {ssim_map, d_m1, d_e11, d_e12, d_m2}; the derivative maps are empty tensors unless
// store_grads (d_m2 also needs grad_y).
std::vector<torch::Tensor> ssim_forward(const torch::Tensor& x, const torch::Tensor& y,
                                        const std::vector<double>& taps, double C1, double C2,
                                        bool valid, bool store_grads, bool grad_y) {
  check_image(x, "img1");
  check_image(y, "img2");
  TORCH_CHECK(x.sizes() == y.sizes(), "img1 and img2 must have the same shape");
  TORCH_CHECK(x.device() == y.device(), "img1 and img2 must be on the same device");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int off = valid ? fused_ssim::RADIUS : 0;
  const int64_t Hm = H - 2 * off, Wm = W - 2 * off;
  TORCH_CHECK(Hm > 0 && Wm > 0, "valid SSIM needs images of at least ", fused_ssim::WINDOW,
              "x", fused_ssim::WINDOW, " pixels");
  TORCH_CHECK(B * C <= 65535, "at most 65535 image planes (B*C) per call");
  const auto win = make_window(taps);

  auto ssim_map = torch::empty({B, C, Hm, Wm}, x.options());
  auto none = torch::empty({0}, x.options());
  auto d_m1 = store_grads ? torch::empty_like(x) : none;
  auto d_e11 = store_grads ? torch::empty_like(x) : none;
  auto d_e12 = store_grads ? torch::empty_like(x) : none;
  auto d_m2 = store_grads && grad_y ? torch::empty_like(x) : none;
  if (x.numel() == 0) return {ssim_map, d_m1, d_e11, d_e12, d_m2};

  const cudaError_t err = fused_ssim::launch_forward(
      x.data_ptr<float>(), y.data_ptr<float>(), static_cast<int>(B * C), static_cast<int>(H),
      static_cast<int>(W), win, static_cast<float>(C1), static_cast<float>(C2), off,
      static_cast<int>(Hm), static_cast<int>(Wm), ssim_map.data_ptr<float>(),
      store_grads ? d_m1.data_ptr<float>() : nullptr,
      store_grads ? d_e11.data_ptr<float>() : nullptr,
      store_grads ? d_e12.data_ptr<float>() : nullptr,
      store_grads && grad_y ? d_m2.data_ptr<float>() : nullptr,
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fused SSIM forward failed: ", cudaGetErrorString(err));
  return {ssim_map, d_m1, d_e11, d_e12, d_m2};
}

// Returns {grad_x, grad_y}; grad_y is an empty tensor when d_m2 is empty.
std::vector<torch::Tensor> ssim_backward(const torch::Tensor& x, const torch::Tensor& y,
                                         const std::vector<double>& taps, bool valid,
                                         const torch::Tensor& grad_map, const torch::Tensor& d_m1,
                                         const torch::Tensor& d_e11, const torch::Tensor& d_e12,
                                         const torch::Tensor& d_m2) {
  check_image(x, "img1");
  check_image(y, "img2");
  // grad_map is contiguous, or one value broadcast to the map's shape (stride 0 along every
  // dimension longer than 1).
  TORCH_CHECK(grad_map.is_cuda() && grad_map.scalar_type() == torch::kFloat32 &&
                  grad_map.dim() == 4,
              "grad_map must be a float32 CUDA tensor [B, C, H', W']");
  bool uniform = true;
  for (int64_t d = 0; d < grad_map.dim(); ++d) {
    uniform = uniform && (grad_map.size(d) == 1 || grad_map.stride(d) == 0);
  }
  TORCH_CHECK(uniform || grad_map.is_contiguous(), "grad_map must be contiguous or uniform");
  for (const auto* t : {&d_m1, &d_e11, &d_e12}) check_image(*t, "saved derivative map");
  const bool grad_y = d_m2.numel() > 0;
  if (grad_y) check_image(d_m2, "saved derivative map");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int off = valid ? fused_ssim::RADIUS : 0;
  TORCH_CHECK(grad_map.size(0) == B && grad_map.size(1) == C && grad_map.size(2) == H - 2 * off &&
                  grad_map.size(3) == W - 2 * off,
              "grad_map has the wrong shape");
  const auto win = make_window(taps);

  auto grad_x = torch::empty_like(x);
  auto grad_y_t = grad_y ? torch::empty_like(y) : torch::empty({0}, y.options());
  if (x.numel() == 0) return {grad_x, grad_y_t};

  const cudaError_t err = fused_ssim::launch_backward(
      x.data_ptr<float>(), y.data_ptr<float>(), static_cast<int>(B * C), static_cast<int>(H),
      static_cast<int>(W), win, off, static_cast<int>(H - 2 * off), static_cast<int>(W - 2 * off),
      grad_map.data_ptr<float>(), uniform, d_m1.data_ptr<float>(), d_e11.data_ptr<float>(),
      d_e12.data_ptr<float>(), ptr_or_null(d_m2), grad_x.data_ptr<float>(),
      grad_y ? grad_y_t.data_ptr<float>() : nullptr, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fused SSIM backward failed: ", cudaGetErrorString(err));
  return {grad_x, grad_y_t};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused SSIM (11x11 Gaussian window, zero padding) forward and backward on CUDA";
  m.def("forward", &ssim_forward, "SSIM map and the derivative maps for the backward pass");
  m.def("backward", &ssim_backward, "dL/dimg1 (and dL/dimg2) from dL/dSSIM-map");
}
