// layerprobe's fused operators: schemas (TORCH_LIBRARY) and CPU kernels. Loaded as a plain shared
// library with torch.ops.load_library; layerprobe/ops.py holds the Python face, the fake (meta)
// kernels and a pure-PyTorch reference of every operator.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "ops_impl.h"
#include "philox.h"

namespace layerprobe {
namespace {

constexpr int64_t kVectorLseClasses = 64;

struct CpuBackend {
  // About 1 MB of logits per tile: the tile stays in cache between the product and the reduction.
  static int64_t tile_rows(int64_t classes) { return std::max<int64_t>(64, (1 << 18) / classes); }

  // Per row: argmax (first maximal index, NaN counting as maximal, as torch.argmax), the
  // cross-entropy in double (log-sum-exp), whether the prediction is right / agrees, and whether it
  // is wrong where the reference is right (worse).
  static void reduce(const Tensor& logits, int64_t n0, int64_t N, const Tensor& labels, const Tensor& reference,
                     Tensor& row_loss, Tensor& row_correct, Tensor& row_agree, Tensor& row_worse) {
    const int64_t rows = logits.size(0), C = logits.size(1);
    const int64_t* y = labels.data_ptr<int64_t>();
    const int64_t* ref = reference.data_ptr<int64_t>();
    double* loss = row_loss.data_ptr<double>();
    int64_t* correct = row_correct.data_ptr<int64_t>();
    int64_t* agree = row_agree.data_ptr<int64_t>();
    int64_t* worse = row_worse.data_ptr<int64_t>();
    // With many classes the exponentials dominate: ATen's vectorized log-sum-exp (in double, as the
    // scalar loop) is several times faster than std::exp one value at a time.
    Tensor lse;
    if (C >= kVectorLseClasses) lse = at::logsumexp(logits.to(at::kDouble), 1);
    const double* lse_p = lse.defined() ? lse.data_ptr<double>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "head_eval_reduce", [&] {
      const scalar_t* z = logits.data_ptr<scalar_t>();
      at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* row = z + r * C;
          int64_t best = 0;
          scalar_t top = row[0];
          for (int64_t c = 1; c < C; ++c) {
            const scalar_t v = row[c];
            if (v > top || (std::isnan(v) && !std::isnan(top))) {
              top = v;
              best = c;
            }
          }
          const int64_t n = (n0 + r) % N;
          double log_sum_exp;
          if (lse_p) {
            log_sum_exp = lse_p[r];
          } else {
            const double m = static_cast<double>(top);
            double sum = 0.0;
            for (int64_t c = 0; c < C; ++c) sum += std::exp(static_cast<double>(row[c]) - m);
            log_sum_exp = std::log(sum) + m;
          }
          loss[r] = log_sum_exp - static_cast<double>(row[y[n]]);
          correct[r] = best == y[n];
          agree[r] = best == ref[n];
          worse[r] = ref[n] == y[n] && best != y[n];
        }
      });
    });
  }

  static void mix(const Tensor& z0, const Tensor& z1, const Tensor& alphas, bool relu, Tensor& out) {
    const int64_t K = alphas.size(0), M = z0.numel();
    AT_DISPATCH_FLOATING_TYPES(z0.scalar_type(), "interp_unit_mix", [&] {
      const scalar_t* a = z0.data_ptr<scalar_t>();
      const scalar_t* b = z1.data_ptr<scalar_t>();
      const scalar_t* alpha = alphas.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      at::parallel_for(0, K * M, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t k = i / M, j = i - k * M;
          const scalar_t v = a[j] + alpha[k] * (b[j] - a[j]);
          o[i] = relu ? (v > scalar_t(0) ? v : (std::isnan(v) ? v : scalar_t(0))) : v;
        }
      });
    });
  }

  static void add_noise(const Tensor& weight, Tensor& out, double sigma, uint64_t seed, uint32_t stream) {
    const int64_t rows = weight.size(0), cols = weight.size(1), pairs = (cols + 1) / 2;
    AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "noisy_unit_noise", [&] {
      const scalar_t* w = weight.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      const scalar_t s = static_cast<scalar_t>(sigma);
      at::parallel_for(0, rows * pairs, 1024, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t r = i / pairs, p = i - r * pairs, c = 2 * p;
          double even, odd;
          normal_pair(seed, stream, static_cast<uint32_t>(r), static_cast<uint32_t>(p), &even, &odd);
          o[r * cols + c] = w[r * cols + c] + s * static_cast<scalar_t>(even);
          if (c + 1 < cols) o[r * cols + c + 1] = w[r * cols + c + 1] + s * static_cast<scalar_t>(odd);
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY(layerprobe, m) {
  m.def("head_eval(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, Tensor reference) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("interp_unit(Tensor x, Tensor weight0, Tensor? bias0, Tensor weight1, Tensor? bias1, Tensor alphas, str activation) -> Tensor");
  m.def("noisy_unit(Tensor x, Tensor weight, Tensor? bias, Tensor sigmas, Tensor seeds, int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(layerprobe, CPU, m) {
  m.impl("head_eval", &head_eval<CpuBackend>);
  m.impl("interp_unit", &interp_unit<CpuBackend>);
  m.impl("noisy_unit", &noisy_unit<CpuBackend>);
}

}  // namespace layerprobe
