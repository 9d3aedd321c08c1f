// The one definition of layerprobe's criticality noise: Philox4x32-10 (Salmon et al., SC'11) and
// a Box-Muller transform, shared by the C++ (CPU) and CUDA kernels. layerprobe/ops.py holds a
// vectorized PyTorch copy of it that must stay bit-identical (tests/test_ops.py checks both
// against each other and against the published known-answer vectors).
//
// Noise entry (row, col) of a parameter flattened to 2-D (shape[0], rest) is drawn from
//     key     = (seed & 0xffffffff, seed >> 32)
//     counter = (col / 2, row, stream, 0)
// one Philox call gives 4 uint32 words; words 0, 1 give two normals by Box-Muller, for the even
// (cos) and the odd (sin) column. The math runs in double so that CPU and GPU agree to the
// rounding of the float they store. No std-lib headers: nvcc and g++ compile it alike.
#pragma once
#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define LP_HD __host__ __device__ __forceinline__
#else
#define LP_HD inline
#endif

namespace layerprobe {

struct Philox4 {
  uint32_t v[4];
};

LP_HD void lp_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds on counter c and key (k0, k1).
LP_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    lp_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    lp_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
  }
  Philox4 out;
  out.v[0] = c0;
  out.v[1] = c1;
  out.v[2] = c2;
  out.v[3] = c3;
  return out;
}

// The two standard normals of column pair `pair` (columns 2·pair, 2·pair + 1) of `row`.
LP_HD void normal_pair(uint64_t seed, uint32_t stream, uint32_t row, uint32_t pair, double* even, double* odd) {
  const Philox4 r = philox4x32_10(pair, row, stream, 0u, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  // u1 in (0, 1] (log is finite), u2 in [0, 1); both exact in double.
  const double u1 = (static_cast<double>(r.v[0]) + 1.0) * 2.3283064365386963e-10;  // 2^-32
  const double u2 = static_cast<double>(r.v[1]) * 2.3283064365386963e-10;
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586 * u2;
  *even = radius * cos(angle);
  *odd = radius * sin(angle);
}

// One standard normal: entry (row, col).
LP_HD double normal_at(uint64_t seed, uint32_t stream, uint32_t row, uint32_t col) {
  double even, odd;
  normal_pair(seed, stream, row, col >> 1, &even, &odd);
  return (col & 1u) ? odd : even;
}

}  // namespace layerprobe
