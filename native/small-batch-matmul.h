// genqueue.SmallBatchMatMul: Y[..., N] = act(norm(A[..., K]) · Bᵀ + bias) + residual, with B stored [N, K] (fp16),
// for the CUDA provider, at most kMaxRows rows (the device loop's small-batch step, device-loop-graph.ts).
// Optional inputs: bias [N], residual [..., N], gamma and beta [K] (layer normalization of A's rows first, with
// attribute epsilon); attribute fast_gelu = 1 applies ONNX Runtime's FastGelu after the bias. So one node does
// what LayerNormalization/SkipLayerNormalization + MatMul + bias/FastGelu/residual Add did in several.
//
// Why: at one or two rows a step is matrix-vector products bound by reading the weights, and ~100 small kernels
// whose launch gaps add up. cuBLAS (as ONNX Runtime's MatMul calls it on an H100) runs a 64x8 tile GEMM kernel at
// ~0.6 TB/s for GPT-2's layer shapes (bench/results/device-loop-tuning-h100.json); this kernel is one warp per
// output column with 16-byte weight loads and fp32 accumulation, compiled at session creation with NVRTC.
#pragma once
#include <onnxruntime_c_api.h>

#include "nvrtc-module.h"

namespace genqueue {

class SmallBatchMatMul : public OrtCustomOp {
 public:
  // Where the kernel beats cuBLAS (H100, GPT-2 small, scratch runs in bench/results/device-loop-tuning-h100.json:
  // 1-2 rows; at 4 and 8 rows an earlier version of it was slower): each row re-reads and converts A.
  static constexpr int64_t kMaxRows = 2;

  SmallBatchMatMul(const OrtApi* api, int deviceId);
  SmallBatchMatMul(const SmallBatchMatMul&) = delete;
  SmallBatchMatMul& operator=(const SmallBatchMatMul&) = delete;

 private:
  struct Kernel {
    const SmallBatchMatMul* op;
    bool fastGelu;
    float epsilon;
  };
  void compute(const Kernel& kernel, OrtKernelContext* context) const;
  template <typename K>
  friend void setKernelCallbacks(OrtCustomOp& op);

  const OrtApi* api_;
  NvrtcModule kernels_;
};

}  // namespace genqueue
