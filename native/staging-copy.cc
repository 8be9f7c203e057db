#include "staging-copy.h"

#include <stdexcept>
#include <string>

namespace genqueue {
namespace {

// blockIdx.x: staging row × kv heads + head; blockIdx.y: the tensor (layer, key or value). A head's first
// `positions` positions are contiguous in both layouts.
constexpr const char* kKernelSource = R"CUDA(
extern "C" __global__ void staging_to_slots(const char* const* sources, char* const* targets, const int* rows, int count,
                                            int kvHeads, long long stagingPitch, long long slotPitch, int rowBytes) {
  const int row = blockIdx.x / kvHeads, head = blockIdx.x % kvHeads;
  const int slot = rows[row], positions = rows[count + row];
  const uint4* from = reinterpret_cast<const uint4*>(sources[blockIdx.y] + ((long long)row * kvHeads + head) * stagingPitch);
  uint4* to = reinterpret_cast<uint4*>(targets[blockIdx.y] + ((long long)slot * kvHeads + head) * slotPitch);
  const long long n = (long long)positions * rowBytes / 16;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) to[i] = from[i];
}
)CUDA";

constexpr unsigned kThreads = 256;

}  // namespace

StagingCopy::StagingCopy(int deviceId, const std::vector<const void*>& sources, const std::vector<void*>& targets, const Layout& layout,
                         int64_t maxRows)
    : kernels_(kKernelSource, "staging_to_slots.cu", deviceId, {"staging_to_slots"}), layout_(layout), tensors_(static_cast<int64_t>(sources.size())), maxRows_(maxRows) {
  if (sources.size() != targets.size() || sources.empty()) throw std::invalid_argument("staging copy: sources and targets must pair up");
  if (!fits(layout.rowBytes)) throw std::invalid_argument("staging copy: a row of " + std::to_string(layout.rowBytes) + " bytes is not a multiple of 16");
  std::vector<const void*> table(sources);
  table.insert(table.end(), targets.begin(), targets.end());
  try {
    cudart.check(cudart.malloc(&pointers_, sizeof(void*) * table.size()), "cudaMalloc");
    cudart.check(cudart.memcpy(pointers_, table.data(), sizeof(void*) * table.size(), CudaRuntime::kHostToDevice), "cudaMemcpy to device");
    cudart.check(cudart.malloc(&rows_, sizeof(int32_t) * 2 * maxRows), "cudaMalloc");
  } catch (...) {
    if (pointers_ != nullptr) cudart.free(pointers_);
    if (rows_ != nullptr) cudart.free(rows_);
    throw;
  }
}

StagingCopy::~StagingCopy() {
  cudart.free(pointers_);
  cudart.free(rows_);
}

void StagingCopy::run(const std::vector<int32_t>& slots, const std::vector<int32_t>& positions, CudaRuntime::Stream stream) {
  const int64_t count = static_cast<int64_t>(slots.size());
  if (count == 0) return;
  if (count > maxRows_ || positions.size() != slots.size()) throw std::invalid_argument("staging copy: more rows than the staging holds");
  std::vector<int32_t> rows(slots);
  rows.insert(rows.end(), positions.begin(), positions.end());
  // Pageable memory is staged before cudaMemcpyAsync returns; the kernel after it on the stream sees it.
  cudart.check(cudart.memcpyAsync(rows_, rows.data(), sizeof(int32_t) * rows.size(), CudaRuntime::kHostToDevice, stream), "cudaMemcpyAsync to device");
  const char* const* sources = static_cast<const char* const*>(pointers_);
  char* const* targets = static_cast<char* const*>(pointers_) + tensors_;
  int countArg = static_cast<int>(count), kvHeads = static_cast<int>(layout_.kvHeads), rowBytes = static_cast<int>(layout_.rowBytes);
  long long stagingPitch = layout_.stagingPitch, slotPitch = layout_.slotPitch;
  void* rowsArg = rows_;
  void* args[] = {&sources, &targets, &rowsArg, &countArg, &kvHeads, &stagingPitch, &slotPitch, &rowBytes};
  kernels_.launch(0, {static_cast<unsigned>(count * layout_.kvHeads), static_cast<unsigned>(tensors_)}, kThreads, 0, stream, args);
}

}  // namespace genqueue
