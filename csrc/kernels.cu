// CUDA kernels of layerprobe's operators (see kernels.h). Raw pointers only, no torch headers.
#include "kernels.h"
#include "philox.h"

namespace layerprobe {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ bool better(T v, int64_t i, T best, int64_t at) {
  // torch.argmax: NaN counts as the maximum; among equals the first index wins.
  const bool vnan = isnan(v), bnan = isnan(best);
  if (vnan || bnan) return vnan && (!bnan || i < at);
  return v > best || (v == best && i < at);
}

// One warp per row: the lanes stride over the classes (coalesced), then combine by shuffles.
template <typename T>
__global__ void head_reduce_kernel(const T* logits, int64_t rows, int64_t C, int64_t n0, int64_t N,
                                   const int64_t* labels, const int64_t* reference, double* loss, int64_t* correct,
                                   int64_t* agree, int64_t* worse) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const T* row = logits + r * C;
  T best = row[0];
  int64_t at = 0;
  for (int64_t c = lane; c < C; c += 32) {
    if (better(row[c], c, best, at)) {
      best = row[c];
      at = c;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T other = __shfl_down_sync(0xffffffffu, best, offset);
    const int64_t other_at = __shfl_down_sync(0xffffffffu, at, offset);
    if (better(other, other_at, best, at)) {
      best = other;
      at = other_at;
    }
  }
  best = __shfl_sync(0xffffffffu, best, 0);
  at = __shfl_sync(0xffffffffu, at, 0);
  const double m = static_cast<double>(best);
  double sum = 0.0;
  for (int64_t c = lane; c < C; c += 32) sum += exp(static_cast<double>(row[c]) - m);
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) {
    const int64_t n = (n0 + r) % N;
    loss[r] = log(sum) + m - static_cast<double>(row[labels[n]]);
    correct[r] = at == labels[n];
    agree[r] = at == reference[n];
    worse[r] = reference[n] == labels[n] && at != labels[n];
  }
}

// Explicitly rounded arithmetic: nvcc would contract a + b·c into a fused multiply-add, which the
// CPU kernels (and the PyTorch path) do not do, and one rounding less can flip a near-tied result.
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename T>
__global__ void interp_mix_kernel(const T* z0, const T* z1, const T* alphas, int64_t K, int64_t M, bool relu, T* out) {
  const int64_t total = K * M;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / M, j = i - k * M;
    const T v = add_rn(z0[j], mul_rn(alphas[k], z1[j] - z0[j]));
    out[i] = relu ? (v > T(0) || isnan(v) ? v : T(0)) : v;
  }
}

template <typename T>
__global__ void add_noise_kernel(const T* weight, T* out, int64_t rows, int64_t cols, double sigma, uint64_t seed,
                                 uint32_t stream_id) {
  const int64_t pairs = (cols + 1) / 2, total = rows * pairs;
  const T s = static_cast<T>(sigma);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / pairs, p = i - r * pairs, c = 2 * p;
    double even, odd;
    normal_pair(seed, stream_id, static_cast<uint32_t>(r), static_cast<uint32_t>(p), &even, &odd);
    out[r * cols + c] = add_rn(weight[r * cols + c], mul_rn(s, static_cast<T>(even)));
    if (c + 1 < cols) out[r * cols + c + 1] = add_rn(weight[r * cols + c + 1], mul_rn(s, static_cast<T>(odd)));
  }
}

unsigned int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

#define LP_HEAD(T)                                                                                                 \
  void head_reduce(const T* logits, int64_t rows, int64_t C, int64_t n0, int64_t N, const int64_t* labels,         \
                   const int64_t* reference, double* loss, int64_t* correct, int64_t* agree, int64_t* worse,       \
                   cudaStream_t stream) {                                                                          \
    const unsigned int blocks = static_cast<unsigned int>((rows + kWarps - 1) / kWarps);                           \
    if (blocks) head_reduce_kernel<T><<<blocks, kThreads, 0, stream>>>(logits, rows, C, n0, N, labels, reference,  \
                                                                       loss, correct, agree, worse);               \
  }                                                                                                                \
  void interp_mix(const T* z0, const T* z1, const T* alphas, int64_t K, int64_t M, bool relu, T* out,              \
                  cudaStream_t stream) {                                                                           \
    interp_mix_kernel<T><<<blocks_for(K * M), kThreads, 0, stream>>>(z0, z1, alphas, K, M, relu, out);             \
  }                                                                                                                \
  void add_noise(const T* weight, T* out, int64_t rows, int64_t cols, double sigma, uint64_t seed,                 \
                 uint32_t stream_id, cudaStream_t stream) {                                                        \
    add_noise_kernel<T><<<blocks_for(rows * ((cols + 1) / 2)), kThreads, 0, stream>>>(weight, out, rows, cols,     \
                                                                                      sigma, seed, stream_id);     \
  }

LP_HEAD(float)
LP_HEAD(double)
#undef LP_HEAD

}  // namespace cuda
}  // namespace layerprobe
