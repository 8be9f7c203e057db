// genqueue.GreedyNextToken: the device-loop step's tail in one kernel (device-loop-graph.ts). For each row b it
// writes tokens[step + 1, b]: the prompt's own token while step + 1 < prompt_lengths[b], otherwise the argmax of
// logits[b] (lowest index on ties), EOS left out while step + 1 < min_lengths[b]; and step_next = step + 1.
// Inputs: logits fp16 [B, 1, V], tokens int64 [C, B], step int64 [1], prompt_lengths, min_lengths int64 [B];
// outputs: tokens_next int64 [C, B] (the addon binds it to the tokens buffer: one row is written in place),
// step_next int64 [1]. Attribute eos_token_id.
//
// Why: the same tail as ONNX operators (EOS bias Where + Add, two TopK passes, GatherElements, Less, Where,
// ScatterND, ...) is ~15 kernels per step, and at batch 1 a step is ~110 kernels whose launch gaps set its pace.
#pragma once
#include <onnxruntime_c_api.h>

#include "nvrtc-module.h"

namespace genqueue {

class GreedyNextToken : public OrtCustomOp {
 public:
  GreedyNextToken(const OrtApi* api, int deviceId);
  ~GreedyNextToken();
  GreedyNextToken(const GreedyNextToken&) = delete;
  GreedyNextToken& operator=(const GreedyNextToken&) = delete;

 private:
  struct Kernel {
    const GreedyNextToken* op;
    int64_t eosTokenId;
  };
  void compute(const Kernel& kernel, OrtKernelContext* context) const;
  template <typename K>
  friend void setKernelCallbacks(OrtCustomOp& op);

  const OrtApi* api_;
  NvrtcModule kernels_;
  void* scratch_ = nullptr;  // device memory: partial argmaxes of split rows, then a counter per row
};

}  // namespace genqueue
