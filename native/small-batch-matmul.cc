#include "small-batch-matmul.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "fp16-device-code.h"
#include "ort-api.h"

namespace genqueue {
namespace {

// The kernel, after kFp16DeviceCode and the #defines of one Shape: plain CUDA C++ without headers (the test that runs
// it on the CPU reads it from this file). Weights are loaded with loadStreaming (read once per step), A's rows and
// the gains with loadCached (every team reads them).
//
// A team of SBMM_SPLIT warps computes SBMM_COLUMNS output columns for every row of A. Thread t of the team takes the
// 16-byte pieces t, t + team size, ... (SBMM_PIECES of them) of each of the team's weight rows, and the same pieces of
// A's rows, which it reuses for every column. All of a thread's weight loads are issued before anything waits for
// one, so many loads are in flight per SM. When A is normalized on the way, the team's threads hold A's whole row
// between them: the row's moments are a team sum, and the normalized pieces are rounded to fp16, as the regular
// step's normalization output is. Sums are reduced in a fixed order (warp shuffles, then the team's warps in order
// through shared memory), so results do not depend on timing.
constexpr const char* kKernelSource = R"CUDA(
constexpr int kWarps = 8;
constexpr int kSplit = SBMM_SPLIT;
constexpr int kColumns = SBMM_COLUMNS;
constexpr int kPieces = SBMM_PIECES;
constexpr int kWeightRows = SBMM_GLU ? 2 * kColumns : kColumns;
constexpr int kTeamThreads = 32 * kSplit;
constexpr int kTeams = kWarps / kSplit;

// As SmallBatchMatMul::compute fills it (KernelParams there).
struct Params {
  const unsigned short* a;
  const unsigned short* b;
  unsigned short* y;
  const unsigned short* bias;
  const unsigned short* residual;
  const unsigned short* gamma;
  const unsigned short* beta;
  int rows;
  int n;
  int k;
  int norm;  // 0: none, 1: layer normalization, 2: RMS normalization
  int fastGelu;
  float epsilon;
};

__device__ __forceinline__ void clear(unsigned (&v)[4]) {
  v[0] = 0u;
  v[1] = 0u;
  v[2] = 0u;
  v[3] = 0u;
}
__device__ __forceinline__ void pack(const float (&f)[8], unsigned (&v)[4]) {
#pragma unroll
  for (int i = 0; i < 4; i++) v[i] = static_cast<unsigned>(floatToHalf(f[2 * i])) | (static_cast<unsigned>(floatToHalf(f[2 * i + 1])) << 16);
}
__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <int R>
__device__ __forceinline__ void smallBatchMatMul(const Params& p) {
  __shared__ float moments[kWarps][R][2];
  __shared__ float partial[kWarps][kWeightRows][R];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int team = warp / kSplit;
  const int t = threadIdx.x - team * kTeamThreads;
  const int first = (blockIdx.x * kTeams + team) * kColumns;
  const int pieces = p.k >> 3;

  // Weight row i of the team: column first + i % kColumns; with SwiGLU, its gate row, then (i >= kColumns) its up row.
  unsigned w[kWeightRows][kPieces][4];
#pragma unroll
  for (int i = 0; i < kWeightRows; i++) {
    const int column = first + i % kColumns;
    const unsigned short* row = p.b + static_cast<size_t>(i < kColumns ? column : p.n + column) * p.k;
#pragma unroll
    for (int j = 0; j < kPieces; j++) {
      const int piece = t + j * kTeamThreads;
      if (column < p.n && piece < pieces) loadStreaming(row + piece * 8, w[i][j]);
      else clear(w[i][j]);
    }
  }
  unsigned x[R][kPieces][4];
#pragma unroll
  for (int r = 0; r < R; r++) {
#pragma unroll
    for (int j = 0; j < kPieces; j++) {
      const int piece = t + j * kTeamThreads;
      if (piece < pieces) loadCached(p.a + static_cast<size_t>(r) * p.k + piece * 8, x[r][j]);
      else clear(x[r][j]);
    }
  }

  if (p.norm != 0) {
    // The gains do not depend on the moments: their loads go out before the moments' barrier.
    unsigned g[kPieces][4], bt[kPieces][4];
#pragma unroll
    for (int j = 0; j < kPieces; j++) {
      const int piece = t + j * kTeamThreads;
      if (piece < pieces) loadCached(p.gamma + piece * 8, g[j]);
      else clear(g[j]);
      if (piece < pieces && p.norm == 1) loadCached(p.beta + piece * 8, bt[j]);
      else clear(bt[j]);
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      float sum = 0.f, squares = 0.f;
#pragma unroll
      for (int j = 0; j < kPieces; j++) {
        float f[8];
        unpack(x[r][j], f);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          sum += f[e];
          squares = fmaf(f[e], f[e], squares);
        }
      }
      sum = warpSum(sum);
      squares = warpSum(squares);
      if (lane == 0) {
        moments[warp][r][0] = sum;
        moments[warp][r][1] = squares;
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; r++) {
      float sum = 0.f, squares = 0.f;
#pragma unroll
      for (int s = 0; s < kSplit; s++) {
        sum += moments[team * kSplit + s][r][0];
        squares += moments[team * kSplit + s][r][1];
      }
      const float mean = p.norm == 1 ? sum / p.k : 0.f;
      const float rstd = rsqrtf(fmaxf(squares / p.k - mean * mean, 0.f) + p.epsilon);
#pragma unroll
      for (int j = 0; j < kPieces; j++) {
        float f[8], gf[8], bf[8];
        unpack(x[r][j], f);
        unpack(g[j], gf);
        unpack(bt[j], bf);
#pragma unroll
        for (int e = 0; e < 8; e++) f[e] = (f[e] - mean) * rstd * gf[e] + bf[e];
        pack(f, x[r][j]);
      }
    }
  }

  float acc[kWeightRows][R];
#pragma unroll
  for (int i = 0; i < kWeightRows; i++) {
#pragma unroll
    for (int r = 0; r < R; r++) acc[i][r] = 0.f;
  }
#pragma unroll
  for (int j = 0; j < kPieces; j++) {
    float xf[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) unpack(x[r][j], xf[r]);
#pragma unroll
    for (int i = 0; i < kWeightRows; i++) {
      float wf[8];
      unpack(w[i][j], wf);
#pragma unroll
      for (int r = 0; r < R; r++) {
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][r] = fmaf(xf[r][e], wf[e], acc[i][r]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kWeightRows; i++) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float v = warpSum(acc[i][r]);
      if (lane == 0) partial[warp][i][r] = v;
    }
  }
  __syncthreads();

  // The team's first warp finishes its columns: one lane per (column, row).
  if (warp != team * kSplit || lane >= kColumns * R) return;
  const int c = lane / R;
  const int r = lane - c * R;
  const int column = first + c;
  if (column >= p.n) return;
  float v = 0.f;
#pragma unroll
  for (int s = 0; s < kSplit; s++) v += partial[team * kSplit + s][c][r];
  if (p.bias != nullptr) v += halfToFloat(p.bias[column]);
  if constexpr (SBMM_GLU != 0) {
    float up = 0.f;
#pragma unroll
    for (int s = 0; s < kSplit; s++) up += partial[team * kSplit + s][kColumns + c][r];
    if (p.bias != nullptr) up += halfToFloat(p.bias[p.n + column]);
    v = v / (1.f + expf(-v)) * up;
  }
  if (p.fastGelu != 0) v = 0.5f * v * (1.f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
  if (p.residual != nullptr) v += halfToFloat(p.residual[static_cast<size_t>(r) * p.n + column]);
  p.y[static_cast<size_t>(r) * p.n + column] = floatToHalf(v);
}

extern "C" __global__ void __launch_bounds__(256, 2) small_batch_matmul_1(const Params p) { smallBatchMatMul<1>(p); }
extern "C" __global__ void __launch_bounds__(256, 2) small_batch_matmul_2(const Params p) { smallBatchMatMul<2>(p); }
)CUDA";

constexpr int kWarpsPerBlock = 8;
constexpr unsigned kThreadsPerBlock = 32 * kWarpsPerBlock;
constexpr int kMaxPieces = 8;
constexpr int kMaxWeightPieces = 16;  // weight rows × pieces per thread: 64 registers of loads in flight
constexpr int kWidestWeightPieces = 8;  // how far a grid of a few waves may widen its teams (see createKernel)

// The kernel's Params, byte for byte (pointers, then five ints and a float on both sides).
struct KernelParams {
  const void* a;
  const void* b;
  void* y;
  const void* bias;
  const void* residual;
  const void* gamma;
  const void* beta;
  int32_t rows;
  int32_t n;
  int32_t k;
  int32_t norm;
  int32_t fastGelu;
  float epsilon;
};
static_assert(sizeof(KernelParams) == 80, "KernelParams must match the kernel's Params");

bool powerOfTwoUpTo8(int64_t v) { return v == 1 || v == 2 || v == 4 || v == 8; }

int64_t weightPieces(const SmallBatchMatMul::Shape& s) { return int64_t{s.columns} * (s.swiglu ? 2 : 1) * s.pieces; }

int64_t blocksFor(int64_t n, const SmallBatchMatMul::Shape& s) {
  const int64_t columnsPerBlock = int64_t{s.columns} * (kWarpsPerBlock / s.split);
  return (n + columnsPerBlock - 1) / columnsPerBlock;
}

// The kernel shape for n output columns over rows of k values (createKernel may widen it once it knows the
// kernel's occupancy). A team is as wide as K allows (a power of two of warps, up to the whole block), so that
// each thread holds few pieces of a row; each thread then takes enough columns for about `loads` 16-byte weight
// loads in flight; fewer columns when that would leave fewer than two blocks per SM.
SmallBatchMatMul::Shape chooseShape(int64_t n, int64_t k, bool swiglu, int multiprocessors, int64_t split, int64_t columns, int64_t loads) {
  const int64_t pieces = k / 8;
  if (split == 0) {
    split = 1;
    while (split < kWarpsPerBlock && 32 * 2 * split <= pieces) split *= 2;
  }
  if (!powerOfTwoUpTo8(split)) throw std::invalid_argument("split must be 1, 2, 4 or 8");
  const int64_t teamThreads = 32 * split;
  const int64_t perThread = (pieces + teamThreads - 1) / teamThreads;
  if (perThread > kMaxPieces) {
    throw std::invalid_argument("K = " + std::to_string(k) + " is too long for split " + std::to_string(split) + " (at most " +
                                std::to_string(kMaxPieces * 8 * teamThreads) + ")");
  }
  const int64_t rowsPerColumn = swiglu ? 2 : 1;
  if (columns == 0) {
    columns = 1;
    while (columns < 8 && 2 * columns * perThread * rowsPerColumn <= loads) columns *= 2;
    const int64_t teams = kWarpsPerBlock / split;
    auto blocks = [&](int64_t c) { return (n + c * teams - 1) / (c * teams); };
    while (columns > 1 && blocks(columns) < 2 * static_cast<int64_t>(multiprocessors)) columns /= 2;
  }
  if (!powerOfTwoUpTo8(columns)) throw std::invalid_argument("columns must be 1, 2, 4 or 8");
  if (columns * rowsPerColumn * perThread > kMaxWeightPieces) {
    throw std::invalid_argument("columns " + std::to_string(columns) + " hold too many weight pieces per thread for K = " + std::to_string(k));
  }
  return {static_cast<int>(split), static_cast<int>(columns), static_cast<int>(perThread), swiglu};
}

std::string shapeKey(const SmallBatchMatMul::Shape& s) {
  return std::to_string(s.split) + "_" + std::to_string(s.columns) + "_" + std::to_string(s.pieces) + "_" + (s.swiglu ? "1" : "0");
}

std::string kernelSource(const SmallBatchMatMul::Shape& s) {
  return "#define SBMM_SPLIT " + std::to_string(s.split) + "\n#define SBMM_COLUMNS " + std::to_string(s.columns) + "\n#define SBMM_PIECES " +
         std::to_string(s.pieces) + "\n#define SBMM_GLU " + (s.swiglu ? "1" : "0") + "\n" + kFp16DeviceCode + kKernelSource;
}

// The 16-byte weight loads each thread aims to have in flight (chooseShape): at one row a step is bound by reading
// the weights, and the memory needs many requests outstanding per SM to stream at full speed
// (bench/results/llama1b-batch1-h200.json). GENQUEUE_SBMM_LOADS overrides it for measurements (4, 8 or 16).
int64_t loadsInFlight() {
  static const int64_t loads = [] {
    const char* text = std::getenv("GENQUEUE_SBMM_LOADS");
    const int64_t v = text != nullptr ? std::atoll(text) : 0;
    return v == 4 || v == 8 || v == 16 ? v : int64_t{8};
  }();
  return loads;
}

// Kernel i handles i + 1 rows.
const std::vector<std::string> kKernelNames = {"small_batch_matmul_1", "small_batch_matmul_2"};

enum Input : size_t { kA, kB, kBias, kResidual, kGamma, kBeta, kInputs };

}  // namespace

SmallBatchMatMul::SmallBatchMatMul(const OrtApi* api, int deviceId) : OrtCustomOp{}, api_(api), deviceId_(deviceId) {
  setCudaCustomOpDefaults(*this);
  GetName = [](const OrtCustomOp*) { return "SmallBatchMatMul"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return kInputs; };
  GetInputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  GetInputCharacteristic = [](const OrtCustomOp*, size_t i) { return i < kBias ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) -> OrtStatusPtr {
    try {
      *kernel = static_cast<const SmallBatchMatMul*>(op)->createKernel(api, info);
      return nullptr;
    } catch (const std::exception& e) {
      return api->CreateStatus(ORT_FAIL, (std::string("SmallBatchMatMul: ") + e.what()).c_str());
    }
  };
  setKernelCallbacks<Kernel>(*this);
}

SmallBatchMatMul::Kernel* SmallBatchMatMul::createKernel(const OrtApi* api, const OrtKernelInfo* info) const {
  const bool swiglu = intAttribute(api, info, "swiglu", 0) != 0;
  const std::vector<int64_t> b = declaredShape(api, info, kB);
  if (b.size() != 2 || b[0] <= 0 || b[1] <= 0) throw std::invalid_argument("B must be a [N, K] initializer with a known shape");
  if (b[1] % 8 != 0) throw std::invalid_argument("K must be a multiple of 8 (16-byte weight loads)");
  if (b[1] > kMaxK) throw std::invalid_argument("K = " + std::to_string(b[1]) + " is above " + std::to_string(kMaxK));
  if (swiglu && b[0] % 2 != 0) throw std::invalid_argument("with swiglu, B must hold gate and up rows: an even number of rows");
  const float epsilon = floatAttribute(api, info, "epsilon", 1e-5f);  // absent: ONNX Runtime's default
  const int64_t n = swiglu ? b[0] / 2 : b[0];
  const int64_t columns = intAttribute(api, info, "columns", 0);
  Shape shape = chooseShape(n, b[1], swiglu, multiprocessors(), intAttribute(api, info, "split", 0), columns, loadsInFlight());
  const NvrtcModule* kernels = module(shape);
  // A grid of a few waves (as many blocks per SM as the compiled kernel's registers allow) leaves most SMs idle
  // in its last one: when twice the columns per team would fit the grid into one wave, they are taken.
  const int64_t blocks = blocksFor(n, shape);
  const int64_t slots = residentSlots(*kernels, shape);
  if (columns == 0 && blocks > slots && blocks < 4 * slots && 2 * weightPieces(shape) <= kWidestWeightPieces) {
    Shape wider = shape;
    wider.columns *= 2;
    const NvrtcModule* widerKernels = module(wider);
    if (blocksFor(n, wider) <= residentSlots(*widerKernels, wider)) {
      shape = wider;
      kernels = widerKernels;
    }
  }
  return new Kernel{this, kernels, shape, intAttribute(api, info, "fast_gelu", 0) != 0, intAttribute(api, info, "rms_norm", 0) != 0, epsilon};
}

int64_t SmallBatchMatMul::residentSlots(const NvrtcModule& kernels, const Shape& shape) const {
  const int one = kernels.residentBlocks(0, kThreadsPerBlock);
  const int two = kernels.residentBlocks(1, kThreadsPerBlock);
  if (one == 0 || two == 0) throw std::runtime_error("the kernel of shape " + shapeKey(shape) + " cannot run blocks of " + std::to_string(kThreadsPerBlock) + " threads");
  return int64_t{one} * multiprocessors();
}

int SmallBatchMatMul::multiprocessors() const {
  std::lock_guard<std::mutex> lock(compiling_);
  if (multiprocessors_ == 0) {
    cudart.load();
    cudart.check(cudart.deviceGetAttribute(&multiprocessors_, CudaRuntime::kAttrMultiProcessorCount, deviceId_), "cudaDeviceGetAttribute");
  }
  return multiprocessors_;
}

const NvrtcModule* SmallBatchMatMul::module(const Shape& shape) const {
  std::lock_guard<std::mutex> lock(compiling_);
  std::unique_ptr<NvrtcModule>& slot = modules_[shapeKey(shape)];
  if (!slot) {
    cudart.load();
    cudart.check(cudart.setDevice(deviceId_), "cudaSetDevice");
    slot = std::make_unique<NvrtcModule>(kernelSource(shape), "small_batch_matmul.cu", deviceId_, kKernelNames);
  }
  return slot.get();
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
  const int64_t n = kernel.shape.swiglu ? bDims[0] / 2 : bDims[0];
  const Shape& s = kernel.shape;
  if (k % 8 != 0 || k / 8 > int64_t{32} * s.split * s.pieces) c.fail("B's shape differs from the one its kernel was made for");
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); i++) rows *= shape[i];
  shape.back() = n;
  if (rows > kMaxRows) c.fail(std::to_string(rows) + " rows: the small-batch step takes at most " + std::to_string(kMaxRows));
  const OrtValue* bias = optional(kBias);
  const OrtValue* residual = optional(kResidual);
  const OrtValue* gamma = optional(kGamma);
  const OrtValue* beta = optional(kBeta);
  if (bias != nullptr && c.dims(bias) != std::vector<int64_t>{bDims[0]}) c.fail("bias must have one value per row of B");
  if (residual != nullptr && c.dims(residual) != shape) c.fail("residual must have the output's shape");
  if (kernel.rmsNorm && (gamma == nullptr || beta != nullptr)) c.fail("rms_norm takes gamma and no beta");
  if (!kernel.rmsNorm && (gamma == nullptr) != (beta == nullptr)) c.fail("layer normalization needs both gamma and beta");
  for (const OrtValue* gain : {gamma, beta}) {
    if (gain != nullptr && c.dims(gain) != std::vector<int64_t>{k}) c.fail("gamma and beta must be [K]");
  }
  OrtValue* y = c.output(0, shape);
  if (rows == 0 || n == 0) return;

  KernelParams params{c.data(a), c.data(b), c.data(y),
                      bias != nullptr ? c.data(bias) : nullptr,
                      residual != nullptr ? c.data(residual) : nullptr,
                      gamma != nullptr ? c.data(gamma) : nullptr,
                      beta != nullptr ? c.data(beta) : nullptr,
                      static_cast<int32_t>(rows),
                      static_cast<int32_t>(n),
                      static_cast<int32_t>(k),
                      gamma == nullptr ? 0 : kernel.rmsNorm ? 2 : 1,
                      kernel.fastGelu ? 1 : 0,
                      kernel.epsilon};
  // 16-byte loads of A, B and the gains.
  for (const void* p : {params.a, params.b, params.gamma, params.beta}) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) c.fail("A, B, gamma and beta must be 16-byte aligned");
  }
  void* args[] = {&params};
  kernel.module->launch(static_cast<size_t>(rows - 1), static_cast<unsigned>(blocksFor(n, s)), kThreadsPerBlock, 0, c.stream(), args);
}

}  // namespace genqueue
