// genqueue.NextToken: the tail of the slot engine's decode step (slot-step-graph.ts), one row per slot. For each
// running row it picks the token at position n = position + 1 from the row's logits and advances the row:
//   1. repetition penalty over the tokens the row has seen (prompt and generated: a bitmap per row), Hugging Face's
//      rule: logit < 0 ? logit · p : logit / p;
//   2. every EOS id left out while n < min_length (= prompt + min_new_tokens);
//   3. greedy: the argmax (lowest index on ties). Sampling (and not top_k = 1, which is greedy): temperature, then
//      top_k (tokens at least as likely as the k-th), then top_p (the most likely tokens whose mass reaches top_p,
//      ties at the boundary kept), Hugging Face's order; then one draw. The thresholds come from radix selection
//      over the values (four 8-bit histogram passes each, no sort of the vocabulary), the draw is an inverse CDF in
//      index order over integer weights with one uniform per row (next-token-rules.h: exact sums, so the CUDA
//      kernel and the CPU code pick the same token for the same logits, and the draw depends only on (seed, n));
//   4. the row ends with "stop" on an EOS id, or with "length" once n = end_length - 1 (= prompt +
//      max_new_tokens - 1); an ended row no longer advances, and idle rows (free slots) do nothing.
// It writes the token into ring[counter mod K, row] (-1 for rows that did not advance) and the next step's
// decoder inputs (tokens, positions, seqlens_k = position) for every row, then counter + 1.
//
// Inputs: logits [rows, 1, V] (CPU: float or float16; CUDA: float16), state int64 [rows, kStateFields],
// params float [rows, kParams], history int32 [rows, W ≥ ceil(V / 32)], ring int32 [K, rows], counter int64 [1].
// Outputs: tokens int64 [rows, 1], positions int64 [rows, 1], seqlens int32 [rows], then state, history, ring and
// counter again: the slot loop binds each to its input's buffer (updated in place); unbound, they are copies.
// Attribute: eos_token_ids (ints, at most kMaxEos).
#pragma once
#include <onnxruntime_c_api.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "nvrtc-module.h"

namespace genqueue {

// The per-row int64 state (slot-step-graph.ts SLOT_STATE_FIELDS lists the same order).
enum SlotStateField : int {
  kToken = 0,     // the token to feed at `position`
  kPosition = 1,  // its position (the KV cache holds positions 0 .. position - 1)
  kEnd = 2,       // prompt + max_new_tokens
  kMin = 3,       // prompt + min_new_tokens
  kSeed = 4,      // the row's Philox key (uint64 bits)
  kTopK = 5,      // 0: off
  kStatus = 6,    // 0 idle, 1 running, 2 ended with EOS, 3 ended at max_new_tokens
  kSample = 7,    // 0 greedy, 1 sample
  kStateFields = 8,
};
// The per-row float parameters.
enum SlotParam : int { kTemperature = 0, kTopP = 1, kRepetitionPenalty = 2, kParams = 3 };

class NextToken : public OrtCustomOp {
 public:
  static constexpr size_t kMaxEos = 16;
  // cuda: the CUDA provider's kernel (compiled with NVRTC for deviceId); otherwise the CPU provider's.
  NextToken(const OrtApi* api, bool cuda, int deviceId);
  ~NextToken();
  NextToken(const NextToken&) = delete;
  NextToken& operator=(const NextToken&) = delete;

 private:
  struct Kernel {
    const NextToken* op;
    std::vector<int64_t> eos;
  };
  void compute(const Kernel& kernel, OrtKernelContext* context) const;
  template <typename K>
  friend void setKernelCallbacks(OrtCustomOp& op);

  const OrtApi* api_;
  bool cuda_;
  std::unique_ptr<NvrtcModule> kernels_;  // CUDA only
  mutable std::mutex scratchLock_;
  mutable void* scratch_ = nullptr;  // CUDA: [rows, V] floats of per-row work space for sampled rows
  mutable size_t scratchBytes_ = 0;
};

}  // namespace genqueue
