// genqueue.SmallBatchMatMul: Y[..., N] = A[..., K] · Bᵀ with B stored [N, K] (fp16), for the CUDA provider.
//
// Why: at one to a few rows per step (decoding at small batch) every layer GEMM is a matrix-vector product bound
// by reading the weights, and cuBLAS (as ONNX Runtime's MatMul calls it on an H100) runs a 64x8 tile GEMM kernel
// at ~0.6 TB/s for GPT-2's layer shapes: half of a batch-1 decode step (bench/results/device-loop-tuning-h100.json).
// Up to kMaxKernelRows rows this op runs its own kernel (one warp per output column, 16-byte weight loads, fp32
// accumulation), compiled at session creation with NVRTC; with more rows it calls cuBLAS (cublasGemmEx, fp32
// compute, as ONNX Runtime's fp16 MatMul does).
#pragma once
#include <onnxruntime_c_api.h>

#include <string>

#include "nvrtc-module.h"

namespace genqueue {

class SmallBatchMatMul : public OrtCustomOp {
 public:
  static constexpr int kMaxKernelRows = 8;
  // Measured on the H100 (GPT-2 small, device loop per 8 -> 264 sequence, kernel vs cuBLAS): batch 1 0.097 vs
  // 0.121 s, 2: 0.110 vs 0.124, 4: 0.133 vs 0.128, 8: 0.166 vs 0.130 (each row re-converts A: the kernel's cost
  // grows with rows while cuBLAS's hardly does).
  static constexpr int kDefaultKernelRows = 2;

  // maxKernelRows: rows up to which the kernel runs, at most kMaxKernelRows (0: cuBLAS always).
  SmallBatchMatMul(const OrtApi* api, int deviceId, int maxKernelRows);
  ~SmallBatchMatMul();
  SmallBatchMatMul(const SmallBatchMatMul&) = delete;
  SmallBatchMatMul& operator=(const SmallBatchMatMul&) = delete;

 private:
  void compute(OrtKernelContext* context);

  const OrtApi* api_;
  int maxKernelRows_;
  NvrtcModule kernels_;                      // for 1, 2, 4, 8 rows
  void* cublas_ = nullptr;                   // cublasHandle_t
  void* workspace_ = nullptr;                // cuBLAS workspace (fixed, so captured GEMMs allocate nothing)
};

}  // namespace genqueue
