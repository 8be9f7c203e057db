#include "small-batch-matmul.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "custom-op-context.h"
#include "fp16-device-code.h"

namespace genqueue {
namespace {

// The kernels. No headers: fp16 conversions and 16-byte loads are inline PTX. One warp per output column n reads
// B's row n (K contiguous halves) in 16-byte pieces and reuses each piece for all R rows of A; the warp's partial
// sums are reduced with shuffles, in a fixed order (deterministic). The _norm kernels layer-normalize A's rows on
// the way (see smallBatchMatMulNorm).
// (After kFp16DeviceCode.)
constexpr const char* kKernelSource = R"CUDA(
// Weights are read once per step: no L1 allocation (loadCached for A's rows, which every warp reads).
__device__ __forceinline__ void loadStreaming(const unsigned short* p, unsigned (&v)[4]) {
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

struct Epilogue {
  const unsigned short* bias;      // [n] or null
  const unsigned short* residual;  // [rows, n] or null
  int fastGelu;
};
// + bias, then ONNX Runtime's FastGelu (GPT-2's gelu_new), then + residual.
__device__ __forceinline__ float finish(float v, const Epilogue& e, int row, int n, int column) {
  if (e.bias != nullptr) v += halfToFloat(e.bias[column]);
  if (e.fastGelu) v = 0.5f * v * (1.f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
  if (e.residual != nullptr) v += halfToFloat(e.residual[static_cast<size_t>(row) * n + column]);
  return v;
}

// S warps share a column, each over K/S (long rows would otherwise be a chain of dependent loads per lane); their
// sums meet in shared memory, added in warp order.
template <int R, int S>
__device__ __forceinline__ void smallBatchMatMul(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b,
                                                 unsigned short* __restrict__ y, int rows, int n, int k, Epilogue e) {
  __shared__ float partial[S > 1 ? 32 : 1][R];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int column = blockIdx.x * ((blockDim.x >> 5) / S) + warp / S;
  const int slice = warp % S;
  const bool active = column < n;  // whole warps: column is per warp
  const int span = k / S;
  const unsigned short* weights = b + static_cast<size_t>(active ? column : 0) * k + slice * span;
  const unsigned short* x0 = a + slice * span;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
  if (active) {
#pragma unroll 4
    for (int i = lane * 8; i < span; i += 256) {
      unsigned wv[4];
      loadStreaming(weights + i, wv);
      float w[8];
      unpack(wv, w);
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (r < rows) {
          unsigned av[4];
          loadCached(x0 + static_cast<size_t>(r) * k + i, av);
          float x[8];
          unpack(av, x);
#pragma unroll
          for (int j = 0; j < 8; j++) acc[r] = fmaf(x[j], w[j], acc[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = warpSum(acc[r]);
  if (S > 1) {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; r++) partial[warp][r] = acc[r];
    }
    __syncthreads();
    if (slice != 0) return;
#pragma unroll
    for (int r = 0; r < R; r++) {
      acc[r] = partial[warp][r];
      for (int s2 = 1; s2 < S; s2++) acc[r] += partial[warp + s2][r];
    }
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (lane == 0 && r < rows) y[static_cast<size_t>(r) * n + column] = floatToHalf(finish(acc[r], e, r, n, column));
  }
}

// With the layer normalization of A's rows first. Each lane holds its C pieces of the weight row (issued first)
// and of A's row in registers; the row's mean and variance (fp32, as ONNX Runtime's) come from two warp sums
// over the same pieces, so a warp needs no shared memory and no block-wide barrier. K ≤ 256 * C.
template <int R, int C>
__device__ __forceinline__ void smallBatchMatMulNorm(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b,
                                                     unsigned short* __restrict__ y, int rows, int n, int k, Epilogue e,
                                                     const unsigned short* __restrict__ gamma, const unsigned short* __restrict__ beta,
                                                     float epsilon) {
  const int column = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (column >= n) return;
  const unsigned short* weights = b + static_cast<size_t>(column) * k;
  unsigned wv[C][4];
#pragma unroll
  for (int c = 0; c < C; c++) {
    const int i = (lane + 32 * c) * 8;
    if (i < k) loadStreaming(weights + i, wv[c]);
  }
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (r >= rows) break;
    float x[C][8];
    float sum = 0.f, squares = 0.f;
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int i = (lane + 32 * c) * 8;
      if (i < k) {
        unsigned av[4];
        loadCached(a + static_cast<size_t>(r) * k + i, av);
        unpack(av, x[c]);
#pragma unroll
        for (int j = 0; j < 8; j++) {
          sum += x[c][j];
          squares += x[c][j] * x[c][j];
        }
      }
    }
    sum = warpSum(sum);
    squares = warpSum(squares);
    const float mean = sum / k;
    const float rstd = rsqrtf(fmaxf(squares / k - mean * mean, 0.f) + epsilon);
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int i = (lane + 32 * c) * 8;
      if (i < k) {
        unsigned gv[4], bv[4];
        loadCached(gamma + i, gv);
        loadCached(beta + i, bv);
        float g[8], bt[8], w[8];
        unpack(gv, g);
        unpack(bv, bt);
        unpack(wv[c], w);
#pragma unroll
        for (int j = 0; j < 8; j++) acc[r] = fmaf((x[c][j] - mean) * rstd * g[j] + bt[j], w[j], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const float v = warpSum(acc[r]);
    if (lane == 0 && r < rows) y[static_cast<size_t>(r) * n + column] = floatToHalf(finish(v, e, r, n, column));
  }
}

#define GENQUEUE_SMALL_BATCH_KERNEL(R, S)                                                                          \
  extern "C" __global__ void __launch_bounds__(128) small_batch_matmul_##R##_##S(                                  \
      const unsigned short* a, const unsigned short* b, unsigned short* y, int rows, int n, int k,                 \
      const unsigned short* bias, const unsigned short* residual, int fastGelu) {                                  \
    smallBatchMatMul<R, S>(a, b, y, rows, n, k, Epilogue{bias, residual, fastGelu});                               \
  }
#define GENQUEUE_SMALL_BATCH_NORM_KERNEL(R, C)                                                                     \
  extern "C" __global__ void __launch_bounds__(128) small_batch_matmul_norm_##R##_##C(                             \
      const unsigned short* a, const unsigned short* b, unsigned short* y, int rows, int n, int k,                 \
      const unsigned short* bias, const unsigned short* residual, int fastGelu, const unsigned short* gamma,       \
      const unsigned short* beta, float epsilon) {                                                                 \
    smallBatchMatMulNorm<R, C>(a, b, y, rows, n, k, Epilogue{bias, residual, fastGelu}, gamma, beta, epsilon);     \
  }
GENQUEUE_SMALL_BATCH_KERNEL(1, 1)
GENQUEUE_SMALL_BATCH_KERNEL(2, 1)
GENQUEUE_SMALL_BATCH_KERNEL(1, 4)
GENQUEUE_SMALL_BATCH_KERNEL(2, 4)
GENQUEUE_SMALL_BATCH_NORM_KERNEL(1, 4)
GENQUEUE_SMALL_BATCH_NORM_KERNEL(2, 4)
GENQUEUE_SMALL_BATCH_NORM_KERNEL(1, 8)
GENQUEUE_SMALL_BATCH_NORM_KERNEL(2, 8)
)CUDA";

constexpr int kKernelRows[2] = {1, 2};
constexpr int kSplits[2] = {1, 4};      // warps per column
constexpr int kNormPieces[2] = {4, 8};  // 16-byte pieces of A's row per lane: K ≤ 1,024 or ≤ 2,048
constexpr unsigned kWarpsPerBlock = 4;
// From this K on, four warps share a column: GPT-2 small's MLP down-projection (K 3,072) took 8.5 us per call
// with one warp (12 dependent 16-byte loads per lane), its up-projection (K 768) 5.9 us (H100, ncu, no flush).
constexpr int64_t kSplitFromK = 2048;

// Kernel order: small_batch_matmul_R_S (S = 1, then 4; R = 1, 2), then small_batch_matmul_norm_R_C (C = 4, then 8).
std::vector<std::string> kernelNames() {
  std::vector<std::string> names;
  for (int split : kSplits) {
    for (int rows : kKernelRows) names.push_back("small_batch_matmul_" + std::to_string(rows) + "_" + std::to_string(split));
  }
  for (int pieces : kNormPieces) {
    for (int rows : kKernelRows) names.push_back("small_batch_matmul_norm_" + std::to_string(rows) + "_" + std::to_string(pieces));
  }
  return names;
}

enum Input : size_t { kA, kB, kBias, kResidual, kGamma, kBeta, kInputs };

}  // namespace

SmallBatchMatMul::SmallBatchMatMul(const OrtApi* api, int deviceId)
    : OrtCustomOp{}, api_(api), kernels_(std::string(kFp16DeviceCode) + kKernelSource, "small_batch_matmul.cu", deviceId, kernelNames()) {
  setCudaCustomOpDefaults(*this);
  GetName = [](const OrtCustomOp*) { return "SmallBatchMatMul"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return kInputs; };
  GetInputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  GetInputCharacteristic = [](const OrtCustomOp*, size_t i) { return i < kBias ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) -> OrtStatusPtr {
    // Optional attributes: absent means no activation and ONNX Runtime's default epsilon.
    int64_t fastGelu = 0;
    if (OrtStatus* missing = api->KernelInfoGetAttribute_int64(info, "fast_gelu", &fastGelu)) {
      api->ReleaseStatus(missing);
      fastGelu = 0;
    }
    float epsilon = 1e-5f;
    if (OrtStatus* missing = api->KernelInfoGetAttribute_float(info, "epsilon", &epsilon)) {
      api->ReleaseStatus(missing);
      epsilon = 1e-5f;
    }
    *kernel = new Kernel{static_cast<const SmallBatchMatMul*>(op), fastGelu != 0, epsilon};
    return nullptr;
  };
  setKernelCallbacks<Kernel>(*this);
}

void SmallBatchMatMul::compute(const Kernel& kernel, OrtKernelContext* context) const {
  CustomOpContext c(api_, context, "SmallBatchMatMul");
  const size_t given = c.inputCount();
  auto optional = [&](size_t i) { return i < given ? c.input(i) : nullptr; };
  const OrtValue* a = c.input(kA);
  const OrtValue* b = c.input(kB);
  std::vector<int64_t> shape = c.dims(a);
  const std::vector<int64_t> bDims = c.dims(b);
  if (shape.empty() || bDims.size() != 2 || bDims[1] != shape.back()) c.fail("A [..., K] and B [N, K] do not match");
  const int64_t k = bDims[1];
  const int64_t n = bDims[0];
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); i++) rows *= shape[i];
  shape.back() = n;
  if (rows > kMaxRows) c.fail(std::to_string(rows) + " rows: the small-batch step takes at most " + std::to_string(kMaxRows));
  if (k % 8 != 0) c.fail("K must be a multiple of 8 (16-byte weight loads)");
  const OrtValue* bias = optional(kBias);
  const OrtValue* residual = optional(kResidual);
  const OrtValue* gamma = optional(kGamma);
  const OrtValue* beta = optional(kBeta);
  if (bias != nullptr && c.dims(bias) != std::vector<int64_t>{n}) c.fail("bias must be [N]");
  if (residual != nullptr && c.dims(residual) != shape) c.fail("residual must have the output's shape");
  if ((gamma == nullptr) != (beta == nullptr)) c.fail("layer normalization needs both gamma and beta");
  if (gamma != nullptr && (c.dims(gamma) != std::vector<int64_t>{k} || c.dims(beta) != std::vector<int64_t>{k})) c.fail("gamma and beta must be [K]");
  OrtValue* y = c.output(0, shape);
  if (rows == 0 || n == 0) return;

  void* aData = c.data(a);
  void* bData = c.data(b);
  void* yData = c.data(y);
  if ((reinterpret_cast<uintptr_t>(aData) | reinterpret_cast<uintptr_t>(bData)) % 16 != 0) c.fail("A and B must be 16-byte aligned");
  void* biasData = bias != nullptr ? c.data(bias) : nullptr;
  void* residualData = residual != nullptr ? c.data(residual) : nullptr;
  int fastGelu = kernel.fastGelu ? 1 : 0;
  int rowsArg = static_cast<int>(rows), nArg = static_cast<int>(n), kArg = static_cast<int>(k);
  size_t which = 0;
  while (kKernelRows[which] < rows) which++;
  const unsigned blocks = static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  if (gamma == nullptr) {
    const bool split = k >= kSplitFromK && k % (8 * kSplits[1]) == 0;
    const unsigned columnsPerBlock = kWarpsPerBlock / (split ? kSplits[1] : 1);
    void* args[] = {&aData, &bData, &yData, &rowsArg, &nArg, &kArg, &biasData, &residualData, &fastGelu};
    kernels_.launch((split ? 2 : 0) + which, static_cast<unsigned>((n + columnsPerBlock - 1) / columnsPerBlock), 32 * kWarpsPerBlock, 0, c.stream(),
                    args);
    return;
  }
  size_t pieces = 0;
  while (pieces < 2 && 256 * kNormPieces[pieces] < k) pieces++;
  if (pieces == 2) c.fail("layer normalization in the projection needs K ≤ 2,048");
  void* gammaData = c.data(gamma);
  void* betaData = c.data(beta);
  float epsilon = kernel.epsilon;
  void* args[] = {&aData, &bData, &yData, &rowsArg, &nArg, &kArg, &biasData, &residualData, &fastGelu, &gammaData, &betaData, &epsilon};
  kernels_.launch(4 + 2 * pieces + which, blocks, 32 * kWarpsPerBlock, 0, c.stream(), args);
}

}  // namespace genqueue
