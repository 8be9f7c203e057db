#include "decode-attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "fp16-device-code.h"
#include "ort-api.h"

namespace genqueue {
namespace {

// The kernel, after kFp16DeviceCode and the #defines of DA_HEAD_SIZE and DA_GROUP: plain CUDA C++ without headers.
// Grid (rows · kv heads, slices), 256 threads. Lanes read keys in teams of D/8 (one 16-byte piece each), so a warp
// reads 32·8/D keys at once and the block kStreams; each team keeps an online softmax (running max, sum and
// weighted values) per query head of the group, merged over the warp by shuffles, over the block through shared
// memory, and over the slices by the last block of the (row, kv head) to finish (a counter, reset by it).
// Rotary: rotate-half over the first 2·rotaryHalf dims, rounded to fp16 as GroupQueryAttention's is.
constexpr const char* kKernelSource = R"CUDA(
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kD = DA_HEAD_SIZE;
constexpr int kG = DA_GROUP;
constexpr int kLanes = kD / 8;
constexpr int kPerWarp = 32 / kLanes;
constexpr int kStreams = kWarps * kPerWarp;
constexpr int kUnroll = 2;
constexpr float kLowest = -3.0e38f;

// As DecodeAttention::compute fills it (KernelParams there).
struct Params {
  const unsigned short* qkv;
  const unsigned short* cosCache;
  const unsigned short* sinCache;
  unsigned short* keys;
  unsigned short* values;
  unsigned short* out;
  float* partials;
  unsigned* counters;
  const int* seqlens;
  int kvHeads;
  int capacity;
  int rotaryHalf;
  int window;
  int slice;
  float scale;
};

__device__ __forceinline__ float rotated(const unsigned short* h, int d, const unsigned short* c, const unsigned short* s, int half) {
  const float x = halfToFloat(h[d]);
  if (d < half) return x * halfToFloat(c[d]) - halfToFloat(h[d + half]) * halfToFloat(s[d]);
  if (d < 2 * half) return x * halfToFloat(c[d - half]) + halfToFloat(h[d - half]) * halfToFloat(s[d - half]);
  return x;
}

// Sum over the lanes of one key's team.
__device__ __forceinline__ float teamSum(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Softmax states laid out [count][kG][kD + 2] (weighted values, then running max and sum), merged for value d of
// head g: the block's warps from shared memory, and the slices from global memory.
struct Merged {
  float top, sum, value;
};
template <typename States>
__device__ __forceinline__ Merged merge(States states, int count, int g, int d) {
  Merged r{kLowest, 0.f, 0.f};
  for (int s = 0; s < count; s++) r.top = fmaxf(r.top, states[(s * kG + g) * (kD + 2) + kD]);
  for (int s = 0; s < count; s++) {
    const int at = (s * kG + g) * (kD + 2);
    const float scale = expf(states[at + kD] - r.top);
    r.sum = fmaf(states[at + kD + 1], scale, r.sum);
    r.value = fmaf(states[at + d], scale, r.value);
  }
  return r;
}
__device__ __forceinline__ unsigned short normalized(const Merged& r) { return floatToHalf(r.sum > 0.f ? r.value / r.sum : 0.f); }

extern "C" __global__ void __launch_bounds__(256) decode_attention(const Params p) {
  __shared__ float q[kG][kD];
  __shared__ float merged[kWarps][kG][kD + 2];
  __shared__ int last;
  const int bh = blockIdx.x, slice = blockIdx.y, slices = gridDim.y;
  const int b = bh / p.kvHeads, kvh = bh - b * p.kvHeads;
  const int heads = p.kvHeads * kG;
  const unsigned short* row = p.qkv + static_cast<size_t>(b) * (heads + 2 * p.kvHeads) * kD;
  // A position outside the cache (a caller's error) attends to nothing and writes nothing: its output is zeros.
  const int given = p.seqlens[b];
  const bool inside = given >= 0 && given < p.capacity;
  const int pos = inside ? given : 0;
  const size_t cache = static_cast<size_t>(bh) * p.capacity * kD;
  const int first = slice * p.slice;
  int lo = first;
  const int hi = inside ? min(first + p.slice, pos + 1) : first;
  if (p.window > 0) lo = max(lo, pos + 1 - p.window);
  const unsigned short* cosRow = p.cosCache + static_cast<size_t>(pos) * p.rotaryHalf;
  const unsigned short* sinRow = p.sinCache + static_cast<size_t>(pos) * p.rotaryHalf;

  for (int i = threadIdx.x; i < kG * kD; i += kThreads) {
    const int g = i / kD, d = i - g * kD;
    q[g][d] = halfToFloat(floatToHalf(rotated(row + (kvh * kG + g) * kD, d, cosRow, sinRow, p.rotaryHalf)));
  }
  // The slice holding the new position appends its key and value before any of its threads reads them.
  if (inside && pos >= first && pos < first + p.slice) {
    for (int d = threadIdx.x; d < kD; d += kThreads) {
      p.keys[cache + static_cast<size_t>(pos) * kD + d] = floatToHalf(rotated(row + (heads + kvh) * kD, d, cosRow, sinRow, p.rotaryHalf));
      p.values[cache + static_cast<size_t>(pos) * kD + d] = row[(heads + p.kvHeads + kvh) * kD + d];
    }
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int team = lane / kLanes, piece = lane - team * kLanes;
  const int stream = warp * kPerWarp + team;
  float qf[kG][8], m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; g++) {
    m[g] = kLowest;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      qf[g][e] = q[g][piece * 8 + e] * p.scale;
      acc[g][e] = 0.f;
    }
  }
  // The loop's bounds are the block's, so every lane takes part in every shuffle.
  for (int base = lo; base < hi; base += kStreams * kUnroll) {
    unsigned kv[kUnroll][2][4];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int t = base + u * kStreams + stream;
      if (t < hi) {
        loadCoherent(p.keys + cache + static_cast<size_t>(t) * kD + piece * 8, kv[u][0]);
        loadCoherent(p.values + cache + static_cast<size_t>(t) * kD + piece * 8, kv[u][1]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; j++) kv[u][0][j] = kv[u][1][j] = 0u;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const bool valid = base + u * kStreams + stream < hi;
      float kf[8], vf[8];
      unpack(kv[u][0], kf);
      unpack(kv[u][1], vf);
#pragma unroll
      for (int g = 0; g < kG; g++) {
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) s = fmaf(qf[g][e], kf[e], s);
        s = teamSum(s);
        if (valid) {
          const float top = fmaxf(m[g], s);
          const float keep = expf(m[g] - top), weight = expf(s - top);
          l[g] = l[g] * keep + weight;
#pragma unroll
          for (int e = 0; e < 8; e++) acc[g][e] = fmaf(weight, vf[e], acc[g][e] * keep);
          m[g] = top;
        }
      }
    }
  }
  // The warp's teams merged into its first team.
#pragma unroll
  for (int offset = kLanes; offset < 32; offset <<= 1) {
#pragma unroll
    for (int g = 0; g < kG; g++) {
      const float otherMax = __shfl_xor_sync(0xffffffffu, m[g], offset);
      const float otherSum = __shfl_xor_sync(0xffffffffu, l[g], offset);
      const float top = fmaxf(m[g], otherMax);
      const float mine = expf(m[g] - top), theirs = expf(otherMax - top);
      l[g] = l[g] * mine + otherSum * theirs;
#pragma unroll
      for (int e = 0; e < 8; e++) acc[g][e] = acc[g][e] * mine + __shfl_xor_sync(0xffffffffu, acc[g][e], offset) * theirs;
      m[g] = top;
    }
  }
  if (team == 0) {
#pragma unroll
    for (int g = 0; g < kG; g++) {
#pragma unroll
      for (int e = 0; e < 8; e++) merged[warp][g][piece * 8 + e] = acc[g][e];
      if (piece == 0) {
        merged[warp][g][kD] = m[g];
        merged[warp][g][kD + 1] = l[g];
      }
    }
  }
  __syncthreads();

  unsigned short* out = p.out + static_cast<size_t>(b) * heads * kD + kvh * kG * kD;
  float* part = p.partials + (static_cast<size_t>(bh) * slices + slice) * kG * (kD + 2);
  for (int i = threadIdx.x; i < kG * kD; i += kThreads) {
    const int g = i / kD, d = i - g * kD;
    const Merged r = merge(&merged[0][0][0], kWarps, g, d);
    if (slices == 1) {
      out[g * kD + d] = normalized(r);
    } else {
      part[g * (kD + 2) + d] = r.value;
      if (d == 0) {
        part[g * (kD + 2) + kD] = r.top;
        part[g * (kD + 2) + kD + 1] = r.sum;
      }
    }
  }
  if (slices == 1) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&p.counters[bh], 1u) == static_cast<unsigned>(slices - 1) ? 1 : 0;
  __syncthreads();
  if (last == 0) return;
  __threadfence();
  const volatile float* parts = p.partials + static_cast<size_t>(bh) * slices * kG * (kD + 2);
  for (int i = threadIdx.x; i < kG * kD; i += kThreads) {
    const int g = i / kD, d = i - g * kD;
    out[g * kD + d] = normalized(merge(parts, slices, g, d));
  }
  if (threadIdx.x == 0) p.counters[bh] = 0;  // ready for the next layer (and the next replay of a captured graph)
}
)CUDA";

constexpr unsigned kThreads = 256;
constexpr int kUnroll = 2;  // as in the kernel

// The kernel's Params, byte for byte (nine pointers, then five ints and a float).
struct KernelParams {
  const void* qkv;
  const void* cosCache;
  const void* sinCache;
  void* keys;
  void* values;
  void* out;
  void* partials;
  void* counters;
  const void* seqlens;
  int32_t kvHeads;
  int32_t capacity;
  int32_t rotaryHalf;
  int32_t window;
  int32_t slice;
  float scale;
};

enum Input : size_t { kQkv, kPastKey, kPastValue, kSeqlens, kCos, kSin, kInputs };

// Keys the block reads in one pass of its loop: slices are about one pass long.
int64_t keysPerPass(int64_t headSize) { return int64_t{kThreads / 32} * (32 / (headSize / 8)) * kUnroll; }

size_t partialFloats(int64_t kvHeads, int64_t group, int64_t headSize) {
  return static_cast<size_t>(DecodeAttention::kMaxRows * kvHeads * DecodeAttention::kMaxSlices * group * (headSize + 2));
}

}  // namespace

DecodeAttention::Kernel::~Kernel() {
  if (scratch != nullptr) cudart.free(scratch);
}

DecodeAttention::DecodeAttention(const OrtApi* api, int deviceId) : OrtCustomOp{}, api_(api), deviceId_(deviceId) {
  setCudaCustomOpDefaults(*this);
  GetName = [](const OrtCustomOp*) { return "DecodeAttention"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return kInputs; };
  GetInputType = [](const OrtCustomOp*, size_t i) { return i == kSeqlens ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 3; };
  GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) -> OrtStatusPtr {
    try {
      *kernel = static_cast<const DecodeAttention*>(op)->createKernel(api, info);
      return nullptr;
    } catch (const std::exception& e) {
      return api->CreateStatus(ORT_FAIL, (std::string("DecodeAttention: ") + e.what()).c_str());
    }
  };
  setKernelCallbacks<Kernel>(*this);
}

DecodeAttention::Kernel* DecodeAttention::createKernel(const OrtApi* api, const OrtKernelInfo* info) const {
  const int64_t numHeads = intAttribute(api, info, "num_heads", 0);
  const int64_t kvHeads = intAttribute(api, info, "kv_num_heads", 0);
  // head_size: the packed qkv's width is unknown when a custom operator computes it (no shape inference there).
  const std::vector<int64_t> qkvShape = declaredShape(api, info, kQkv);
  const int64_t width = qkvShape.empty() ? -1 : qkvShape.back();
  const int64_t headSize = intAttribute(api, info, "head_size", width > 0 && numHeads + 2 * kvHeads > 0 ? width / (numHeads + 2 * kvHeads) : 0);
  if (numHeads <= 0 || kvHeads <= 0 || headSize <= 0 || (width > 0 && width != (numHeads + 2 * kvHeads) * headSize)) {
    throw std::invalid_argument("num_heads, kv_num_heads and head_size (or a packed qkv of a known width (num_heads + 2 · kv_num_heads) · head size) are required");
  }
  if (!fits(numHeads, kvHeads, headSize)) {
    throw std::invalid_argument("head size " + std::to_string(headSize) + " with " + std::to_string(numHeads) + " heads over " + std::to_string(kvHeads) +
                                " kv heads: the kernel takes head sizes 32, 64, 128, 256, at most " + std::to_string(kMaxGroup) + " heads per kv head and 48 KiB of shared memory");
  }
  const float scale = floatAttribute(api, info, "scale", 1.f / std::sqrt(static_cast<float>(headSize)));
  const int64_t window = intAttribute(api, info, "local_window_size", -1);
  const NvrtcModule* kernels = module(headSize, numHeads / kvHeads);
  const size_t bytes = sizeof(float) * partialFloats(kvHeads, numHeads / kvHeads, headSize) + sizeof(uint32_t) * kMaxRows * kvHeads;
  void* scratch = nullptr;
  cudart.check(cudart.malloc(&scratch, bytes), "DecodeAttention: cudaMalloc");
  auto* kernel = new Kernel{this, kernels, numHeads, kvHeads, headSize, window, scale, scratch};
  try {
    cudart.check(cudart.memset(scratch, 0, bytes), "DecodeAttention: cudaMemset");
  } catch (...) {
    delete kernel;
    throw;
  }
  return kernel;
}

const NvrtcModule* DecodeAttention::module(int64_t headSize, int64_t group) const {
  std::lock_guard<std::mutex> lock(compiling_);
  const std::string key = std::to_string(headSize) + "_" + std::to_string(group);
  std::unique_ptr<NvrtcModule>& slot = modules_[key];
  if (!slot) {
    cudart.load();
    cudart.check(cudart.setDevice(deviceId_), "cudaSetDevice");
    const std::string source = "#define DA_HEAD_SIZE " + std::to_string(headSize) + "\n#define DA_GROUP " + std::to_string(group) + "\n" + kFp16DeviceCode + kKernelSource;
    slot = std::make_unique<NvrtcModule>(source, "decode_attention.cu", deviceId_, std::vector<std::string>{"decode_attention"});
  }
  return slot.get();
}

void DecodeAttention::compute(const Kernel& kernel, OrtKernelContext* context) const {
  CustomOpContext c(api_, context, "DecodeAttention");
  const int64_t N = kernel.numHeads, KVH = kernel.kvHeads, D = kernel.headSize;
  const OrtValue* qkv = c.input(kQkv);
  const OrtValue* pastKey = c.input(kPastKey);
  const OrtValue* pastValue = c.input(kPastValue);
  const std::vector<int64_t> qkvDims = c.dims(qkv);
  const std::vector<int64_t> cacheDims = c.dims(pastKey);
  if (qkvDims.size() != 3 || qkvDims[1] != 1 || qkvDims[2] != (N + 2 * KVH) * D) c.fail("qkv must be [batch, 1, (num_heads + 2 · kv_num_heads) · head size]");
  const int64_t batch = qkvDims[0];
  if (batch > kMaxRows) c.fail(std::to_string(batch) + " rows: at most " + std::to_string(kMaxRows));
  if (cacheDims.size() != 4 || cacheDims[0] != batch || cacheDims[1] != KVH || cacheDims[3] != D || c.dims(pastValue) != cacheDims) {
    c.fail("past_key and past_value must be [batch, kv_num_heads, capacity, head size]");
  }
  if (c.dims(c.input(kSeqlens)) != std::vector<int64_t>{batch}) c.fail("seqlens_k must be [batch]");
  const std::vector<int64_t> cosDims = c.dims(c.input(kCos));
  if (cosDims.size() != 2 || c.dims(c.input(kSin)) != cosDims || cosDims[1] * 2 > D || cosDims[0] < cacheDims[2]) {
    c.fail("cos_cache and sin_cache must be [positions ≥ capacity, rotary dims / 2 ≤ head size / 2]");
  }
  OrtValue* out = c.output(0, {batch, 1, N * D});
  OrtValue* presentKey = c.output(1, cacheDims);
  OrtValue* presentValue = c.output(2, cacheDims);
  if (batch == 0) return;
  void* stream = c.stream();
  const size_t cacheBytes = sizeof(uint16_t) * batch * KVH * cacheDims[2] * D;
  // Bound in place by the device loop; otherwise the past is copied first.
  for (auto [from, to] : {std::pair{pastKey, presentKey}, std::pair{pastValue, presentValue}}) {
    if (c.data(from) != c.data(to)) {
      cudart.check(cudart.memcpyAsync(c.data(to), c.data(from), cacheBytes, CudaRuntime::kDeviceToDevice, stream), "DecodeAttention: cudaMemcpyAsync");
    }
  }
  const int64_t capacity = cacheDims[2];
  const int64_t slices = std::clamp<int64_t>((capacity + keysPerPass(D) - 1) / keysPerPass(D), 1, kMaxSlices);
  const int64_t slice = (capacity + slices - 1) / slices;
  const size_t counters = sizeof(float) * partialFloats(KVH, N / KVH, D);
  KernelParams params{c.data(qkv),
                      c.data(c.input(kCos)),
                      c.data(c.input(kSin)),
                      c.data(presentKey),
                      c.data(presentValue),
                      c.data(out),
                      kernel.scratch,
                      static_cast<char*>(kernel.scratch) + counters,
                      c.data(c.input(kSeqlens)),
                      static_cast<int32_t>(KVH),
                      static_cast<int32_t>(capacity),
                      static_cast<int32_t>(cosDims[1]),
                      static_cast<int32_t>(kernel.window),
                      static_cast<int32_t>(slice),
                      kernel.scale};
  for (const void* p : {params.keys, params.values}) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) c.fail("the caches must be 16-byte aligned");
  }
  void* args[] = {&params};
  kernel.module->launch(0, {static_cast<unsigned>(batch * KVH), static_cast<unsigned>(slices)}, kThreads, 0, stream, args);
}

}  // namespace genqueue
