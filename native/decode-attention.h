// genqueue.DecodeAttention: one new token per row attends to its row's KV cache, for the small-batch step of
// rotary decoders with grouped K/V heads (src/model/components/attention.ts decodeAttention), on the CUDA provider.
// Inputs: qkv fp16 [B, 1, (N + 2·KVH)·D] (q heads, then k, then v), past_key and past_value fp16 [B, KVH, C, D],
// seqlens_k int32 [B] (the new token's position, as GroupQueryAttention reads it), cos_cache and sin_cache fp16
// [positions, R/2] (rotate-half rotary over the first R dims). Outputs: attention fp16 [B, 1, N·D], present_key
// and present_value [B, KVH, C, D]: the past with the new token's rotated key and its value written at its
// position (in place when the caller binds them to the past buffers; copied first otherwise).
// Attributes: num_heads, kv_num_heads, head_size (optional when qkv's width is declared), scale,
// local_window_size (optional: the keys a query sees, -1 all).
//
// Why: at one or two rows GroupQueryAttention is four kernels per layer (sequence lengths, fill, rotary + append,
// cuDNN's attention), each a few microseconds of mostly latency; this is one kernel: each block rotates the
// group's queries, the block holding the new position appends its key and value, every block attends to a
// slice of the positions, and the last block of a row's kv head merges the slices.
#pragma once
#include <onnxruntime_c_api.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nvrtc-module.h"

namespace genqueue {

class DecodeAttention : public OrtCustomOp {
 public:
  // Rows of the small-batch step (SmallBatchMatMul::kMaxRows): the scratch for the merged slices is sized for them.
  static constexpr int64_t kMaxRows = 2;
  // Slices per (row, kv head): long caches take longer slices.
  static constexpr int64_t kMaxSlices = 64;
  // Heads per kv head and head sizes the kernel is compiled for (a warp's lanes cover a key's D/8 16-byte pieces).
  static constexpr int64_t kMaxGroup = 8;
  static bool fits(int64_t numHeads, int64_t kvHeads, int64_t headSize) {
    const int64_t group = kvHeads > 0 ? numHeads / kvHeads : 0;
    const bool size = headSize == 32 || headSize == 64 || headSize == 128 || headSize == 256;
    // The block's shared memory (the rotated queries, each warp's merged state) within the 48 KiB of a plain launch.
    const int64_t sharedBytes = 4 * (group * headSize + 8 * group * (headSize + 2));
    return kvHeads > 0 && numHeads % kvHeads == 0 && group >= 1 && group <= kMaxGroup && size && sharedBytes <= 48 * 1024;
  }

  DecodeAttention(const OrtApi* api, int deviceId);
  DecodeAttention(const DecodeAttention&) = delete;
  DecodeAttention& operator=(const DecodeAttention&) = delete;

 private:
  struct Kernel {
    const DecodeAttention* op;
    const NvrtcModule* module;
    int64_t numHeads, kvHeads, headSize, window;
    float scale;
    void* scratch;  // device memory: the slices' partial results, then a counter per (row, kv head)
    ~Kernel();
  };
  Kernel* createKernel(const OrtApi* api, const OrtKernelInfo* info) const;
  const NvrtcModule* module(int64_t headSize, int64_t group) const;
  void compute(const Kernel& kernel, OrtKernelContext* context) const;
  template <typename K>
  friend void setKernelCallbacks(OrtCustomOp& op);

  const OrtApi* api_;
  int deviceId_;
  mutable std::mutex compiling_;
  mutable std::map<std::string, std::unique_ptr<NvrtcModule>> modules_;  // by head size and group
};

}  // namespace genqueue
