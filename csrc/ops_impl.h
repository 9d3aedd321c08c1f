// The three operators, written once over a device "backend" that supplies the elementwise and
// reduction kernels; the matrix products are ATen calls (BLAS on the CPU, cuBLAS on CUDA). ops.cpp
// instantiates them with the CPU backend, ops_cuda.cpp with the CUDA one, so both devices share
// every shape check, the tiling and the order of the sums.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace layerprobe {

using at::Tensor;

inline void check_float(const Tensor& t, const char* op, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, " like the other inputs, got ",
                    t.scalar_type());
}

inline void check_linear(const char* op, const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                         const char* wname, const char* bname) {
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": ", wname, " must be 2-D (out, in), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(-1) == weight.size(1), op, ": x has ", x.size(-1), " features but ", wname, " expects ",
                    weight.size(1));
  TORCH_CHECK_VALUE(x.device() == weight.device(), op, ": x is on ", x.device(), " but ", wname, " on ",
                    weight.device());
  check_float(weight, op, wname, x.scalar_type());
  if (bias) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": ", bname, " must have shape (",
                      weight.size(0), "), got ", bias->sizes());
    TORCH_CHECK_VALUE(bias->device() == x.device(), op, ": ", bname, " is on ", bias->device(), ", x on ", x.device());
    check_float(*bias, op, bname, x.scalar_type());
  }
}

inline void check_input(const char* op, const Tensor& x, int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() == dim, op, ": the input must be ", dim, "-D, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                    ": inputs must be float32 or float64, got ", x.scalar_type());
}

// x @ weight.T (+ bias) into `out` (a contiguous (B, out) tensor).
inline void product_out(Tensor& out, const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  if (bias) {
    at::addmm_out(out, *bias, x, weight.t());
  } else {
    at::mm_out(out, x, weight.t());
  }
}

// ---------------------------------------------------------------------------------------------
// head_eval: per variant, correct / summed cross-entropy / agreement / worse of softmax(hidden W^T + b)
// ---------------------------------------------------------------------------------------------
// `worse` counts the inputs the reference got right (reference == label) and the variant wrong: with
// `correct` and the reference's own count it gives both discordant counts of the paired comparison.
// Logits exist only one tile at a time (Backend::tile_rows(C) rows). A tile is a run of whole
// variants when a variant's N rows fit, else a run of rows of one variant; the backend reduces a
// tile to per-row loss / correct / agree / worse, which are summed per variant in a fixed order, so
// the result does not depend on thread or block scheduling.
template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> head_eval(const Tensor& hidden, const Tensor& weight,
                                             const std::optional<Tensor>& bias, const Tensor& labels,
                                             const Tensor& reference) {
  const char* op = "layerprobe::head_eval";
  check_input(op, hidden, 3);
  check_linear(op, hidden, weight, bias, "weight", "bias");
  const int64_t V = hidden.size(0), N = hidden.size(1), F = hidden.size(2), C = weight.size(0);
  TORCH_CHECK_VALUE(C >= 1, op, ": the head needs at least one class");
  const auto check_index = [&](const Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == N, op, ": ", name, " must have shape (", N, "), got ", t.sizes());
    TORCH_CHECK_VALUE(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == hidden.device(), op, ": ", name, " is on ", t.device(), ", hidden on ",
                      hidden.device());
  };
  check_index(labels, "labels");
  check_index(reference, "reference");
  auto long_opts = hidden.options().dtype(at::kLong);
  Tensor correct = at::zeros({V}, long_opts), agree = at::zeros({V}, long_opts), worse = at::zeros({V}, long_opts);
  Tensor loss = at::zeros({V}, hidden.options().dtype(at::kDouble));
  if (V == 0 || N == 0) return {correct, loss, agree, worse};
  const auto [lo, hi] = at::aminmax(labels);
  const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
  TORCH_CHECK_VALUE(lo_v >= 0 && hi_v < C, op, ": labels must lie in [0, ", C, ") for a head of ", C,
                    " classes, got labels from ", lo_v, " to ", hi_v);

  const Tensor h = hidden.contiguous().view({V * N, F});
  const Tensor labels_c = labels.contiguous(), reference_c = reference.contiguous();
  const int64_t T = Backend::tile_rows(C);
  const int64_t tile = N <= T ? (T / N) * N : T;  // rows per tile
  Tensor logits = at::empty({tile, C}, hidden.options());
  Tensor row_loss = at::empty({tile}, hidden.options().dtype(at::kDouble));
  Tensor row_correct = at::empty({tile}, long_opts), row_agree = at::empty({tile}, long_opts);
  Tensor row_worse = at::empty({tile}, long_opts);
  if (N <= T) {
    const int64_t per = T / N;  // whole variants per tile
    for (int64_t v0 = 0; v0 < V; v0 += per) {
      const int64_t vt = std::min(per, V - v0), rows = vt * N;
      Tensor out = logits.narrow(0, 0, rows);
      product_out(out, h.narrow(0, v0 * N, rows), weight, bias);
      Backend::reduce(out, 0, N, labels_c, reference_c, row_loss, row_correct, row_agree, row_worse);
      loss.narrow(0, v0, vt).add_(row_loss.narrow(0, 0, rows).view({vt, N}).sum(1));
      correct.narrow(0, v0, vt).add_(row_correct.narrow(0, 0, rows).view({vt, N}).sum(1));
      agree.narrow(0, v0, vt).add_(row_agree.narrow(0, 0, rows).view({vt, N}).sum(1));
      worse.narrow(0, v0, vt).add_(row_worse.narrow(0, 0, rows).view({vt, N}).sum(1));
    }
  } else {
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t n0 = 0; n0 < N; n0 += T) {
        const int64_t rows = std::min(T, N - n0);
        Tensor out = logits.narrow(0, 0, rows);
        product_out(out, h.narrow(0, v * N + n0, rows), weight, bias);
        Backend::reduce(out, n0, N, labels_c, reference_c, row_loss, row_correct, row_agree, row_worse);
        loss.narrow(0, v, 1).add_(row_loss.narrow(0, 0, rows).sum());
        correct.narrow(0, v, 1).add_(row_correct.narrow(0, 0, rows).sum());
        agree.narrow(0, v, 1).add_(row_agree.narrow(0, 0, rows).sum());
        worse.narrow(0, v, 1).add_(row_worse.narrow(0, 0, rows).sum());
      }
    }
  }
  return {correct, loss, agree, worse};
}

// ---------------------------------------------------------------------------------------------
// interp_unit: act(z0 + α_k (z1 − z0)) with z_i = x W_iᵀ + b_i: two products for all K α
// ---------------------------------------------------------------------------------------------
template <class Backend>
Tensor interp_unit(const Tensor& x, const Tensor& weight0, const std::optional<Tensor>& bias0, const Tensor& weight1,
                   const std::optional<Tensor>& bias1, const Tensor& alphas, c10::string_view activation) {
  const char* op = "layerprobe::interp_unit";
  check_input(op, x, 2);
  check_linear(op, x, weight0, bias0, "weight0", "bias0");
  check_linear(op, x, weight1, bias1, "weight1", "bias1");
  TORCH_CHECK_VALUE(weight0.sizes() == weight1.sizes(), op, ": weight0 ", weight0.sizes(), " and weight1 ",
                    weight1.sizes(), " differ in shape");
  TORCH_CHECK_VALUE(bias0.has_value() == bias1.has_value(), op, ": give both biases or neither");
  TORCH_CHECK_VALUE(alphas.dim() == 1, op, ": alphas must be 1-D (K), got shape ", alphas.sizes());
  TORCH_CHECK_VALUE(activation == "none" || activation == "relu", op, ": activation must be 'none' or 'relu', got '",
                    std::string(activation), "'");
  const int64_t K = alphas.size(0), B = x.size(0), O = weight0.size(0);
  const Tensor xc = x.contiguous();
  Tensor z0 = at::empty({B, O}, x.options()), z1 = at::empty({B, O}, x.options());
  product_out(z0, xc, weight0, bias0);
  product_out(z1, xc, weight1, bias1);
  Tensor out = at::empty({K, B, O}, x.options());
  if (K == 0 || B == 0 || O == 0) return out;
  Backend::mix(z0, z1, alphas.to(x.device(), x.scalar_type()).contiguous(), activation == "relu", out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// noisy_unit: x (W + σ_k E_k)ᵀ + b, E_k drawn inside from Philox keyed by (seeds[k], stream, row, col)
// ---------------------------------------------------------------------------------------------
// One perturbed weight exists at a time, so memory does not grow with K.
template <class Backend>
Tensor noisy_unit(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, const Tensor& sigmas,
                  const Tensor& seeds, int64_t stream) {
  const char* op = "layerprobe::noisy_unit";
  check_input(op, x, 2);
  check_linear(op, x, weight, bias, "weight", "bias");
  TORCH_CHECK_VALUE(sigmas.dim() == 1, op, ": sigmas must be 1-D (K), got shape ", sigmas.sizes());
  TORCH_CHECK_VALUE(seeds.dim() == 1 && seeds.size(0) == sigmas.size(0), op, ": seeds must have shape (",
                    sigmas.size(0), "), one per σ, got ", seeds.sizes());
  TORCH_CHECK_VALUE(seeds.scalar_type() == at::kLong, op, ": seeds must be int64, got ", seeds.scalar_type());
  TORCH_CHECK_VALUE(stream >= 0 && stream <= 0xffffffffLL, op, ": stream must fit 32 bits, got ", stream);
  TORCH_CHECK_VALUE(weight.size(0) <= 0xffffffffLL && weight.size(1) <= 0xffffffffLL, op,
                    ": the weight is too large for the 32-bit row and column counters");
  const int64_t K = sigmas.size(0), B = x.size(0), O = weight.size(0);
  const Tensor xc = x.contiguous(), wc = weight.contiguous();
  const Tensor sig = sigmas.to(at::kCPU, at::kDouble).contiguous(), sd = seeds.to(at::kCPU).contiguous();
  Tensor out = at::empty({K, B, O}, x.options());
  Tensor perturbed = at::empty_like(wc);
  for (int64_t k = 0; k < K; ++k) {
    Backend::add_noise(wc, perturbed, sig.data_ptr<double>()[k], static_cast<uint64_t>(sd.data_ptr<int64_t>()[k]),
                       static_cast<uint32_t>(stream));
    Tensor slot = out.select(0, k);
    product_out(slot, xc, perturbed, bias);
  }
  return out;
}

}  // namespace layerprobe
