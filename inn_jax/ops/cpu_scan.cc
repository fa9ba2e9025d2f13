// The selective scan as two XLA FFI handlers for CPUs: forward and its VJP, each one pass over
// the rows with the whole recurrence in registers and L1 (inn_jax/ops/cpu_scan.py builds this
// file with the host's C++ compiler and registers it; its docstring states the contract).
//
// Shapes (row-major, leading axes merged into M rows): u, delta, z, y and their gradients
// (M, L, E); B, C, gB, gC (M, L, S); A, gA, h0, hT, gh0, ghT (M, S, E); D, delta_bias and their
// gradients (M, E); hc, the state at each chunk's start (M, J, S, E), J = ceil(L / chunk). The
// state is laid out (S, E): E, contiguous, is the vector axis, so every inner loop below is a
// unit-stride loop the compiler vectorises.
//
//   forward   dt_t = softplus(delta_t + delta_bias) (or without softplus)
//             h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,  y_t = (sum_s h_t C_t + D u_t) silu(z_t)
//   backward  g_t = gs_t C_t + a_{t+1} g_{t+1} (g = dL/dh_t, gs the cotangent of the scan's own
//             output), a_t = exp(dt_t A); per chunk, in reverse, the chunk's dt, decays, states
//             and scan outputs are recomputed from hc into buffers. Nothing but the inputs and hc
//             is kept between the two.

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

using inn_jax::exp_f32;
using inn_jax::sigmoid_f32;
using inn_jax::softplus_f32;

struct Dims {
  int64_t rows, length, width, state, chunk, chunks;
};

ffi::Error check(ffi::Buffer<ffi::F32>& u, ffi::Buffer<ffi::F32>& B, ffi::Buffer<ffi::F32>& A,
                 ffi::Buffer<ffi::F32>& D, ffi::Buffer<ffi::F32>& z, int64_t gate,
                 int64_t chunk, Dims* d) {
  auto ud = u.dimensions();
  auto bd = B.dimensions();
  if (ud.size() < 2 || bd.size() < 2 || chunk < 1) {
    return ffi::Error::InvalidArgument("cpu_scan: u and B need (rows, L, ...) and chunk >= 1");
  }
  d->length = ud[ud.size() - 2];
  d->width = ud[ud.size() - 1];
  d->state = bd[bd.size() - 1];
  const int64_t per_row = d->length * d->width;
  d->rows = per_row ? static_cast<int64_t>(u.element_count()) / per_row : 0;
  const int64_t rows = d->rows;
  if (static_cast<int64_t>(B.element_count()) != rows * d->length * d->state ||
      static_cast<int64_t>(A.element_count()) != rows * d->state * d->width ||
      static_cast<int64_t>(D.element_count()) != rows * d->width ||
      (gate && static_cast<int64_t>(z.element_count()) != rows * per_row)) {
    return ffi::Error::InvalidArgument("cpu_scan: B, C, A, D or z disagree with u's rows");
  }
  d->chunk = chunk;
  d->chunks = (d->length + chunk - 1) / chunk;
  return ffi::Error::Success();
}

// dt for one step: (delta + bias), softplus'd when asked.
inline void step_dt(const float* __restrict delta, const float* __restrict bias, bool softplus,
                    int64_t E, float* __restrict dt) {
  if (softplus) {
    #pragma omp simd
    for (int64_t e = 0; e < E; ++e) dt[e] = softplus_f32(delta[e] + bias[e]);
  } else {
    #pragma omp simd
    for (int64_t e = 0; e < E; ++e) dt[e] = delta[e] + bias[e];
  }
}

// One step of the recurrence for one row, the forward's and the backward's recomputation alike:
// next = exp(dt A) prev + (dt u) B_t over the (S, E) state and y += sum_s next C_t; `decay`, where
// given, keeps exp(dt A) for the adjoint. prev and next may be one buffer (the forward updates
// the state in place): element k of next reads element k of prev alone, which `omp simd`
// vectorises without a restrict promise between the two.
template <bool kKeepDecay>
inline void recur_rows(const float* __restrict dt, const float* __restrict u,
                       const float* __restrict A, const float* __restrict Bt,
                       const float* __restrict Ct, int64_t S, int64_t E, const float* prev,
                       float* next, float* __restrict y, float* __restrict decay) {
  for (int64_t s = 0; s < S; ++s) {
    const float b = Bt[s], c = Ct[s];
    const float* As = A + s * E;
    const float* ps = prev + s * E;
    float* ns = next + s * E;
    #pragma omp simd
    for (int64_t e = 0; e < E; ++e) {
      const float a = exp_f32(dt[e] * As[e]);
      const float hn = a * ps[e] + dt[e] * u[e] * b;
      if constexpr (kKeepDecay) decay[s * E + e] = a;
      ns[e] = hn;
      y[e] += hn * c;
    }
  }
}

inline void recur(const float* __restrict dt, const float* __restrict u,
                  const float* __restrict A, const float* __restrict Bt,
                  const float* __restrict Ct, int64_t S, int64_t E, const float* prev, float* next,
                  float* __restrict y, float* __restrict decay) {
  // One loop, compiled twice: the store of the decays is decided outside the vector loop.
  if (decay) {
    recur_rows<true>(dt, u, A, Bt, Ct, S, E, prev, next, y, decay);
  } else {
    recur_rows<false>(dt, u, A, Bt, Ct, S, E, prev, next, y, nullptr);
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> delta,
                   ffi::Buffer<ffi::F32> A, ffi::Buffer<ffi::F32> B, ffi::Buffer<ffi::F32> C,
                   ffi::Buffer<ffi::F32> D, ffi::Buffer<ffi::F32> z, ffi::Buffer<ffi::F32> bias,
                   ffi::Buffer<ffi::F32> h0, int64_t chunk, int64_t softplus, int64_t gate,
                   ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> hT,
                   ffi::ResultBuffer<ffi::F32> hc) {
  Dims d;
  if (ffi::Error e = check(u, B, A, D, z, gate, chunk, &d); e.failure()) return e;
  const int64_t L = d.length, E = d.width, S = d.state, SE = d.state * d.width;
  const float* pu = u.typed_data();
  const float* pdelta = delta.typed_data();
  const float* pA = A.typed_data();
  const float* pB = B.typed_data();
  const float* pC = C.typed_data();
  const float* pD = D.typed_data();
  const float* pz = z.typed_data();
  const float* pbias = bias.typed_data();
  const float* ph0 = h0.typed_data();
  float* py = y->typed_data();
  float* phT = hT->typed_data();
  float* phc = hc->typed_data();
  inn_jax::parallel_for(pool, d.rows, [&](int64_t first, int64_t end) {
    std::vector<float> dt(E);
    for (int64_t m = first; m < end; ++m) {
      const float* __restrict Am = pA + m * SE;
      const float* __restrict Dm = pD + m * E;
      float* __restrict h = phT + m * SE;  // The running state, left as the final one.
      std::memcpy(h, ph0 + m * SE, SE * sizeof(float));
      for (int64_t t = 0; t < L; ++t) {
        if (t % d.chunk == 0) {
          std::memcpy(phc + (m * d.chunks + t / d.chunk) * SE, h, SE * sizeof(float));
        }
        const int64_t rt = m * L + t;
        step_dt(pdelta + rt * E, pbias + m * E, softplus, E, dt.data());
        const float* __restrict ut = pu + rt * E;
        float* __restrict yt = py + rt * E;
        #pragma omp simd
        for (int64_t e = 0; e < E; ++e) yt[e] = Dm[e] * ut[e];
        recur(dt.data(), ut, Am, pB + rt * S, pC + rt * S, S, E, h, h, yt, nullptr);
        if (gate) {
          const float* __restrict zt = pz + rt * E;
          #pragma omp simd
          for (int64_t e = 0; e < E; ++e) yt[e] *= zt[e] * sigmoid_f32(zt[e]);
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> u,
                    ffi::Buffer<ffi::F32> delta, ffi::Buffer<ffi::F32> A,
                    ffi::Buffer<ffi::F32> B, ffi::Buffer<ffi::F32> C, ffi::Buffer<ffi::F32> D,
                    ffi::Buffer<ffi::F32> z, ffi::Buffer<ffi::F32> bias,
                    ffi::Buffer<ffi::F32> hc, ffi::Buffer<ffi::F32> gy,
                    ffi::Buffer<ffi::F32> ghT, int64_t chunk, int64_t softplus, int64_t gate,
                    ffi::ResultBuffer<ffi::F32> gu, ffi::ResultBuffer<ffi::F32> gdelta,
                    ffi::ResultBuffer<ffi::F32> gA, ffi::ResultBuffer<ffi::F32> gB,
                    ffi::ResultBuffer<ffi::F32> gC, ffi::ResultBuffer<ffi::F32> gD,
                    ffi::ResultBuffer<ffi::F32> gz, ffi::ResultBuffer<ffi::F32> gbias,
                    ffi::ResultBuffer<ffi::F32> gh0) {
  Dims d;
  if (ffi::Error e = check(u, B, A, D, z, gate, chunk, &d); e.failure()) return e;
  const int64_t L = d.length, E = d.width, S = d.state, SE = d.state * d.width, T = d.chunk;
  const float* pu = u.typed_data();
  const float* pdelta = delta.typed_data();
  const float* pA = A.typed_data();
  const float* pB = B.typed_data();
  const float* pC = C.typed_data();
  const float* pD = D.typed_data();
  const float* pz = z.typed_data();
  const float* pbias = bias.typed_data();
  const float* phc = hc.typed_data();
  const float* pgy = gy.typed_data();
  const float* pghT = ghT.typed_data();
  float* pgu = gu->typed_data();
  float* pgdelta = gdelta->typed_data();
  float* pgA = gA->typed_data();
  float* pgB = gB->typed_data();
  float* pgC = gC->typed_data();
  float* pgD = gD->typed_data();
  float* pgz = gz->typed_data();
  float* pgbias = gbias->typed_data();
  float* pgh0 = gh0->typed_data();
  if (!gate) std::fill(pgz, pgz + gz->element_count(), 0.0f);
  inn_jax::parallel_for(pool, d.rows, [&](int64_t first, int64_t end) {
    // One chunk's states h_{t0-1} .. h_{t0+T-1} (T + 1 of them), decays a_t (S, E) each, and
    // its dt and scan outputs (E each).
    std::vector<float> hs((T + 1) * SE), as(T * SE), dts(T * E), ys(T * E);
    std::vector<float> gs(E), gbu(E), gd(E);
    for (int64_t m = first; m < end; ++m) {
      const float* __restrict Am = pA + m * SE;
      const float* __restrict Dm = pD + m * E;
      const float* __restrict bm = pbias + m * E;
      float* __restrict gAm = pgA + m * SE;
      float* __restrict gDm = pgD + m * E;
      float* __restrict gbm = pgbias + m * E;
      float* __restrict g = pgh0 + m * SE;  // Carries a_{t+1} g_{t+1}; ends as dL/dh_0.
      std::fill(gAm, gAm + SE, 0.0f);
      std::fill(gDm, gDm + E, 0.0f);
      std::fill(gbm, gbm + E, 0.0f);
      std::memcpy(g, pghT + m * SE, SE * sizeof(float));
      for (int64_t j = d.chunks - 1; j >= 0; --j) {
        const int64_t t0 = j * T, n = std::min(T, L - t0);
        std::memcpy(hs.data(), phc + (m * d.chunks + j) * SE, SE * sizeof(float));
        for (int64_t i = 0; i < n; ++i) {  // Recompute the chunk: h_{t0+i} into hs[i + 1].
          const int64_t rt = m * L + t0 + i;
          float* __restrict dtt = dts.data() + i * E;
          step_dt(pdelta + rt * E, bm, softplus, E, dtt);
          float* __restrict yt = ys.data() + i * E;
          std::fill(yt, yt + E, 0.0f);
          recur(dtt, pu + rt * E, Am, pB + rt * S, pC + rt * S, S, E, hs.data() + i * SE,
                hs.data() + (i + 1) * SE, yt, as.data() + i * SE);
        }
        for (int64_t i = n - 1; i >= 0; --i) {
          const int64_t rt = m * L + t0 + i;
          const float* __restrict dtt = dts.data() + i * E;
          const float* __restrict ut = pu + rt * E;
          const float* __restrict Bt = pB + rt * S;
          const float* __restrict Ct = pC + rt * S;
          const float* __restrict gyt = pgy + rt * E;
          const float* __restrict prev = hs.data() + i * SE;
          const float* __restrict cur = hs.data() + (i + 1) * SE;
          const float* __restrict at = as.data() + i * SE;
          float* __restrict gBt = pgB + rt * S;
          float* __restrict gCt = pgC + rt * S;
          if (gate) {  // y = o silu(z), o = scan + D u: gs = gy silu(z), gz = gy o silu'(z).
            const float* __restrict zt = pz + rt * E;
            const float* __restrict yt = ys.data() + i * E;
            float* __restrict gzt = pgz + rt * E;
            #pragma omp simd
            for (int64_t e = 0; e < E; ++e) {
              const float sg = sigmoid_f32(zt[e]);
              const float o = yt[e] + Dm[e] * ut[e];
              gs[e] = gyt[e] * zt[e] * sg;
              gzt[e] = gyt[e] * o * sg * (1.0f + zt[e] * (1.0f - sg));
            }
          } else {
            std::memcpy(gs.data(), gyt, E * sizeof(float));
          }
          #pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            gDm[e] += gs[e] * ut[e];
            gbu[e] = 0.0f;
            gd[e] = 0.0f;
          }
          for (int64_t s = 0; s < S; ++s) {
            const float b = Bt[s], c = Ct[s];
            float gb = 0.0f, gc = 0.0f;
            #pragma omp simd reduction(+ : gb, gc)
            for (int64_t e = 0; e < E; ++e) {
              const int64_t k = s * E + e;
              const float gk = g[k] + gs[e] * c;            // g_t
              const float ga = gk * prev[k] * at[k];        // d/d(dt A)
              gAm[k] += ga * dtt[e];
              gd[e] += ga * Am[k];
              gbu[e] += gk * b;                             // d/d(dt u)
              gb += gk * dtt[e] * ut[e];
              gc += cur[k] * gs[e];
              g[k] = at[k] * gk;                            // a_t g_t, for step t - 1
            }
            gBt[s] = gb;
            gCt[s] = gc;
          }
          const float* __restrict deltat = pdelta + rt * E;
          float* __restrict gut = pgu + rt * E;
          float* __restrict gdeltat = pgdelta + rt * E;
          #pragma omp simd
          for (int64_t e = 0; e < E; ++e) {
            gut[e] = gbu[e] * dtt[e] + gs[e] * Dm[e];
            const float gdt = gd[e] + gbu[e] * ut[e];
            const float gx = softplus ? gdt * sigmoid_f32(deltat[e] + bm[e]) : gdt;
            gdeltat[e] = gx;
            gbm[e] += gx;
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(InnScanForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // u
                                  .Arg<ffi::Buffer<ffi::F32>>()  // delta
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A
                                  .Arg<ffi::Buffer<ffi::F32>>()  // B
                                  .Arg<ffi::Buffer<ffi::F32>>()  // C
                                  .Arg<ffi::Buffer<ffi::F32>>()  // D
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z (one element without gate)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // delta_bias
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Attr<int64_t>("chunk")
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("gate")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hT
                                  .Ret<ffi::Buffer<ffi::F32>>());  // hc

XLA_FFI_DEFINE_HANDLER_SYMBOL(InnScanBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // u
                                  .Arg<ffi::Buffer<ffi::F32>>()  // delta
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A
                                  .Arg<ffi::Buffer<ffi::F32>>()  // B
                                  .Arg<ffi::Buffer<ffi::F32>>()  // C
                                  .Arg<ffi::Buffer<ffi::F32>>()  // D
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z
                                  .Arg<ffi::Buffer<ffi::F32>>()  // delta_bias
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hc
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gy
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ghT
                                  .Attr<int64_t>("chunk")
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("gate")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gu
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gdelta
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gA
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gB
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gC
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gD
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gz
                                  .Ret<ffi::Buffer<ffi::F32>>()  // gdelta_bias
                                  .Ret<ffi::Buffer<ffi::F32>>());  // gh0
