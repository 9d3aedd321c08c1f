// CUDA implementations of layerprobe's operators: the shared bodies of ops_impl.h with a backend
// that launches the kernels of kernels.cu (raw pointers, the current stream). Compiled only when
// torch has CUDA; the schemas live in ops.cpp.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "kernels.h"
#include "ops_impl.h"

namespace layerprobe {
namespace {

struct CudaBackend {
  // A GPU wants big products: up to 64 MB of float logits per tile.
  static int64_t tile_rows(int64_t classes) { return std::max<int64_t>(1024, (int64_t{1} << 24) / classes); }

  static void reduce(const Tensor& logits, int64_t n0, int64_t N, const Tensor& labels, const Tensor& reference,
                     Tensor& row_loss, Tensor& row_correct, Tensor& row_agree, Tensor& row_worse) {
    const c10::cuda::CUDAGuard guard(logits.device());
    const auto stream = at::cuda::getCurrentCUDAStream().stream();
    const int64_t rows = logits.size(0), C = logits.size(1);
    if (logits.scalar_type() == at::kFloat) {
      cuda::head_reduce(logits.data_ptr<float>(), rows, C, n0, N, labels.data_ptr<int64_t>(),
                        reference.data_ptr<int64_t>(), row_loss.data_ptr<double>(), row_correct.data_ptr<int64_t>(),
                        row_agree.data_ptr<int64_t>(), row_worse.data_ptr<int64_t>(), stream);
    } else {
      cuda::head_reduce(logits.data_ptr<double>(), rows, C, n0, N, labels.data_ptr<int64_t>(),
                        reference.data_ptr<int64_t>(), row_loss.data_ptr<double>(), row_correct.data_ptr<int64_t>(),
                        row_agree.data_ptr<int64_t>(), row_worse.data_ptr<int64_t>(), stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void mix(const Tensor& z0, const Tensor& z1, const Tensor& alphas, bool relu, Tensor& out) {
    const c10::cuda::CUDAGuard guard(z0.device());
    const auto stream = at::cuda::getCurrentCUDAStream().stream();
    if (z0.scalar_type() == at::kFloat) {
      cuda::interp_mix(z0.data_ptr<float>(), z1.data_ptr<float>(), alphas.data_ptr<float>(), alphas.size(0),
                       z0.numel(), relu, out.data_ptr<float>(), stream);
    } else {
      cuda::interp_mix(z0.data_ptr<double>(), z1.data_ptr<double>(), alphas.data_ptr<double>(), alphas.size(0),
                       z0.numel(), relu, out.data_ptr<double>(), stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void add_noise(const Tensor& weight, Tensor& out, double sigma, uint64_t seed, uint32_t stream_id) {
    const c10::cuda::CUDAGuard guard(weight.device());
    const auto stream = at::cuda::getCurrentCUDAStream().stream();
    if (weight.scalar_type() == at::kFloat) {
      cuda::add_noise(weight.data_ptr<float>(), out.data_ptr<float>(), weight.size(0), weight.size(1), sigma, seed,
                      stream_id, stream);
    } else {
      cuda::add_noise(weight.data_ptr<double>(), out.data_ptr<double>(), weight.size(0), weight.size(1), sigma, seed,
                      stream_id, stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(layerprobe, CUDA, m) {
  m.impl("head_eval", &head_eval<CudaBackend>);
  m.impl("interp_unit", &interp_unit<CudaBackend>);
  m.impl("noisy_unit", &noisy_unit<CudaBackend>);
}

}  // namespace layerprobe
