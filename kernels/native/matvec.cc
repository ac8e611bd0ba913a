// Products of a few rows with a weight matrix read once: y[r, o] = scale[o] * sum_i w[o, i] x[r, i].
//
// A decode step is bound by the bytes of weights it reads (Gemma 3 report, section 2.3, quantizes for
// exactly this), so each weight is loaded from memory once, widened to f32 in registers and multiplied
// into f32 accumulators: bf16 weights, int8 codes and int4 codes (two per byte, input 2m in the low
// nibble, 2m + 1 in the high one) with one scale per output. Every output row's sum is f32; only the
// order of the additions differs from the reference (gemma_kernels.matvec.ref).
//
// The outputs are split into chunks that the calling thread and XLA's intra-op thread pool take in
// turn, so both cores of a small machine read weights at once.
//
// Built by gemma_kernels.native with the host's C++ compiler (-march=native): AVX-512 where the
// machine has it, a loop the compiler vectorises elsewhere.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Named so the handler bindings below have no commas inside the macro's arguments.
using Bf16Matrix = ffi::Buffer<ffi::BF16, 2>;
using Int8Matrix = ffi::Buffer<ffi::S8, 2>;
using ByteMatrix = ffi::Buffer<ffi::U8, 2>;
using Scales = ffi::Buffer<ffi::F32, 1>;

constexpr int64_t kBlock = 4;  // output rows per inner loop: x is loaded once for four weight rows
// Each weight row is also asked for ahead of its loads, up to the same place in the next block of
// rows (at most this far): the rows of a block are read side by side, and on a 2-core Xeon the
// hardware prefetcher alone left the short rows of Gemma 3 1B's up projection and tied head (1152
// inputs) at 60% of the read bandwidth.
constexpr int64_t kPrefetchBytes = 8192;

// Shares the output rows [0, n_out) between the caller and the pool, in chunks of `chunk` rows.
// Helpers start late or not at all without harm: the caller takes chunks until none is left and waits
// only for chunks another thread has claimed, and a helper that finds no chunk touches nothing else.
template <typename Body>
void ForChunks(ffi::ThreadPool& pool, int64_t n_out, int64_t chunk, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  const int64_t n_chunks = (n_out + chunk - 1) / chunk;
  auto work = [state, n_chunks, n_out, chunk, &body]() {
    for (int64_t c; (c = state->next.fetch_add(1)) < n_chunks;) {
      body(c * chunk, std::min(n_out, (c + 1) * chunk));
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < n_chunks) std::this_thread::yield();
}

// Rows of about 16 KiB of weights per chunk, and at least four chunks per thread.
int64_t ChunkRows(int64_t n_out, int64_t row_bytes, int64_t threads) {
  int64_t rows = std::max<int64_t>(kBlock, (16 << 10) / std::max<int64_t>(row_bytes, 1));
  rows = std::min(rows, std::max<int64_t>(kBlock, n_out / (4 * std::max<int64_t>(threads, 1))));
  return (rows + kBlock - 1) / kBlock * kBlock;
}

inline float Bf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Widening loads: 16 weights -> 16 f32 lanes. The scalar forms below serve the tails and other CPUs.
#if defined(__AVX512F__)
inline __m512 Load16(const uint16_t* w) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
inline __m512 Load16(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}
#endif
inline float Scalar(uint16_t w) { return Bf16(w); }
inline float Scalar(int8_t w) { return float(w); }

// acc[b] = sum_i w[b][i] * x[i] for kBlock weight rows of one dtype (bf16 bits or int8).
template <typename W>
void DotBlock(const W* const* w, const float* x, int64_t n, float* acc) {
  int64_t i = 0;
  for (int64_t b = 0; b < kBlock; ++b) acc[b] = 0.f;
#if defined(__AVX512F__)
  __m512 a[kBlock][2];
  for (int64_t b = 0; b < kBlock; ++b) a[b][0] = a[b][1] = _mm512_setzero_ps();
  const int64_t ahead = std::min<int64_t>(kBlock * n, kPrefetchBytes / sizeof(W));
  for (; i + 32 <= n; i += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
    for (int64_t b = 0; b < kBlock; ++b) {
      _mm_prefetch(reinterpret_cast<const char*>(w[b] + i + ahead), _MM_HINT_T0);
      a[b][0] = _mm512_fmadd_ps(Load16(w[b] + i), x0, a[b][0]);
      a[b][1] = _mm512_fmadd_ps(Load16(w[b] + i + 16), x1, a[b][1]);
    }
  }
  for (int64_t b = 0; b < kBlock; ++b) acc[b] = _mm512_reduce_add_ps(_mm512_add_ps(a[b][0], a[b][1]));
#endif
  for (int64_t b = 0; b < kBlock; ++b) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = i; j < n; ++j) s += Scalar(w[b][j]) * x[j];
    acc[b] += s;
  }
}

// int4: byte m of a row holds inputs 2m (low nibble) and 2m + 1 (high nibble), sign-extended;
// xe and xo are the even and odd inputs of one x row, each n bytes long.
void DotBlock4(const uint8_t* const* w, const float* xe, const float* xo, int64_t n, float* acc) {
  int64_t i = 0;
  for (int64_t b = 0; b < kBlock; ++b) acc[b] = 0.f;
#if defined(__AVX512F__)
  __m512 a[kBlock][2];
  for (int64_t b = 0; b < kBlock; ++b) a[b][0] = a[b][1] = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = _mm512_loadu_ps(xe + i), o = _mm512_loadu_ps(xo + i);
    for (int64_t b = 0; b < kBlock; ++b) {
      _mm_prefetch(reinterpret_cast<const char*>(w[b] + i + kPrefetchBytes), _MM_HINT_T0);
      __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b] + i)));
      __m512 lo = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 28), 28));
      __m512 hi = _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 4));
      a[b][0] = _mm512_fmadd_ps(lo, e, a[b][0]);
      a[b][1] = _mm512_fmadd_ps(hi, o, a[b][1]);
    }
  }
  for (int64_t b = 0; b < kBlock; ++b) acc[b] = _mm512_reduce_add_ps(_mm512_add_ps(a[b][0], a[b][1]));
#endif
  for (int64_t b = 0; b < kBlock; ++b) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = i; j < n; ++j) {
      const int8_t v = static_cast<int8_t>(w[b][j]);
      s += float(int8_t(v << 4) >> 4) * xe[j] + float(v >> 4) * xo[j];
    }
    acc[b] += s;
  }
}

// y[r, o] for o in [lo, hi): `dot(rows, r, acc)` fills acc for kBlock weight rows and x row r.
template <typename Dot>
void Rows(int64_t lo, int64_t hi, int64_t n_rows, int64_t n_out, const float* scale, float* y,
          const Dot& dot) {
  float acc[kBlock];
  for (int64_t o = lo; o < hi; o += kBlock) {
    const int64_t m = std::min(kBlock, hi - o);
    for (int64_t r = 0; r < n_rows; ++r) {
      dot(o, m, r, acc);
      for (int64_t b = 0; b < m; ++b) y[r * n_out + o + b] = scale ? acc[b] * scale[o + b] : acc[b];
    }
  }
}

// Weight row pointers for a block that may hold fewer than kBlock rows (the rest repeat the last).
template <typename W>
void BlockRows(const W* w, int64_t width, int64_t o, int64_t m, const W** rows) {
  for (int64_t b = 0; b < kBlock; ++b) rows[b] = w + (o + std::min(b, m - 1)) * width;
}

template <typename W>
ffi::Error Matvec(ffi::ThreadPool& pool, const float* x, const W* w, const float* scale, float* y,
                  int64_t n_rows, int64_t n_out, int64_t n_in) {
  ForChunks(pool, n_out, ChunkRows(n_out, n_in * sizeof(W), pool.num_threads()),
            [&](int64_t lo, int64_t hi) {
              Rows(lo, hi, n_rows, n_out, scale, y, [&](int64_t o, int64_t m, int64_t r, float* acc) {
                const W* rows[kBlock];
                BlockRows(w, n_in, o, m, rows);
                DotBlock(rows, x + r * n_in, n_in, acc);
              });
            });
  return ffi::Error::Success();
}

// x [rows, in] f32, w [out, in] bf16 -> y [rows, out] f32.
ffi::Error MatvecBf16(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::BF16, 2> w,
                      ffi::ResultBuffer<ffi::F32> y) {
  const int64_t n_out = w.dimensions()[0], n_in = w.dimensions()[1];
  if (n_in == 0 || x.element_count() % n_in != 0)
    return ffi::Error::InvalidArgument("gemma_matvec_bf16: x's last axis must equal w's input axis");
  return Matvec(pool, x.typed_data(), reinterpret_cast<const uint16_t*>(w.untyped_data()), nullptr,
                y->typed_data(), x.element_count() / n_in, n_out, n_in);
}

// x [rows, in] f32, codes [out, in] int8, scale [out] f32 -> y [rows, out] f32.
ffi::Error MatvecInt8(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8, 2> w,
                      ffi::Buffer<ffi::F32, 1> scale, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t n_out = w.dimensions()[0], n_in = w.dimensions()[1];
  if (n_in == 0 || x.element_count() % n_in != 0)
    return ffi::Error::InvalidArgument("gemma_matvec_int8: x's last axis must equal w's input axis");
  return Matvec(pool, x.typed_data(), w.typed_data(), scale.typed_data(), y->typed_data(),
                x.element_count() / n_in, n_out, n_in);
}

// x [rows, 2, in / 2] f32 (even inputs, then odd ones), codes [out, in / 2] uint8, scale [out] f32.
ffi::Error MatvecInt4(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8, 2> w,
                      ffi::Buffer<ffi::F32, 1> scale, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t n_out = w.dimensions()[0], half = w.dimensions()[1];
  if (half == 0 || x.element_count() % (2 * half) != 0)
    return ffi::Error::InvalidArgument("gemma_matvec_int4: x's inputs must be twice w's bytes per row");
  const int64_t n_rows = x.element_count() / (2 * half);
  const float* xp = x.typed_data();
  const uint8_t* wp = w.typed_data();
  ForChunks(pool, n_out, ChunkRows(n_out, half, pool.num_threads()), [&](int64_t lo, int64_t hi) {
    Rows(lo, hi, n_rows, n_out, scale.typed_data(), y->typed_data(),
         [&](int64_t o, int64_t m, int64_t r, float* acc) {
           const uint8_t* rows[kBlock];
           BlockRows(wp, half, o, m, rows);
           DotBlock4(rows, xp + r * 2 * half, xp + r * 2 * half + half, half, acc);
         });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(gemma_matvec_bf16, MatvecBf16,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<Bf16Matrix>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(gemma_matvec_int8, MatvecInt8,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<Int8Matrix>()
                                  .Arg<Scales>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(gemma_matvec_int4, MatvecInt4,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ByteMatrix>()
                                  .Arg<Scales>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
