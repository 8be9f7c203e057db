// The slot loop's copy of a prefill run's caches from its staging rows into the rows' slots, as one kernel.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda-runtime.h"
#include "nvrtc-module.h"

namespace genqueue {

// One launch copies every row, layer, key/value and head of a run (a cudaMemcpy2DAsync each per row, layer and
// key/value costs ~5 µs of launch: 1,536 of them for 64 GPT-2 rows, most of a short run's time).
class StagingCopy {
 public:
  struct Layout {
    int64_t kvHeads = 0;
    int64_t stagingPitch = 0;  // bytes from one head's positions to the next in a staging tensor (P × row)
    int64_t slotPitch = 0;     // the same in a cache (capacity × row)
    int64_t rowBytes = 0;      // one position of one head (head size × element); a multiple of 16
  };
  // sources[i] → targets[i]: the staging and cache tensors, layer by layer, keys and values alike.
  StagingCopy(int deviceId, const std::vector<const void*>& sources, const std::vector<void*>& targets, const Layout& layout, int64_t maxRows);
  ~StagingCopy();
  StagingCopy(const StagingCopy&) = delete;
  StagingCopy& operator=(const StagingCopy&) = delete;

  // Whether rows of rowBytes can go through the kernel's 16-byte copies.
  static bool fits(int64_t rowBytes) { return rowBytes % 16 == 0; }
  // Staging row i's first positions[i] positions into slot slots[i], queued on stream.
  void run(const std::vector<int32_t>& slots, const std::vector<int32_t>& positions, CudaRuntime::Stream stream);

 private:
  NvrtcModule kernels_;
  Layout layout_;
  int64_t tensors_ = 0, maxRows_ = 0;
  void* pointers_ = nullptr;  // device: the sources, then the targets
  void* rows_ = nullptr;      // device int32 [2 × maxRows]: slots, then positions
};

}  // namespace genqueue
