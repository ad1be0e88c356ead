// The per-sample generation step of a WaveNet on the CPU, for wavenet/native.py.
//
// Why C++: at batch 1 a step is about 90 small matrix-vector products and activations; through
// PyTorch's dispatcher each costs ~10 us of overhead, several times its arithmetic. Here a call
// runs many steps (and the sampling) with no allocation and no dispatch, so the cost is reading
// the weights once per step.
//
// Layouts (prepared by wavenet/native.py):
// - every weight matrix W (in K, out N) is packed in panels of 16 output columns, N padded with
//   zeros to a multiple of 16 (`padded`). Panel p holds W[k][16p .. 16p+15], k = 0..K-1,
//   contiguous, in one of three formats (`WavenetNet::format`):
//   fp32: one float per weight;
//   bf16: the top half of each weight's float (rounded by the packer), two rows per 32-bit word:
//         word j of row pair i holds row 2i in its low half and row 2i+1 in its high half, so
//         a shift and a mask widen 32 weights back to floats exactly (K padded to even);
//   int8: one signed byte per weight, times its column's scale (`*_s`, one float per padded
//         column), applied once to each finished sum.
//   Activations stay float32 and every sum is accumulated in float32, in k order.
// - ring buffers: one block per stream holding every layer's (k-1)·d time slots of R floats,
//   layer after layer (the (B, C, T) tensors the caller sees are views with time-major strides);
// - activations are rows of one stream each.
//
// Plain C ABI (loaded with ctypes), no PyTorch headers: it builds in about a second.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
// A panel row of 16 columns: one AVX-512 register, or two AVX2 ones where the CPU has no
// AVX-512 (the compiler splits the operations).
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int8_t v16b __attribute__((vector_size(16)));

constexpr int kPanel = 16;

inline int padded(int n) { return (n + kPanel - 1) / kPanel * kPanel; }

template <typename V>
inline V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v8f load8(const float* p) { return load<v8f>(p); }
inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
inline void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof v); }
inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }
inline v16f splat16(float x) { return v16f{} + x; }

// The weight formats (see the top of the file). Each says how many rows one packed panel row
// holds (`kRows`), how long a panel of K rows is, and how to widen one packed row to floats.
struct Fp32 {
  using T = float;
  static constexpr int kRows = 1;
  static int64_t panel_size(int K) { return static_cast<int64_t>(K) * kPanel; }
  static void widen(const T* p, v16f* w) { w[0] = load<v16f>(p); }
};
struct Bf16 {
  using T = uint32_t;
  static constexpr int kRows = 2;
  static int64_t panel_size(int K) { return static_cast<int64_t>((K + 1) / 2) * kPanel; }
  static void widen(const T* p, v16f* w) {
    v16u pair = load<v16u>(p);
    w[0] = (v16f)(pair << 16);
    w[1] = (v16f)(pair & 0xFFFF0000u);
  }
};
struct Int8 {
  using T = int8_t;
  static constexpr int kRows = 1;
  static int64_t panel_size(int K) { return static_cast<int64_t>(K) * kPanel; }
  // Sign extension of bytes needs its own instruction (GCC 12 scalarizes the generic
  // conversion), so int8 is offered only where it exists (`wavenet_formats`).
  static void widen(const T* p, v16f* w) {
#if defined(__AVX512F__)
    w[0] = (v16f)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
#elif defined(__AVX2__)
    __m128i bytes = _mm_loadu_si128((const __m128i*)p);
    v8f half[2] = {(v8f)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)),
                   (v8f)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)))};
    std::memcpy(&w[0], half, sizeof half);
#else
    w[0] = __builtin_convertvector(__builtin_convertvector(load<v16b>(p), v16i), v16f);
#endif
  }
};

#if defined(__AVX2__)
constexpr int kFormats = 0b111;  // fp32, bf16, int8 (bit n: WavenetNet::format n)
#else
constexpr int kFormats = 0b011;
#endif

// exp(x) to about 2 ulp: x = n·ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial
// (truncation error < 6e-9), 2^n put straight into the exponent bits.
inline v8f exp8(v8f x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  x = x > splat(88.0f) ? splat(88.0f) : x;
  const v8f round_magic = splat(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  v8f n = (x * splat(1.44269504088896341f) + round_magic) - round_magic;
  v8f r = x - n * splat(0.693145751953125f);
  r = r - n * splat(1.42860682030941723e-6f);
  v8f p = splat(1.0f / 5040.0f);
  p = p * r + splat(1.0f / 720.0f);
  p = p * r + splat(1.0f / 120.0f);
  p = p * r + splat(1.0f / 24.0f);
  p = p * r + splat(1.0f / 6.0f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.0f);
  p = p * r + splat(1.0f);
  v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  return p * (v8f)bits;  // a cast between vector types keeps the bits
}

// tanh(f)·sigmoid(g) of 8 lanes.
inline v8f gate8(v8f f, v8f g) {
  v8f one = splat(1.0f);
  v8f tanh_f = one - splat(2.0f) / (exp8(f + f) + one);
  return tanh_f / (one + exp8(-g));
}

// Y[m][16p + j] += scale[16p + j] · sum_k X[m][k] · panel_p[k][j] for MB rows and NP panels
// starting at `first` (scale: int8 only).
template <typename F, int MB, int NP>
inline void kernel(const float* X, int ldx, int K, const typename F::T* W, const float* scale,
                   int first, float* Y, int ldy) {
  constexpr int kR = F::kRows;
  v16f acc[MB][NP] = {};
  const typename F::T* panel[NP];
  for (int q = 0; q < NP; ++q) panel[q] = W + (first + q) * F::panel_size(K);
  int k = 0;
  for (; k + kR <= K; k += kR) {
    v16f w[NP][kR];
    for (int q = 0; q < NP; ++q) F::widen(panel[q] + k / kR * kPanel, w[q]);
    for (int r = 0; r < kR; ++r)
      for (int m = 0; m < MB; ++m) {
        v16f xv = splat16(X[m * ldx + k + r]);
        for (int q = 0; q < NP; ++q) acc[m][q] += xv * w[q][r];
      }
  }
  if (k < K) {  // bf16 with K odd: the last word's low half only
    v16f w[NP][kR];
    for (int q = 0; q < NP; ++q) F::widen(panel[q] + k / kR * kPanel, w[q]);
    for (int m = 0; m < MB; ++m)
      for (int q = 0; q < NP; ++q) acc[m][q] += splat16(X[m * ldx + k]) * w[q][0];
  }
  for (int m = 0; m < MB; ++m)
    for (int q = 0; q < NP; ++q) {
      const int64_t column = static_cast<int64_t>(first + q) * kPanel;
      float* y = Y + m * ldy + column;
      v16f sum = acc[m][q];
      if (std::is_same<F, Int8>::value) sum *= load<v16f>(scale + column);
      store16(y, load<v16f>(y) + sum);
    }
}

// All panels for MB rows: NP panels at a time (enough independent accumulators to hide the FMA
// latency), then one at a time.
template <typename F, int MB, int NP>
inline void rows(const float* X, int ldx, int K, const typename F::T* W, const float* scale,
                 int panels, float* Y, int ldy) {
  int p = 0;
  for (; p + NP <= panels; p += NP) kernel<F, MB, NP>(X, ldx, K, W, scale, p, Y, ldy);
  for (; p < panels; ++p) kernel<F, MB, 1>(X, ldx, K, W, scale, p, Y, ldy);
}

#ifdef __AVX512F__
constexpr bool kWide = true;  // 32 vector registers of 16 floats: bigger blocks fit
#else
constexpr bool kWide = false;
#endif

// Y (M × padded(N), holding the bias) += X (M × K) · W (packed in format F; scale: int8's).
// Blocks of rows share each widened weight row; a block's accumulators must fit the registers.
template <typename F>
void gemm(const float* X, int ldx, int M, int K, const typename F::T* W, const float* scale,
          int N, float* Y, int ldy) {
  constexpr int kBlock = kWide ? 8 : 6;
  int panels = padded(N) / kPanel;
  int m = 0;
  for (; m + kBlock <= M; m += kBlock)
    rows<F, kBlock, kWide ? 2 : 1>(X + m * ldx, ldx, K, W, scale, panels, Y + m * ldy, ldy);
  const float* x = X + m * ldx;
  float* y = Y + m * ldy;
  switch (M - m) {
    case 1: rows<F, 1, 4>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 2: rows<F, 2, kWide ? 4 : 2>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 3: rows<F, 3, 2>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 4: rows<F, 4, kWide ? 2 : 1>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 5: rows<F, 5, kWide ? 2 : 1>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 6: rows<F, 6, 2>(x, ldx, K, W, scale, panels, y, ldy); break;
    case 7: rows<F, 7, 2>(x, ldx, K, W, scale, panels, y, ldy); break;
    default: break;
  }
}

}  // namespace

extern "C" {

// Both structures are declared again with ctypes in wavenet/native.py (Net, Run), which checks
// at load time that they agree with `wavenet_struct_layout` (at the end of this file).

// The network: sizes and packed weights (see the top of the file).
struct WavenetNet {
  int32_t layers, kernel_size, residual, gate, skip, params;
  int32_t continuous_input;  // 1: input projection of an amplitude; 0: embedding of a class
  int32_t mixtures;          // > 0: discretized logistic mixture output; 0: categorical
  int32_t format;            // of the packed weights: 0 fp32, 1 bf16, 2 int8
  float skip_scale, log_scale_min, levels;
  const int32_t* dilations;  // (layers,)
  const float* embed;        // (classes, R), or the input projection: weight (R,), bias (R,)
  const void* conv_w;        // per layer: packed (k·R, 2G), oldest tap's rows first
  const void* out_w;         // per layer: packed (G, R+S)
  const float* out_b;        // per layer: (padded(R+S),)
  const void* head1_w;       // packed (S, S)
  const float* head1_b;      // (padded(S),)
  const void* head2_w;       // packed (S, P)
  const float* head2_b;      // (padded(P),)
  const float* conv_s;       // int8: per layer, (padded(2G),) column scales; else unused
  const float* out_s;        // int8: per layer, (padded(R+S),)
  const float* head1_s;      // int8: (padded(S),)
  const float* head2_s;      // int8: (padded(P),)
};

// One call: `steps` steps for `batch` streams.
struct WavenetRun {
  int32_t batch, steps, threads;
  int64_t t;          // time index of the first input fed (the ring buffers' clock)
  float temperature;  // 0: greedy
  float* x;           // (B,) the input of step 0 (class or amplitude); left at the last sample
  float* ring;        // (B, ring_stride) all layers' ring buffers, time-major
  int64_t ring_stride;
  const float* bias;  // filter/gate input of stream b, step j, layer l:
  int64_t bias_b, bias_step;  // bias + b·bias_b + j·bias_step + l·2G
  const float* noise;  // uniforms of stream b, step j: noise + b·noise_b + j·noise_step
  int64_t noise_b, noise_step;
  float* out;  // sample of stream b, step j: out[b·out_b + j]
  int64_t out_b;
  float* params_out;  // optional: parameter c of stream b, step j: params_out[b·pb + c·pc + j]
  int64_t params_b, params_c;
  const float* forced;  // optional: teacher forcing, the input of stream b after step j is
  int64_t forced_b;     // forced[b·forced_b + j] instead of the sample drawn
};

}  // extern "C"

namespace {

// Inverse-CDF draw from softmax(logits / temperature): the first index whose running sum of
// exp(logit/T - max) exceeds u times the total (PyTorch's reference path does the same).
int draw_category(const float* logits, int n, float temperature, float u, float* cdf) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  if (temperature == 0.0f) return best;
  float top = logits[best] / temperature;
  float total = 0.0f;
  for (int i = 0; i < n; ++i) {
    total += std::exp(logits[i] / temperature - top);
    cdf[i] = total;
  }
  float target = u * total;
  int i = 0;
  while (i < n - 1 && cdf[i] <= target) ++i;
  return i;
}

float quantize(float a, float levels) {
  a = std::min(std::max(a, -1.0f), 1.0f);
  float level = std::nearbyint((a + 1.0f) / 2.0f * (levels - 1.0f));
  return level / (levels - 1.0f) * 2.0f - 1.0f;
}

float draw_mixture(const float* p, int k, float temperature, float log_scale_min, float levels,
                   const float* u, float* cdf) {
  int c = draw_category(p, k, temperature, u[0], cdf);
  float mean = p[k + c];
  if (temperature == 0.0f) return quantize(mean, levels);
  float log_scale = std::max(p[2 * k + c], log_scale_min);
  float v = std::min(std::max(u[1], 1e-5f), 1.0f - 1e-5f);
  return quantize(mean + std::exp(log_scale) * temperature * (std::log(v) - std::log1p(-v)),
                  levels);
}

template <typename F>
void run_streams(const WavenetNet& net, const WavenetRun& run, int b0, int b1) {
  using T = typename F::T;
  const int M = b1 - b0, L = net.layers, k = net.kernel_size, R = net.residual, G = net.gate,
            S = net.skip, P = net.params;
  const int KR = k * R, Z = padded(2 * G), O = padded(R + S), H = padded(S), PP = padded(P);
  std::vector<float> xcat(M * KR), z(M * Z), gated(M * G), o(M * O), skip(M * S), h(M * R),
      act(M * S), hidden(M * H), params(M * PP), cdf(P);
  std::vector<int64_t> ring_offset(L);
  int64_t offset = 0;
  for (int l = 0; l < L; ++l) {
    ring_offset[l] = offset;
    offset += static_cast<int64_t>(k - 1) * net.dilations[l] * R;
  }
  const float sqrt_half = 0.70710678118654752f;
  float* x = run.x + b0;
  for (int step = 0; step < run.steps; ++step) {
    const int64_t t = run.t + step;
    for (int m = 0; m < M; ++m) {
      if (net.continuous_input) {
        for (int c = 0; c < R; ++c) h[m * R + c] = net.embed[c] * x[m] + net.embed[R + c];
      } else {
        std::memcpy(&h[m * R], net.embed + static_cast<int64_t>(x[m]) * R, R * sizeof(float));
      }
    }
    std::fill(skip.begin(), skip.end(), 0.0f);
    const T* conv_w = static_cast<const T*>(net.conv_w);
    const T* out_w = static_cast<const T*>(net.out_w);
    const float* conv_s = net.conv_s;
    const float* out_s = net.out_s;
    for (int l = 0; l < L; ++l) {
      const int64_t d = net.dilations[l], span = (k - 1) * d;
      for (int m = 0; m < M; ++m) {
        float* ring = run.ring + (b0 + m) * run.ring_stride + ring_offset[l];
        float* row = &xcat[m * KR];
        for (int j = k - 1; j >= 1; --j) {
          int64_t slot = ((t - j * d) % span + span) % span;
          std::memcpy(row + (k - 1 - j) * R, ring + slot * R, R * sizeof(float));
        }
        std::memcpy(row + (k - 1) * R, &h[m * R], R * sizeof(float));
        std::memcpy(ring + (t % span) * R, &h[m * R], R * sizeof(float));
        const float* b = run.bias + (b0 + m) * run.bias_b + step * run.bias_step + l * 2 * G;
        std::memcpy(&z[m * Z], b, 2 * G * sizeof(float));
        std::fill(&z[m * Z] + 2 * G, &z[m * Z] + Z, 0.0f);
      }
      gemm<F>(xcat.data(), KR, M, KR, conv_w, conv_s, 2 * G, z.data(), Z);
      for (int m = 0; m < M; ++m) {
        const float* filt = &z[m * Z];
        const float* gate = filt + G;
        float* g = &gated[m * G];
        int c = 0;
        for (; c + 8 <= G; c += 8) store8(g + c, gate8(load8(filt + c), load8(gate + c)));
        if (c < G) {  // a tail of fewer than 8 channels
          float f8[8] = {}, g8[8] = {}, r8[8];
          std::memcpy(f8, filt + c, (G - c) * sizeof(float));
          std::memcpy(g8, gate + c, (G - c) * sizeof(float));
          store8(r8, gate8(load8(f8), load8(g8)));
          std::memcpy(g + c, r8, (G - c) * sizeof(float));
        }
        std::memcpy(&o[m * O], net.out_b + l * O, O * sizeof(float));
      }
      gemm<F>(gated.data(), G, M, G, out_w, out_s, R + S, o.data(), O);
      for (int m = 0; m < M; ++m) {
        const float* res = &o[m * O];
        for (int c = 0; c < R; ++c) h[m * R + c] = (h[m * R + c] + res[c]) * sqrt_half;
        for (int c = 0; c < S; ++c) skip[m * S + c] += res[R + c];
      }
      conv_w += Z / kPanel * F::panel_size(KR);
      out_w += O / kPanel * F::panel_size(G);
      if (conv_s != nullptr) conv_s += Z;
      if (out_s != nullptr) out_s += O;
    }
    for (int m = 0; m < M; ++m) {
      for (int c = 0; c < S; ++c) act[m * S + c] = std::max(skip[m * S + c] * net.skip_scale, 0.0f);
      std::memcpy(&hidden[m * H], net.head1_b, H * sizeof(float));
    }
    gemm<F>(act.data(), S, M, S, static_cast<const T*>(net.head1_w), net.head1_s, S,
            hidden.data(), H);
    for (int m = 0; m < M; ++m) {
      for (int c = 0; c < S; ++c) act[m * S + c] = std::max(hidden[m * H + c], 0.0f);
      std::memcpy(&params[m * PP], net.head2_b, PP * sizeof(float));
    }
    gemm<F>(act.data(), S, M, S, static_cast<const T*>(net.head2_w), net.head2_s, P,
            params.data(), PP);
    for (int m = 0; m < M; ++m) {
      const int64_t b = b0 + m;
      const float* p = &params[m * PP];
      const float* u = run.noise + b * run.noise_b + step * run.noise_step;
      float value = net.mixtures > 0
                        ? draw_mixture(p, net.mixtures, run.temperature, net.log_scale_min,
                                       net.levels, u, cdf.data())
                        : static_cast<float>(draw_category(p, P, run.temperature, u[0], cdf.data()));
      run.out[b * run.out_b + step] = value;
      x[m] = run.forced != nullptr ? run.forced[b * run.forced_b + step] : value;
      if (run.params_out != nullptr)
        for (int c = 0; c < P; ++c) run.params_out[b * run.params_b + c * run.params_c + step] = p[c];
    }
  }
}

template <typename F>
void run_all(const WavenetNet& net, const WavenetRun& run) {
  int threads = std::max(1, std::min(run.threads, run.batch));
  if (threads == 1) {
    run_streams<F>(net, run, 0, run.batch);
    return;
  }
  // Streams are independent, so each thread runs its share of them through all the steps: no
  // synchronization inside the loop.
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    int b0 = run.batch * i / threads, b1 = run.batch * (i + 1) / threads;
    pool.emplace_back(run_streams<F>, std::cref(net), std::cref(run), b0, b1);
  }
  for (auto& thread : pool) thread.join();
}

}  // namespace

// Returns 0, or -1 for an unknown weight format.
extern "C" int wavenet_run(const WavenetNet* net, const WavenetRun* run) {
  switch (net->format) {
    case 0: run_all<Fp32>(*net, *run); return 0;
    case 1: run_all<Bf16>(*net, *run); return 0;
    case 2: run_all<Int8>(*net, *run); return 0;
    default: return -1;
  }
}

extern "C" int wavenet_abi_version() { return 3; }

// The weight formats this build runs well, bit n for WavenetNet::format n.
extern "C" int wavenet_formats() { return kFormats; }

namespace {

// Offset, size and kind (0 integer, 1 floating point, 2 pointer) of a field.
template <typename T>
constexpr int64_t kind_of() {
  return std::is_pointer<T>::value ? 2 : std::is_floating_point<T>::value ? 1 : 0;
}
#define WAVENET_FIELD(S, f) \
  static_cast<int64_t>(offsetof(S, f)), static_cast<int64_t>(sizeof(S::f)), \
      kind_of<decltype(S::f)>()

// Every field of the two structures, in declaration order. A field added to a structure must
// be added here too, or the check below cannot see it.
constexpr int64_t kNetLayout[] = {
    WAVENET_FIELD(WavenetNet, layers),       WAVENET_FIELD(WavenetNet, kernel_size),
    WAVENET_FIELD(WavenetNet, residual),     WAVENET_FIELD(WavenetNet, gate),
    WAVENET_FIELD(WavenetNet, skip),         WAVENET_FIELD(WavenetNet, params),
    WAVENET_FIELD(WavenetNet, continuous_input), WAVENET_FIELD(WavenetNet, mixtures),
    WAVENET_FIELD(WavenetNet, format),       WAVENET_FIELD(WavenetNet, skip_scale),   WAVENET_FIELD(WavenetNet, log_scale_min),
    WAVENET_FIELD(WavenetNet, levels),       WAVENET_FIELD(WavenetNet, dilations),
    WAVENET_FIELD(WavenetNet, embed),        WAVENET_FIELD(WavenetNet, conv_w),
    WAVENET_FIELD(WavenetNet, out_w),        WAVENET_FIELD(WavenetNet, out_b),
    WAVENET_FIELD(WavenetNet, head1_w),      WAVENET_FIELD(WavenetNet, head1_b),
    WAVENET_FIELD(WavenetNet, head2_w),      WAVENET_FIELD(WavenetNet, head2_b),
    WAVENET_FIELD(WavenetNet, conv_s),       WAVENET_FIELD(WavenetNet, out_s),
    WAVENET_FIELD(WavenetNet, head1_s),      WAVENET_FIELD(WavenetNet, head2_s)};
constexpr int64_t kRunLayout[] = {
    WAVENET_FIELD(WavenetRun, batch),       WAVENET_FIELD(WavenetRun, steps),
    WAVENET_FIELD(WavenetRun, threads),     WAVENET_FIELD(WavenetRun, t),
    WAVENET_FIELD(WavenetRun, temperature), WAVENET_FIELD(WavenetRun, x),
    WAVENET_FIELD(WavenetRun, ring),        WAVENET_FIELD(WavenetRun, ring_stride),
    WAVENET_FIELD(WavenetRun, bias),        WAVENET_FIELD(WavenetRun, bias_b),
    WAVENET_FIELD(WavenetRun, bias_step),   WAVENET_FIELD(WavenetRun, noise),
    WAVENET_FIELD(WavenetRun, noise_b),     WAVENET_FIELD(WavenetRun, noise_step),
    WAVENET_FIELD(WavenetRun, out),         WAVENET_FIELD(WavenetRun, out_b),
    WAVENET_FIELD(WavenetRun, params_out),  WAVENET_FIELD(WavenetRun, params_b),
    WAVENET_FIELD(WavenetRun, params_c),    WAVENET_FIELD(WavenetRun, forced),
    WAVENET_FIELD(WavenetRun, forced_b)};
#undef WAVENET_FIELD

}  // namespace

// The layout of a structure shared with Python (which 0: WavenetNet, 1: WavenetRun), so that
// wavenet/native.py can refuse this library when its ctypes declarations differ: a field
// added, moved or retyped on one side only would otherwise be read as garbage, silently.
// Writes sizeof, then offset, size and kind of each field in declaration order, at most
// `capacity` numbers; returns the number of fields (-1 for an unknown structure).
extern "C" int wavenet_struct_layout(int which, int64_t* out, int capacity) {
  const int64_t* fields = which == 0 ? kNetLayout : which == 1 ? kRunLayout : nullptr;
  if (fields == nullptr) return -1;
  const int64_t n = which == 0 ? std::size(kNetLayout) : std::size(kRunLayout);
  const int64_t size = which == 0 ? sizeof(WavenetNet) : sizeof(WavenetRun);
  if (capacity > 0) out[0] = size;
  for (int64_t i = 0; i < n && i + 1 < capacity; ++i) out[i + 1] = fields[i];
  return static_cast<int>(n / 3);
}

// Y (M × padded(N), holding the bias) += X (M × K) · W (packed in `format`, with int8's column
// scales): the kernel alone, for the benchmark's floor (one matrix-vector product over all
// weights). Returns 0, or -1 for an unknown format.
extern "C" int wavenet_gemm(int format, const float* X, int ldx, int M, int K, const void* W,
                            const float* scale, int N, float* Y, int ldy) {
  switch (format) {
    case 0: gemm<Fp32>(X, ldx, M, K, static_cast<const float*>(W), scale, N, Y, ldy); return 0;
    case 1: gemm<Bf16>(X, ldx, M, K, static_cast<const uint32_t*>(W), scale, N, Y, ldy); return 0;
    case 2: gemm<Int8>(X, ldx, M, K, static_cast<const int8_t*>(W), scale, N, Y, ldy); return 0;
    default: return -1;
  }
}
