// CUDA kernels of layerprobe's operators on raw pointers, launched on a given stream. No torch
// headers: `nvcc -c kernels.cu` compiles without a CUDA build of torch. ops_cuda.cpp calls these.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace layerprobe {
namespace cuda {

// Per row r of a (rows, C) logits tile: loss[r] (cross-entropy in double), correct[r] and agree[r]
// (0/1) against labels / reference at input n = (n0 + r) % N, and worse[r] (1 where the reference is
// right and the prediction wrong). Argmax ties go to the first index.
void head_reduce(const float* logits, int64_t rows, int64_t C, int64_t n0, int64_t N, const int64_t* labels,
                 const int64_t* reference, double* loss, int64_t* correct, int64_t* agree, int64_t* worse,
                 cudaStream_t stream);
void head_reduce(const double* logits, int64_t rows, int64_t C, int64_t n0, int64_t N, const int64_t* labels,
                 const int64_t* reference, double* loss, int64_t* correct, int64_t* agree, int64_t* worse,
                 cudaStream_t stream);

// out[k, j] = act(z0[j] + alphas[k] (z1[j] − z0[j])) for j < M, k < K; act is ReLU or identity.
void interp_mix(const float* z0, const float* z1, const float* alphas, int64_t K, int64_t M, bool relu, float* out,
                cudaStream_t stream);
void interp_mix(const double* z0, const double* z1, const double* alphas, int64_t K, int64_t M, bool relu,
                double* out, cudaStream_t stream);

// out = weight + sigma · E, E (rows, cols) from philox.h keyed by (seed, stream_id, row, col).
void add_noise(const float* weight, float* out, int64_t rows, int64_t cols, double sigma, uint64_t seed,
               uint32_t stream_id, cudaStream_t stream);
void add_noise(const double* weight, double* out, int64_t rows, int64_t cols, double sigma, uint64_t seed,
               uint32_t stream_id, cudaStream_t stream);

}  // namespace cuda
}  // namespace layerprobe
