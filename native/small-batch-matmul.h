// genqueue.SmallBatchMatMul: Y[..., N] = act(norm(A[..., K]) · Bᵀ + bias) + residual, with B stored [N, K] (fp16,
// [out, in]), for the CUDA provider, at most kMaxRows rows (the device loop's small-batch step, device-loop-graph.ts).
// Inputs: A, B; optional bias [rows of B], residual [..., N], gamma [K], beta [K].
// Attributes (all optional): epsilon; rms_norm = 1: gamma alone is an RMS normalization of A's rows (Llama), else
// gamma with beta is a layer normalization (GPT-2); fast_gelu = 1: ONNX Runtime's FastGelu after the bias;
// swiglu = 1: B is [2N, K], gate rows then up rows, and Y = silu(A·gateᵀ + bias) · (A·upᵀ + bias) (Llama's MLP);
// split, columns: the kernel shape (see Shape), for measurements; absent, it is chosen from B's shape.
// So one node does what a normalization + MatMul + bias/activation/residual Add did in several.
//
// Why: at one or two rows a step is matrix-vector products bound by reading the weights, plus many small kernels
// whose launch gaps add up; at M = 1-2 cuBLAS (as ONNX Runtime's MatMul calls it) picks a 64x8 tile GEMM kernel
// that reads the weights well below the memory's bandwidth (docs/performance.md).
#pragma once
#include <onnxruntime_c_api.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nvrtc-module.h"

namespace genqueue {

class SmallBatchMatMul : public OrtCustomOp {
 public:
  // Each row re-reads and converts B's pieces; past two rows cuBLAS is the better choice (docs/performance.md).
  static constexpr int64_t kMaxRows = 2;
  // The longest K: a 256-thread team holds at most 8 pieces of 8 values of a row per thread
  // (src/model/components/small-batch.ts repeats it for the builder).
  static constexpr int64_t kMaxK = 16384;

  // Compiles nothing: each kernel shape is compiled with NVRTC when a session first creates a node that needs it,
  // so a kernel that fails to compile fails that session only.
  SmallBatchMatMul(const OrtApi* api, int deviceId);
  SmallBatchMatMul(const SmallBatchMatMul&) = delete;
  SmallBatchMatMul& operator=(const SmallBatchMatMul&) = delete;

  // A kernel's compile-time constants. A block is 8 warps; `split` warps form a team that computes `columns`
  // output columns together, each thread reading `pieces` 16-byte pieces of each of the team's weight rows
  // (2 · columns rows with swiglu).
  struct Shape {
    int split;
    int columns;
    int pieces;
    bool swiglu;
  };

 private:
  struct Kernel {
    const SmallBatchMatMul* op;
    const NvrtcModule* module;
    Shape shape;
    bool fastGelu;
    bool rmsNorm;
    float epsilon;
  };
  Kernel* createKernel(const OrtApi* api, const OrtKernelInfo* info) const;
  int multiprocessors() const;
  const NvrtcModule* module(const Shape& shape) const;
  // Blocks of one kernel shape the GPU holds at once (for one row); throws when it cannot run its blocks at all.
  int64_t residentSlots(const NvrtcModule& kernels, const Shape& shape) const;
  void compute(const Kernel& kernel, OrtKernelContext* context) const;
  template <typename K>
  friend void setKernelCallbacks(OrtCustomOp& op);

  const OrtApi* api_;
  int deviceId_;
  mutable std::mutex compiling_;  // guards the two below
  mutable int multiprocessors_ = 0;
  mutable std::map<std::string, std::unique_ptr<NvrtcModule>> modules_;  // by shape
};

}  // namespace genqueue
