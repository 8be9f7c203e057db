#include "next-token.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "fp16-device-code.h"
#include "next-token-rules.h"

namespace genqueue {
namespace {

using namespace rules;

// The device spellings of the host helpers in next-token-rules.h, before its shared text.
constexpr const char* kDevicePrelude = R"CUDA(
typedef unsigned int gq_u32;
typedef unsigned long long gq_u64;
#define GQ_FN __device__ __forceinline__
GQ_FN float gq_mul(float a, float b) { return __fmul_rn(a, b); }
GQ_FN float gq_add(float a, float b) { return __fadd_rn(a, b); }
GQ_FN float gq_sub(float a, float b) { return __fsub_rn(a, b); }
GQ_FN float gq_div(float a, float b) { return __fdiv_rn(a, b); }
GQ_FN gq_u32 gq_float_bits(float f) { return __float_as_uint(f); }
GQ_FN float gq_neg_inf() { return __int_as_float(0xff800000); }
GQ_FN gq_u64 gq_mulhi64(gq_u64 a, gq_u64 b) { return __umul64hi(a, b); }
)CUDA";

// One block per row (after kFp16DeviceCode, the prelude and the rules). The block-wide steps mirror cpuRow() below;
// whatever they sum is an integer, and every choice (argmax, histogram bucket, draw) is made by one thread in a
// fixed order, so the result does not depend on the thread layout.
constexpr const char* kKernelSource = R"CUDA(
#define GQ_FIELDS 8
#define GQ_PARAMS 3
struct GqEos {
  long long ids[16];
  int count;
};
struct GqBest {
  float value;
  int index;  // -1: none yet
};
__device__ __forceinline__ void gqConsider(GqBest& best, float value, int index) {
  if (index < 0) return;
  if (best.index < 0 || value > best.value || (value == best.value && index < best.index)) {
    best.value = value;
    best.index = index;
  }
}
__device__ __forceinline__ GqBest gqWarpBest(GqBest best) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    GqBest other{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.index, offset)};
    gqConsider(best, other.value, other.index);
  }
  return best;
}
// The block's best, in every thread.
__device__ GqBest gqBlockBest(GqBest best) {
  __shared__ GqBest warps[32];
  __shared__ GqBest result;
  best = gqWarpBest(best);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) warps[warp] = best;
  __syncthreads();
  if (warp == 0) {
    best = gqWarpBest(lane < (int)(blockDim.x >> 5) ? warps[lane] : GqBest{0.f, -1});
    if (lane == 0) result = best;
  }
  __syncthreads();
  return result;
}
// Inclusive scan of v over the block (exact: integers); the block's total in *total.
__device__ gq_u64 gqBlockScan(gq_u64 v, gq_u64* total) {
  __shared__ gq_u64 warps[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const gq_u64 other = __shfl_up_sync(0xffffffffu, v, offset);
    if (lane >= offset) v += other;
  }
  if (lane == 31) warps[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int count = blockDim.x >> 5;
    gq_u64 w = lane < count ? warps[lane] : 0ull;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const gq_u64 other = __shfl_up_sync(0xffffffffu, w, offset);
      if (lane >= offset) w += other;
    }
    if (lane < count) warps[lane] = w;
  }
  __syncthreads();
  const gq_u64 inclusive = v + (warp > 0 ? warps[warp - 1] : 0ull);
  *total = warps[(blockDim.x >> 5) - 1];
  __syncthreads();
  return inclusive;
}
__device__ __forceinline__ bool gqIsEos(const GqEos& eos, long long token) {
  for (int i = 0; i < eos.count; i++)
    if (eos.ids[i] == token) return true;
  return false;
}
// The k-th largest key of x (with multiplicity): four passes of 8-bit histograms, most significant digit first.
__device__ gq_u32 gqKthLargestKey(const float* x, int n, long long k) {
  __shared__ unsigned hist[256];
  __shared__ unsigned picked[2];
  gq_u32 prefix = 0, mask = 0;
  long long remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const gq_u32 key = gq_key(x[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long before = 0;
      unsigned chosen = 0;
      for (int bucket = 255; bucket >= 0; bucket--) {
        if (before + hist[bucket] >= remaining) {
          chosen = bucket;
          break;
        }
        before += hist[bucket];
      }
      picked[0] = chosen;
      picked[1] = (unsigned)before;
    }
    __syncthreads();
    prefix |= picked[0] << shift;
    remaining -= picked[1];
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}
// The smallest weight that top_p keeps: the weight of the token at which the mass, counted from the largest
// weight down, first reaches target.
__device__ gq_u32 gqNucleusThreshold(const gq_u32* w, int n, double target) {
  __shared__ gq_u64 hist[256];
  __shared__ unsigned picked;
  __shared__ gq_u64 aboveShared;
  gq_u32 prefix = 0, mask = 0;
  if (threadIdx.x == 0) aboveShared = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const gq_u32 v = w[i];
      if ((v & mask) == prefix && v != 0u) atomicAdd(&hist[(v >> shift) & 255u], (gq_u64)v);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      gq_u64 above = aboveShared;
      unsigned chosen = 0;
      for (int bucket = 255; bucket >= 0; bucket--) {
        if ((double)(above + hist[bucket]) >= target) {
          chosen = bucket;
          break;
        }
        above += hist[bucket];
      }
      picked = chosen;
      aboveShared = above;
    }
    __syncthreads();
    prefix |= picked << shift;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

extern "C" __global__ void __launch_bounds__(1024) next_token(
    const unsigned short* logits, long long* state, const float* params, gq_u32* history, int words, int* ring, int ringRows,
    const long long* counter, long long* tokensOut, long long* positionsOut, int* seqlensOut, int rows, int vocab, GqEos eos,
    float* scratch) {
  const int b = blockIdx.x;
  long long* st = state + (long long)b * GQ_FIELDS;
  __shared__ long long s[GQ_FIELDS];
  __shared__ int chosen;
  if (threadIdx.x < GQ_FIELDS) s[threadIdx.x] = st[threadIdx.x];
  if (threadIdx.x == 0) chosen = -1;
  __syncthreads();
  const int ringRow = (int)(counter[0] % ringRows);
  if (s[6] != GQ_RUNNING) {
    if (threadIdx.x == 0) {
      ring[(long long)ringRow * rows + b] = -1;
      tokensOut[b] = s[0];
      positionsOut[b] = s[1];
      seqlensOut[b] = (int)s[1];
    }
    return;
  }
  const long long n = s[1] + 1;
  const bool suppress = n < s[3];
  const float temperature = params[b * GQ_PARAMS + 0], topP = params[b * GQ_PARAMS + 1], penalty = params[b * GQ_PARAMS + 2];
  const bool sample = s[7] != 0 && s[5] != 1;
  const unsigned short* row = logits + (long long)b * vocab;
  const gq_u32* seen = history + (long long)b * words;
  float* x = scratch + (long long)b * vocab;
  GqBest best{0.f, -1};
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    float v = gq_clean(halfToFloat(row[i]));
    if (penalty != 1.f && ((seen[i >> 5] >> (i & 31)) & 1u)) v = gq_penalize(v, penalty);
    if (suppress && gqIsEos(eos, i)) v = gq_neg_inf();
    if (sample) {
      v = gq_div(v, temperature);
      x[i] = v;
    }
    gqConsider(best, v, i);
  }
  best = gqBlockBest(best);
  if (sample) {
    const long long topK = s[5];
    const bool cutK = topK > 0 && topK < vocab;
    const gq_u32 kth = cutK ? gqKthLargestKey(x, vocab, topK) : 0u;
    gq_u32* w = (gq_u32*)x;
    gq_u64 mass = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i];
      const gq_u32 weight = cutK && gq_key(v) < kth ? 0u : gq_weight(gq_sub(best.value, v));
      w[i] = weight;
      mass += weight;
    }
    gq_u64 total = 0;
    gqBlockScan(mass, &total);
    gq_u32 tau = 1u;
    if (topP < 1.f) {
      tau = gqNucleusThreshold(w, vocab, (double)topP * (double)total);
      if (tau == 0u) tau = 1u;
    }
    // Contiguous segments per thread, so that the scan's order is index order.
    const int per = (vocab + blockDim.x - 1) / blockDim.x;
    const int lo = min(vocab, (int)threadIdx.x * per), hi = min(vocab, lo + per);
    gq_u64 segment = 0;
    for (int i = lo; i < hi; i++)
      if (w[i] >= tau) segment += w[i];
    gq_u64 kept = 0;
    const gq_u64 before = gqBlockScan(segment, &kept) - segment;
    if (kept > 0) {
      const gq_u64 r = gq_mulhi64(gq_draw((gq_u64)s[4], (gq_u64)n), kept);
      if (segment > 0 && before <= r && r < before + segment) {
        gq_u64 acc = before;
        for (int i = lo; i < hi; i++) {
          if (w[i] < tau) continue;
          acc += w[i];
          if (acc > r) {
            chosen = i;
            break;
          }
        }
      }
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const long long token = chosen >= 0 ? chosen : (best.index >= 0 ? best.index : 0);
  const int status = gq_status_after(gqIsEos(eos, token), n, s[3], s[2]);
  ring[(long long)ringRow * rows + b] = (int)token;
  history[(long long)b * words + (token >> 5)] |= 1u << (token & 31);
  if (status == GQ_RUNNING) {
    st[0] = token;
    st[1] = n;
  }
  st[6] = status;
  tokensOut[b] = st[0];
  positionsOut[b] = st[1];
  seqlensOut[b] = (int)st[1];
}

extern "C" __global__ void next_token_count(long long* counter) { counter[0] += 1; }
)CUDA";

constexpr unsigned kThreads = 1024;

struct Eos {  // as GqEos in the kernel
  long long ids[NextToken::kMaxEos];
  int32_t count;
};

float halfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    int e = -1;
    do {
      e++;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <ONNXTensorElementDataType Logits>
ONNXTensorElementDataType inputType(const OrtCustomOp*, size_t i) {
  static const ONNXTensorElementDataType types[] = {Logits, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64};
  return types[i];
}

bool isEos(const std::vector<int64_t>& eos, int64_t token) { return std::find(eos.begin(), eos.end(), token) != eos.end(); }

// The k-th largest key of x, with multiplicity (gqKthLargestKey).
uint32_t kthLargestKey(const float* x, int64_t n, int64_t k) {
  uint32_t prefix = 0, mask = 0;
  int64_t remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    uint32_t hist[256] = {};
    for (int64_t i = 0; i < n; i++) {
      const uint32_t key = gq_key(x[i]);
      if ((key & mask) == prefix) hist[(key >> shift) & 255u]++;
    }
    int64_t before = 0;
    uint32_t chosen = 0;
    for (int bucket = 255; bucket >= 0; bucket--) {
      if (before + hist[bucket] >= remaining) {
        chosen = bucket;
        break;
      }
      before += hist[bucket];
    }
    prefix |= chosen << shift;
    remaining -= before;
    mask |= 255u << shift;
  }
  return prefix;
}

// The smallest weight top_p keeps (gqNucleusThreshold).
uint32_t nucleusThreshold(const uint32_t* w, int64_t n, double target) {
  uint32_t prefix = 0, mask = 0;
  uint64_t above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    uint64_t hist[256] = {};
    for (int64_t i = 0; i < n; i++) {
      if ((w[i] & mask) == prefix && w[i] != 0) hist[(w[i] >> shift) & 255u] += w[i];
    }
    uint32_t chosen = 0;
    for (int bucket = 255; bucket >= 0; bucket--) {
      if (static_cast<double>(above + hist[bucket]) >= target) {
        chosen = bucket;
        break;
      }
      above += hist[bucket];
    }
    prefix |= chosen << shift;
    mask |= 255u << shift;
  }
  return prefix;
}

// The token for one running row: the kernel's steps, one after another.
template <typename Logit>
int64_t cpuToken(const Logit* row, int64_t vocab, const int64_t* s, const float* p, const uint32_t* seen, const std::vector<int64_t>& eos,
                 std::vector<float>& x) {
  const int64_t n = s[kPosition] + 1;
  const bool suppress = n < s[kMin];
  const float temperature = p[kTemperature], topP = p[kTopP], penalty = p[kRepetitionPenalty];
  const bool sample = s[kSample] != 0 && s[kTopK] != 1;
  x.resize(vocab);
  float bestValue = 0.f;
  int64_t best = -1;
  for (int64_t i = 0; i < vocab; i++) {
    float v;
    if constexpr (sizeof(Logit) == 2) v = gq_clean(halfBitsToFloat(row[i]));
    else v = gq_clean(row[i]);
    if (penalty != 1.f && ((seen[i >> 5] >> (i & 31)) & 1u)) v = gq_penalize(v, penalty);
    if (suppress && isEos(eos, i)) v = gq_neg_inf();
    if (sample) v = gq_div(v, temperature);
    x[i] = v;
    if (best < 0 || v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  if (!sample) return best;
  const int64_t topK = s[kTopK];
  const bool cutK = topK > 0 && topK < vocab;
  const uint32_t kth = cutK ? kthLargestKey(x.data(), vocab, topK) : 0u;
  std::vector<uint32_t> w(vocab);
  uint64_t total = 0;
  for (int64_t i = 0; i < vocab; i++) {
    w[i] = cutK && gq_key(x[i]) < kth ? 0u : gq_weight(gq_sub(bestValue, x[i]));
    total += w[i];
  }
  uint32_t tau = 1;
  if (topP < 1.f) tau = std::max<uint32_t>(1, nucleusThreshold(w.data(), vocab, static_cast<double>(topP) * static_cast<double>(total)));
  uint64_t kept = 0;
  for (int64_t i = 0; i < vocab; i++)
    if (w[i] >= tau) kept += w[i];
  if (kept == 0) return best;
  const uint64_t r = gq_mulhi64(gq_draw(static_cast<uint64_t>(s[kSeed]), static_cast<uint64_t>(n)), kept);
  uint64_t acc = 0;
  for (int64_t i = 0; i < vocab; i++) {
    if (w[i] < tau) continue;
    acc += w[i];
    if (acc > r) return i;
  }
  return best;  // unreachable: acc reaches kept > r
}

}  // namespace

NextToken::NextToken(const OrtApi* api, bool cuda, int deviceId) : OrtCustomOp{}, api_(api), cuda_(cuda) {
  if (cuda) {
    kernels_ = std::make_unique<NvrtcModule>(std::string(kFp16DeviceCode) + kDevicePrelude + kNextTokenRulesSource + kKernelSource, "next_token.cu",
                                             deviceId, std::vector<std::string>{"next_token", "next_token_count"});
    setCudaCustomOpDefaults(*this);
  } else {
    setCudaCustomOpDefaults(*this);
    GetExecutionProviderType = [](const OrtCustomOp*) { return "CPUExecutionProvider"; };
  }
  GetName = [](const OrtCustomOp*) { return "NextToken"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 6; };
  // The CPU kernel takes float and float16 logits (UNDEFINED: any type, checked in compute).
  GetInputType = cuda ? inputType<ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16> : inputType<ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED>;
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 7; };
  GetOutputType = [](const OrtCustomOp*, size_t i) {
    static const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64};
    return types[i];
  };
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) -> OrtStatusPtr {
    size_t count = 0;
    if (OrtStatus* status = api->KernelInfoGetAttributeArray_int64(info, "eos_token_ids", nullptr, &count)) return status;
    std::vector<int64_t> eos(count);
    if (count > 0) {
      if (OrtStatus* status = api->KernelInfoGetAttributeArray_int64(info, "eos_token_ids", eos.data(), &count)) return status;
    }
    if (eos.size() > kMaxEos) return api->CreateStatus(ORT_INVALID_ARGUMENT, "NextToken: at most 16 eos_token_ids");
    *kernel = new Kernel{static_cast<const NextToken*>(op), std::move(eos)};
    return nullptr;
  };
  setKernelCallbacks<Kernel>(*this);
}

NextToken::~NextToken() {
  if (scratch_ != nullptr) cudart.free(scratch_);
}

void NextToken::compute(const Kernel& kernel, OrtKernelContext* context) const {
  CustomOpContext c(api_, context, "NextToken");
  const OrtValue* logits = c.input(0);
  const std::vector<int64_t> logitsDims = c.dims(logits), stateDims = c.dims(c.input(1)), paramsDims = c.dims(c.input(2)),
                             historyDims = c.dims(c.input(3)), ringDims = c.dims(c.input(4));
  if (stateDims.size() != 2 || stateDims[1] != kStateFields) c.fail("state must be [rows, 8]");
  const int64_t rows = stateDims[0];
  if (logitsDims.size() < 2 || logitsDims[0] != rows || (logitsDims.size() == 3 && logitsDims[1] != 1) || logitsDims.size() > 3) {
    c.fail("logits must be [rows, 1, vocab] with the state's rows");
  }
  const int64_t vocab = logitsDims.back();
  if (paramsDims != std::vector<int64_t>{rows, kParams}) c.fail("params must be [rows, 3]");
  if (historyDims.size() != 2 || historyDims[0] != rows || historyDims[1] * 32 < vocab) c.fail("history must be [rows, ceil(vocab / 32)] or wider");
  if (ringDims.size() != 2 || ringDims[1] != rows || ringDims[0] < 1) c.fail("ring must be [K, rows]");
  if (c.dims(c.input(5)) != std::vector<int64_t>{1}) c.fail("counter must be [1]");
  const int64_t words = historyDims[1], ringRows = ringDims[0];
  OrtValue* tokensOut = c.output(0, {rows, 1});
  OrtValue* positionsOut = c.output(1, {rows, 1});
  OrtValue* seqlensOut = c.output(2, {rows});
  OrtValue* stateOut = c.output(3, stateDims);
  OrtValue* historyOut = c.output(4, historyDims);
  OrtValue* ringOut = c.output(5, ringDims);
  OrtValue* counterOut = c.output(6, {1});
  // In place when the slot loop binds each output to its input's buffer; otherwise the output starts as a copy.
  const std::pair<const OrtValue*, OrtValue*> carried[] = {{c.input(1), stateOut}, {c.input(3), historyOut}, {c.input(4), ringOut}, {c.input(5), counterOut}};
  const size_t carriedBytes[] = {sizeof(int64_t) * rows * kStateFields, sizeof(int32_t) * rows * words, sizeof(int32_t) * ringRows * rows, sizeof(int64_t)};
  void* stream = cuda_ ? c.stream() : nullptr;
  for (size_t i = 0; i < 4; i++) {
    void* from = c.data(carried[i].first);
    void* to = c.data(carried[i].second);
    if (from == to) continue;
    if (cuda_) cudart.check(cudart.memcpyAsync(to, from, carriedBytes[i], CudaRuntime::kDeviceToDevice, stream), "NextToken: cudaMemcpyAsync");
    else std::memcpy(to, from, carriedBytes[i]);
  }
  auto* state = static_cast<int64_t*>(c.data(stateOut));
  const auto* params = static_cast<const float*>(c.data(c.input(2)));
  auto* history = static_cast<uint32_t*>(c.data(historyOut));
  auto* ring = static_cast<int32_t*>(c.data(ringOut));
  auto* counter = static_cast<int64_t*>(c.data(counterOut));
  auto* tokens = static_cast<int64_t*>(c.data(tokensOut));
  auto* positions = static_cast<int64_t*>(c.data(positionsOut));
  auto* seqlens = static_cast<int32_t*>(c.data(seqlensOut));

  if (cuda_) {
    std::lock_guard<std::mutex> lock(scratchLock_);
    const size_t bytes = sizeof(float) * rows * vocab;
    if (scratchBytes_ < bytes) {
      if (scratch_ != nullptr) cudart.free(scratch_);
      scratch_ = nullptr;
      scratchBytes_ = 0;
      cudart.check(cudart.malloc(&scratch_, bytes), "NextToken: cudaMalloc");
      scratchBytes_ = bytes;
    }
    Eos eos{};
    eos.count = static_cast<int32_t>(kernel.eos.size());
    std::copy(kernel.eos.begin(), kernel.eos.end(), eos.ids);
    const void* logitsData = c.data(logits);
    int wordsArg = static_cast<int>(words), ringRowsArg = static_cast<int>(ringRows), rowsArg = static_cast<int>(rows), vocabArg = static_cast<int>(vocab);
    void* scratch = scratch_;
    void* args[] = {&logitsData, &state, &params, &history, &wordsArg, &ring, &ringRowsArg, &counter, &tokens, &positions, &seqlens, &rowsArg, &vocabArg, &eos, &scratch};
    kernels_->launch(0, static_cast<unsigned>(rows), kThreads, 0, stream, args);
    void* countArgs[] = {&counter};
    kernels_->launch(1, 1, 1, 0, stream, countArgs);
    return;
  }

  OrtTensorTypeAndShapeInfo* info = nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  OrtStatus* failed = api_->GetTensorTypeAndShape(logits, &info);
  if (failed == nullptr) {
    failed = api_->GetTensorElementType(info, &type);
    api_->ReleaseTensorTypeAndShapeInfo(info);
  }
  if (failed != nullptr) {
    api_->ReleaseStatus(failed);
    c.fail("cannot read the logits' type");
  }
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) c.fail("logits must be float or float16");
  const void* logitsData = c.data(logits);
  const int64_t ringRow = counter[0] % ringRows;
  std::vector<float> work;
  for (int64_t b = 0; b < rows; b++) {
    int64_t* s = state + b * kStateFields;
    if (s[kStatus] == GQ_RUNNING) {
      const int64_t n = s[kPosition] + 1;
      const float* p = params + b * kParams;
      const uint32_t* seen = history + b * words;
      const int64_t token = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
                                ? cpuToken(static_cast<const float*>(logitsData) + b * vocab, vocab, s, p, seen, kernel.eos, work)
                                : cpuToken(static_cast<const uint16_t*>(logitsData) + b * vocab, vocab, s, p, seen, kernel.eos, work);
      const int status = gq_status_after(isEos(kernel.eos, token), n, s[kMin], s[kEnd]);
      ring[ringRow * rows + b] = static_cast<int32_t>(token);
      history[b * words + (token >> 5)] |= 1u << (token & 31);
      if (status == GQ_RUNNING) {
        s[kToken] = token;
        s[kPosition] = n;
      }
      s[kStatus] = status;
    } else {
      ring[ringRow * rows + b] = -1;
    }
    tokens[b] = s[kToken];
    positions[b] = s[kPosition];
    seqlens[b] = static_cast<int32_t>(s[kPosition]);
  }
  counter[0] += 1;
}

}  // namespace genqueue
