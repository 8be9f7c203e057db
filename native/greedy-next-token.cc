#include "greedy-next-token.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "fp16-device-code.h"

namespace genqueue {
namespace {

// A block scans a row's logits (or a part of them) in 16-byte pieces, after a scalar head that reaches 16-byte
// alignment (rows of an odd vocabulary start anywhere); each thread keeps its best (value, index), then they are
// reduced, larger value first and lower index on ties, so the result does not depend on the thread layout.
// (After kFp16DeviceCode.)
constexpr const char* kKernelSource = R"CUDA(
struct Best {
  float value;
  int index;  // 0x7fffffff: none yet
};
__device__ __forceinline__ void consider(Best& best, float value, int index, int skip) {
  if (index == skip) return;
  if (best.index == 0x7fffffff || value > best.value || (value == best.value && index < best.index)) {
    best.value = value;
    best.index = index;
  }
}
__device__ __forceinline__ void merge(Best& best, const Best& other) {
  if (other.index == 0x7fffffff) return;
  consider(best, other.value, other.index, -1);
}

// The best (value, index) of a warp's lanes, in every lane.
__device__ __forceinline__ Best warpBest(Best best) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.index, offset)};
    merge(best, other);
  }
  return best;
}

// The best (value, index) of this block's threads, in thread 0.
__device__ Best blockBest(Best best) {
  best = warpBest(best);
  __shared__ Best warps[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) warps[warp] = best;
  __syncthreads();
  if (warp == 0) best = warpBest(lane < static_cast<int>(blockDim.x >> 5) ? warps[lane] : Best{0.f, 0x7fffffff});
  return best;
}

// Grid (parts, batch): part p of row b scans logits [lo, hi) of that row. With several parts per row (small
// batches: one block would read the whole row alone), each part leaves its best in partials and the last part to
// finish (a counter per row, reset by it) picks the row's token.
extern "C" __global__ void __launch_bounds__(1024) greedy_next_token(
    const unsigned short* logits, const long long* tokens, long long* tokensNext, const long long* step, long long* stepNext,
    const long long* promptLengths, const long long* minLengths, int batch, int vocab, long long eos, Best* partials,
    unsigned* counters) {
  const int b = blockIdx.y, part = blockIdx.x, parts = gridDim.x;
  const long long next = step[0] + 1;
  if (b == 0 && part == 0 && threadIdx.x == 0) stepNext[0] = next;
  if (next < promptLengths[b]) {
    if (part == 0 && threadIdx.x == 0) tokensNext[next * batch + b] = tokens[next * batch + b];
    return;
  }
  const int skip = next < minLengths[b] && eos >= 0 && eos < vocab ? static_cast<int>(eos) : -1;
  const int per = ((vocab + parts - 1) / parts + 7) & ~7;
  const int lo = min(vocab, part * per), hi = min(vocab, lo + per);
  const unsigned short* row = logits + static_cast<size_t>(b) * vocab + lo;
  const int count = hi - lo;
  int head = static_cast<int>(((16 - (reinterpret_cast<unsigned long long>(row) & 15)) & 15) >> 1);
  if (head > count) head = count;
  const int pieces = (count - head) >> 3;
  Best best{0.f, 0x7fffffff};
  for (int i = threadIdx.x; i < head; i += blockDim.x) consider(best, halfToFloat(row[i]), lo + i, skip);
#pragma unroll 4
  for (int p = threadIdx.x; p < pieces; p += blockDim.x) {
    unsigned v[4];
    loadCached(row + head + p * 8, v);
    float values[8];
    unpack(v, values);
    const int base = lo + head + p * 8;
#pragma unroll
    for (int j = 0; j < 8; j++) consider(best, values[j], base + j, skip);
  }
  for (int i = head + pieces * 8 + threadIdx.x; i < count; i += blockDim.x) consider(best, halfToFloat(row[i]), lo + i, skip);
  best = blockBest(best);
  if (parts == 1) {
    if (threadIdx.x == 0) tokensNext[next * batch + b] = best.index == 0x7fffffff ? 0 : best.index;
    return;
  }
  __shared__ bool last;
  if (threadIdx.x == 0) {
    partials[b * parts + part] = best;
    __threadfence();
    last = atomicAdd(&counters[b], 1u) == static_cast<unsigned>(parts - 1);
  }
  __syncthreads();
  if (!last || threadIdx.x >= 32) return;
  __threadfence();
  const volatile Best* mine = partials + b * parts;
  const Best merged = warpBest(threadIdx.x < parts ? Best{mine[threadIdx.x].value, mine[threadIdx.x].index} : Best{0.f, 0x7fffffff});
  if (threadIdx.x == 0) {
    tokensNext[next * batch + b] = merged.index == 0x7fffffff ? 0 : merged.index;
    counters[b] = 0;  // ready for the next step (and the next replay of a captured graph)
  }
}
)CUDA";

// Small batches split each row over several blocks of kSplitThreads (one block alone would read a whole row while
// the GPU idles); larger ones take one block of kRowThreads per row.
constexpr unsigned kRowThreads = 1024;
constexpr unsigned kSplitThreads = 256;
constexpr int64_t kMaxSplitRows = 16;
constexpr int64_t kMaxParts = 32;
constexpr int64_t kValuesPerPart = 4096;
struct Best {  // as in the kernel
  float value;
  int32_t index;
};

}  // namespace

GreedyNextToken::GreedyNextToken(const OrtApi* api, int deviceId)
    : OrtCustomOp{}, api_(api), kernels_(std::string(kFp16DeviceCode) + kKernelSource, "greedy_next_token.cu", deviceId, {"greedy_next_token"}) {
  // The split rows' partial results and per-row counters (zero between steps: the last block resets its row's).
  const size_t bytes = sizeof(Best) * kMaxSplitRows * kMaxParts + sizeof(uint32_t) * kMaxSplitRows;
  cudart.check(cudart.malloc(&scratch_, bytes), "GreedyNextToken: cudaMalloc");
  cudart.check(cudart.memset(scratch_, 0, bytes), "GreedyNextToken: cudaMemset");
  setCudaCustomOpDefaults(*this);
  GetName = [](const OrtCustomOp*) { return "GreedyNextToken"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 5; };
  GetInputType = [](const OrtCustomOp*, size_t i) { return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 2; };
  GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64; };
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) -> OrtStatusPtr {
    int64_t eos = -1;
    if (OrtStatus* status = api->KernelInfoGetAttribute_int64(info, "eos_token_id", &eos)) return status;
    *kernel = new Kernel{static_cast<const GreedyNextToken*>(op), eos};
    return nullptr;
  };
  setKernelCallbacks<Kernel>(*this);
}

GreedyNextToken::~GreedyNextToken() {
  if (scratch_ != nullptr) cudart.free(scratch_);
}

void GreedyNextToken::compute(const Kernel& kernel, OrtKernelContext* context) const {
  CustomOpContext c(api_, context, "GreedyNextToken");
  const OrtValue* logits = c.input(0);
  const OrtValue* tokens = c.input(1);
  const std::vector<int64_t> logitsDims = c.dims(logits);
  const std::vector<int64_t> tokensDims = c.dims(tokens);
  if (tokensDims.size() != 2) c.fail("tokens must be [capacity, batch]");
  const int64_t batch = tokensDims[1];
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < logitsDims.size(); i++) rows *= logitsDims[i];
  if (logitsDims.empty() || rows != batch) c.fail("logits [batch, 1, vocab] do not match tokens [capacity, batch]");
  if (c.dims(c.input(3)) != std::vector<int64_t>{batch} || c.dims(c.input(4)) != std::vector<int64_t>{batch}) {
    c.fail("prompt_lengths and min_lengths must be [batch]");
  }
  OrtValue* tokensNext = c.output(0, tokensDims);
  OrtValue* stepNext = c.output(1, {1});
  void* stream = c.stream();
  void* tokensIn = c.data(tokens);
  void* tokensOut = c.data(tokensNext);
  // Bound in place by the device loop; otherwise the untouched rows are copied first.
  if (tokensOut != tokensIn) {
    cudart.check(cudart.memcpyAsync(tokensOut, tokensIn, sizeof(int64_t) * tokensDims[0] * batch, CudaRuntime::kDeviceToDevice, stream),
                 "GreedyNextToken: cudaMemcpyAsync");
  }
  void* logitsData = c.data(logits);
  void* stepData = c.data(c.input(2));
  void* stepNextData = c.data(stepNext);
  void* promptData = c.data(c.input(3));
  void* minData = c.data(c.input(4));
  const int64_t vocab = logitsDims.back();
  int batchArg = static_cast<int>(batch), vocabArg = static_cast<int>(vocab);
  long long eos = kernel.eosTokenId;
  void* partials = scratch_;
  void* counters = static_cast<char*>(scratch_) + sizeof(Best) * kMaxSplitRows * kMaxParts;
  void* args[] = {&logitsData, &tokensIn, &tokensOut, &stepData, &stepNextData, &promptData, &minData, &batchArg, &vocabArg, &eos, &partials, &counters};
  const int64_t parts = batch <= kMaxSplitRows ? std::min(kMaxParts, (vocab + kValuesPerPart - 1) / kValuesPerPart) : 1;
  kernels_.launch(0, {static_cast<unsigned>(parts), static_cast<unsigned>(batch)}, parts > 1 ? kSplitThreads : kRowThreads, 0, stream, args);
}

}  // namespace genqueue
