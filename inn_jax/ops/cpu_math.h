// Shared by the CPU kernels (cpu_scan.cc, cpu_attention.cc): float32 exp, log, softplus and
// sigmoid written so that the loops calling them vectorise (std::exp and friends do not without
// -ffast-math, which the kernels are not built with).
#ifndef INN_JAX_OPS_CPU_MATH_H_
#define INN_JAX_OPS_CPU_MATH_H_

#include <cmath>
#include <cstdint>

namespace inn_jax {

// exp(x) for float32, written so that the loops calling it vectorise (std::exp does not without
// -ffast-math): Cody-Waite range reduction x = k ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6
// polynomial for exp(r) (relative error about 1e-7). x is clamped to [-87.3, 88.3], where 2^k
// stays a normal float: below it exp underflows to within 1.2e-38 of 0, above it the result
// (2e38) stands in for float overflow. A NaN input gives NaN through r.
inline float exp_f32(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// log(x) for normal x > 0, vectorisable: x = m 2^e with m in [sqrt(1/2), sqrt(2)), Cephes'
// degree-9 polynomial for log(m) (relative error about 1e-7).
inline float log_f32(float x) {
  const int32_t bits = __builtin_bit_cast(int32_t, x);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  float m = __builtin_bit_cast(float, (bits & 0x7fffff) | 0x3f000000);  // In [0.5, 1).
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1 : e;
  const float f = low ? m + m - 1.0f : m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  float r = p * f * z - 2.12194440e-4f * fe - 0.5f * z;
  return f + r + 0.693359375f * fe;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(y) as log(1 + y) y / ((1 + y) - 1), exact to
// float rounding for small y too (Goldberg), y itself where 1 + y rounds to 1.
inline float softplus_f32(float x) {
  const float y = exp_f32(-std::fabs(x));
  const float w = 1.0f + y;
  const float l = w == 1.0f ? y : log_f32(w) * y / (w - 1.0f);
  return (x > 0.0f ? x : 0.0f) + l;
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

}  // namespace inn_jax

#endif  // INN_JAX_OPS_CPU_MATH_H_
