// Attention over the neuron axis at every (batch, time, head) position, as two XLA FFI handlers
// for CPUs: forward and its VJP (inn_jax/ops/cpu_attention.py states the contract; it is built
// with cpu_scan.cc into one library by inn_jax/ops/cpu_scan.py).
//
// Shapes (row-major): qkv, gqkv (B, N, L, 3, H, K), the fused in-projection's output as it lies:
// queries, keys, values (read in place: no slices are copied out of it, and the backward writes
// the three cotangents into one array, no pads and sums around it); o (B, N, L, H, K); keep
// (B, N, L, H, N), dropout's scaled mask on the weights (one element when absent); w, gw
// (B, L, H, N, N), the softmax weights before the mask.
//
//   forward   w_ij = softmax_j(scale q_i . k_j),  o_i = sum_j w_ij keep_ij v_j
//   backward  dW_ij = keep_ij go_i . v_j + gw_ij,  dlogit_ij = w_ij (dW_ij - sum_j' w_ij' dW_ij'),
//             gq_i = scale sum_j dlogit_ij k_j,  gk_j = scale sum_i dlogit_ij q_i,
//             gv_j = sum_i w_ij keep_ij go_i

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_math.h"
#include "cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {
  int64_t batch, neurons, length, heads, dim;
};

ffi::Error shape_of(ffi::Buffer<ffi::F32>& qkv, ffi::Buffer<ffi::F32>& keep, int64_t masked,
                    Shape* s) {
  auto d = qkv.dimensions();
  if (d.size() != 6 || d[3] != 3) {
    return ffi::Error::InvalidArgument("cpu_attention: qkv must be (B, N, L, 3, H, K)");
  }
  *s = {d[0], d[1], d[2], d[4], d[5]};
  if (masked && static_cast<int64_t>(keep.element_count()) !=
                    s->batch * s->neurons * s->length * s->heads * s->neurons) {
    return ffi::Error::InvalidArgument("cpu_attention: keep must be (B, N, L, H, N)");
  }
  return ffi::Error::Success();
}

// Element offsets of one (b, neuron, l, h) vector in qkv (c: 0 queries, 1 keys, 2 values), in
// o, in keep and in w.
struct Index {
  const Shape& s;
  int64_t qkv(int64_t b, int64_t i, int64_t l, int64_t c, int64_t h) const {
    return ((((b * s.neurons + i) * s.length + l) * 3 + c) * s.heads + h) * s.dim;
  }
  int64_t o(int64_t b, int64_t i, int64_t l, int64_t h) const {
    return (((b * s.neurons + i) * s.length + l) * s.heads + h) * s.dim;
  }
  int64_t keep(int64_t b, int64_t i, int64_t l, int64_t h) const {
    return (((b * s.neurons + i) * s.length + l) * s.heads + h) * s.neurons;
  }
  int64_t w(int64_t b, int64_t i, int64_t l, int64_t h) const {
    return (((b * s.length + l) * s.heads + h) * s.neurons + i) * s.neurons;
  }
};

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> keep,
                   float scale, int64_t masked,
                   ffi::ResultBuffer<ffi::F32> o, ffi::ResultBuffer<ffi::F32> w) {
  Shape s;
  if (ffi::Error e = shape_of(qkv, keep, masked, &s); e.failure()) return e;
  const Index at{s};
  const float* p = qkv.typed_data();
  const float* pkeep = keep.typed_data();
  float* po = o->typed_data();
  float* pw = w->typed_data();
  const int64_t K = s.dim, N = s.neurons;
  inn_jax::parallel_for(pool, s.batch * s.length, [&](int64_t first, int64_t end) {
    for (int64_t bl = first; bl < end; ++bl) {
      const int64_t b = bl / s.length, l = bl % s.length;
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t i = 0; i < N; ++i) {
          const float* qi = p + at.qkv(b, i, l, 0, h);
          float* wi = pw + at.w(b, i, l, h);
          float top = -INFINITY;
          for (int64_t j = 0; j < N; ++j) {
            const float* kj = p + at.qkv(b, j, l, 1, h);
            float dot = 0.0f;
            #pragma omp simd reduction(+ : dot)
            for (int64_t k = 0; k < K; ++k) dot += qi[k] * kj[k];
            wi[j] = dot * scale;
            top = std::max(top, wi[j]);
          }
          float total = 0.0f;
          #pragma omp simd reduction(+ : total)
          for (int64_t j = 0; j < N; ++j) {
            wi[j] = inn_jax::exp_f32(wi[j] - top);
            total += wi[j];
          }
          #pragma omp simd
          for (int64_t j = 0; j < N; ++j) wi[j] /= total;
          float* oi = po + at.o(b, i, l, h);
          std::fill(oi, oi + K, 0.0f);
          const float* keepi = masked ? pkeep + at.keep(b, i, l, h) : nullptr;
          for (int64_t j = 0; j < N; ++j) {
            const float wk = masked ? wi[j] * keepi[j] : wi[j];
            const float* vj = p + at.qkv(b, j, l, 2, h);
            for (int64_t k = 0; k < K; ++k) oi[k] += wk * vj[k];
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv,
                    ffi::Buffer<ffi::F32> keep, ffi::Buffer<ffi::F32> w,
                    ffi::Buffer<ffi::F32> go, ffi::Buffer<ffi::F32> gw, float scale,
                    int64_t masked, ffi::ResultBuffer<ffi::F32> gqkv) {
  Shape s;
  if (ffi::Error e = shape_of(qkv, keep, masked, &s); e.failure()) return e;
  const Index at{s};
  const float* p = qkv.typed_data();
  const float* pkeep = keep.typed_data();
  const float* pw = w.typed_data();
  const float* pgo = go.typed_data();
  const float* pgw = gw.typed_data();
  float* pg = gqkv->typed_data();
  const int64_t K = s.dim, N = s.neurons;
  // Each (b, l) position writes only its own slices of gqkv, so threads split positions.
  inn_jax::parallel_for(pool, s.batch * s.length, [&](int64_t first, int64_t end) {
    std::vector<float> dlogit(N);
    for (int64_t bl = first; bl < end; ++bl) {
      const int64_t b = bl / s.length, l = bl % s.length;
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t j = 0; j < N; ++j) {  // Keys' and values' cotangents: sums over i.
          std::fill_n(pg + at.qkv(b, j, l, 1, h), K, 0.0f);
          std::fill_n(pg + at.qkv(b, j, l, 2, h), K, 0.0f);
        }
        for (int64_t i = 0; i < N; ++i) {
          const float* qi = p + at.qkv(b, i, l, 0, h);
          const float* goi = pgo + at.o(b, i, l, h);
          const float* wi = pw + at.w(b, i, l, h);
          const float* gwi = pgw + at.w(b, i, l, h);
          const float* keepi = masked ? pkeep + at.keep(b, i, l, h) : nullptr;
          float weighted = 0.0f;
          for (int64_t j = 0; j < N; ++j) {
            const float* vj = p + at.qkv(b, j, l, 2, h);
            float* gvj = pg + at.qkv(b, j, l, 2, h);
            const float kept = masked ? keepi[j] : 1.0f;
            const float wk = wi[j] * kept;
            float dot = 0.0f;
            #pragma omp simd reduction(+ : dot)
            for (int64_t k = 0; k < K; ++k) {
              dot += goi[k] * vj[k];
              gvj[k] += wk * goi[k];
            }
            dlogit[j] = kept * dot + gwi[j];
            weighted += wi[j] * dlogit[j];
          }
          float* gqi = pg + at.qkv(b, i, l, 0, h);
          std::fill(gqi, gqi + K, 0.0f);
          for (int64_t j = 0; j < N; ++j) {
            const float d = wi[j] * (dlogit[j] - weighted) * scale;
            const float* kj = p + at.qkv(b, j, l, 1, h);
            float* gkj = pg + at.qkv(b, j, l, 1, h);
            for (int64_t k = 0; k < K; ++k) {
              gqi[k] += d * kj[k];
              gkj[k] += d * qi[k];
            }
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(InnAttentionForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // qkv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // keep (one element unmasked)
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("masked")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // o
                                  .Ret<ffi::Buffer<ffi::F32>>());  // w

XLA_FFI_DEFINE_HANDLER_SYMBOL(InnAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // qkv
                                  .Arg<ffi::Buffer<ffi::F32>>()  // keep
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w
                                  .Arg<ffi::Buffer<ffi::F32>>()  // go
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gw
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("masked")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // gqkv
