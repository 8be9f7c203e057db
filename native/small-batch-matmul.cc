#include "small-batch-matmul.h"

#include <algorithm>
#include <mutex>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "shared-library.h"

namespace genqueue {
namespace {

// The kernel. No headers: fp16 conversions and 16-byte loads are inline PTX. One warp per output column n reads
// B's row n (K contiguous halves) in 16-byte pieces and reuses each piece for all R rows of A; the warp's partial
// sums are reduced with shuffles, in a fixed order (deterministic).
constexpr const char* kKernelSource = R"CUDA(
__device__ __forceinline__ float halfToFloat(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short floatToHalf(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
// Weights are read once per step: no L1 allocation. A's rows are read by every warp: cached.
__device__ __forceinline__ void loadStreaming(const unsigned short* p, unsigned (&v)[4]) {
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
__device__ __forceinline__ void loadCached(const unsigned short* p, unsigned (&v)[4]) {
  asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
__device__ __forceinline__ void unpack(const unsigned (&v)[4], float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = halfToFloat(static_cast<unsigned short>(v[i] & 0xffffu));
    f[2 * i + 1] = halfToFloat(static_cast<unsigned short>(v[i] >> 16));
  }
}

template <int R>
__device__ __forceinline__ void smallBatchMatMul(const unsigned short* __restrict__ a, const unsigned short* __restrict__ b,
                                                 unsigned short* __restrict__ y, int rows, int n, int k) {
  const int column = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (column >= n) return;  // whole warps only: column is per warp
  const unsigned short* weights = b + static_cast<size_t>(column) * k;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
#pragma unroll 4
  for (int i = lane * 8; i < k; i += 256) {
    unsigned wv[4];
    loadStreaming(weights + i, wv);
    float w[8];
    unpack(wv, w);
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r < rows) {
        unsigned av[4];
        loadCached(a + static_cast<size_t>(r) * k + i, av);
        float x[8];
        unpack(av, x);
#pragma unroll
        for (int j = 0; j < 8; j++) acc[r] = fmaf(x[j], w[j], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    float v = acc[r];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0 && r < rows) y[static_cast<size_t>(r) * n + column] = floatToHalf(v);
  }
}

#define GENQUEUE_SMALL_BATCH_KERNEL(R)                                                                              \
  extern "C" __global__ void __launch_bounds__(128) small_batch_matmul_##R(                                        \
      const unsigned short* a, const unsigned short* b, unsigned short* y, int rows, int n, int k) {                \
    smallBatchMatMul<R>(a, b, y, rows, n, k);                                                                       \
  }
GENQUEUE_SMALL_BATCH_KERNEL(1)
GENQUEUE_SMALL_BATCH_KERNEL(2)
GENQUEUE_SMALL_BATCH_KERNEL(4)
GENQUEUE_SMALL_BATCH_KERNEL(8)
)CUDA";

constexpr int kKernelRows[4] = {1, 2, 4, 8};
constexpr unsigned kWarpsPerBlock = 4;
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

// cuBLAS, for more rows than the kernel takes.
struct Cublas {
  int (*create)(void**) = nullptr;
  int (*destroy)(void*) = nullptr;
  int (*setStream)(void*, void*) = nullptr;
  int (*setWorkspace)(void*, void*, size_t) = nullptr;
  int (*gemmEx)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int, const void*, void*, int, int, int,
                int) = nullptr;
  static constexpr int kOpN = 0;
  static constexpr int kOpT = 1;
  static constexpr int kR16F = 2;         // cudaDataType CUDA_R_16F
  static constexpr int kCompute32F = 68;  // cublasComputeType_t CUBLAS_COMPUTE_32F
  static constexpr int kGemmDefault = -1;

  void load() {
    static std::mutex loading;
    std::lock_guard<std::mutex> lock(loading);
    if (gemmEx != nullptr) return;
    void* lib = openSharedLibrary({"libcublas.so.13", "libcublas.so.12", "libcublas.so"});
    if (lib == nullptr || !bindSymbol(lib, create, "cublasCreate_v2") || !bindSymbol(lib, destroy, "cublasDestroy_v2") ||
        !bindSymbol(lib, setStream, "cublasSetStream_v2") || !bindSymbol(lib, setWorkspace, "cublasSetWorkspace_v2") ||
        !bindSymbol(lib, gemmEx, "cublasGemmEx")) {
      gemmEx = nullptr;
      throw std::runtime_error("SmallBatchMatMul: cuBLAS (libcublas.so.13/.12) not found");
    }
  }

  static void check(int code, const char* what) {
    if (code != 0) throw std::runtime_error(std::string("SmallBatchMatMul: ") + what + " failed with status " + std::to_string(code));
  }
};

Cublas cublas;

std::vector<std::string> kernelNames() {
  std::vector<std::string> names;
  for (int rows : kKernelRows) names.push_back("small_batch_matmul_" + std::to_string(rows));
  return names;
}

}  // namespace

SmallBatchMatMul::SmallBatchMatMul(const OrtApi* api, int deviceId, int maxKernelRows)
    : OrtCustomOp{}, api_(api), maxKernelRows_(std::min(maxKernelRows, kMaxKernelRows)), kernels_(kKernelSource, "small_batch_matmul.cu", deviceId, kernelNames()) {
  cublas.load();
  Cublas::check(cublas.create(&cublas_), "cublasCreate");
  cudart.check(cudart.malloc(&workspace_, kCublasWorkspaceBytes), "cudaMalloc (cuBLAS workspace)");
  Cublas::check(cublas.setWorkspace(cublas_, workspace_, kCublasWorkspaceBytes), "cublasSetWorkspace");

  setCudaCustomOpDefaults(*this);
  GetName = [](const OrtCustomOp*) { return "SmallBatchMatMul"; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 2; };
  GetInputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; };
  // No per-node state: the kernel handle is the op itself.
  CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo*, void** kernel) -> OrtStatusPtr {
    *kernel = const_cast<OrtCustomOp*>(op);
    return nullptr;
  };
  KernelComputeV2 = [](void* kernel, OrtKernelContext* context) -> OrtStatusPtr {
    auto* op = static_cast<SmallBatchMatMul*>(kernel);
    try {
      op->compute(context);
      return nullptr;
    } catch (const std::exception& e) {
      return op->api_->CreateStatus(ORT_FAIL, e.what());
    }
  };
  KernelDestroy = [](void*) {};
}

SmallBatchMatMul::~SmallBatchMatMul() {
  if (cublas_ != nullptr) cublas.destroy(cublas_);
  if (workspace_ != nullptr) cudart.free(workspace_);
}

void SmallBatchMatMul::compute(OrtKernelContext* context) {
  CustomOpContext c(api_, context, "SmallBatchMatMul");
  const OrtValue* a = c.input(0);
  const OrtValue* b = c.input(1);
  std::vector<int64_t> shape = c.dims(a);
  const std::vector<int64_t> bDims = c.dims(b);
  if (shape.empty() || bDims.size() != 2 || bDims[1] != shape.back()) c.fail("A [..., K] and B [N, K] do not match");
  const int64_t k = bDims[1];
  const int64_t n = bDims[0];
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); i++) rows *= shape[i];
  shape.back() = n;
  OrtValue* y = c.output(0, shape);
  if (rows == 0 || n == 0) return;
  void* aData = c.data(a);
  void* bData = c.data(b);
  void* yData = c.data(y);
  void* stream = c.stream();

  const bool aligned = k % 8 == 0 && (reinterpret_cast<uintptr_t>(aData) | reinterpret_cast<uintptr_t>(bData)) % 16 == 0;
  if (rows <= maxKernelRows_ && aligned) {
    size_t which = 0;
    while (kKernelRows[which] < rows) which++;
    int rowsArg = static_cast<int>(rows), nArg = static_cast<int>(n), kArg = static_cast<int>(k);
    void* args[] = {&aData, &bData, &yData, &rowsArg, &nArg, &kArg};
    kernels_.launch(which, static_cast<unsigned>((n + kWarpsPerBlock - 1) / kWarpsPerBlock), 32 * kWarpsPerBlock, stream, args);
    return;
  }
  // Row-major Y [rows, N] = A [rows, K] · Bᵀ is column-major Yᵀ [N, rows] = op_T(B viewed as [K, N]) · Aᵀ.
  const float one = 1.f, zero = 0.f;
  Cublas::check(cublas.setStream(cublas_, stream), "cublasSetStream");
  Cublas::check(cublas.gemmEx(cublas_, Cublas::kOpT, Cublas::kOpN, static_cast<int>(n), static_cast<int>(rows), static_cast<int>(k), &one, bData,
                              Cublas::kR16F, static_cast<int>(k), aData, Cublas::kR16F, static_cast<int>(k), &zero, yData, Cublas::kR16F,
                              static_cast<int>(n), Cublas::kCompute32F, Cublas::kGemmDefault),
                "cublasGemmEx");
}

}  // namespace genqueue
