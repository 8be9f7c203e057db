// The ONNX Runtime C API of the library that onnxruntime-node ships, for the slot loop's parts: dlopen'ed from the
// path JS gives (so there is one ONNX Runtime in the process), looked up once per process.
#pragma once
#include <onnxruntime_c_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"

namespace genqueue {

// Thread-safe; every call after the first returns the first call's API (the path is then ignored).
const OrtApi* loadOrtApi(const std::string& libraryPath);

struct OrtCallError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws OrtCallError with ONNX Runtime's message for a failed call (and releases its status).
inline void checkOrt(const OrtApi* api, OrtStatus* status) {
  if (status == nullptr) return;
  std::string message = api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  throw OrtCallError(message);
}

// Bytes per element of the tensor types the addon allocates.
inline size_t elementBytes(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return 2;
    default: throw std::invalid_argument("unexpected tensor element type");
  }
}

inline int64_t elementCount(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// How the addon's sessions are made: ONNX Runtime's full graph optimizations; on CUDA the device and the
// addon's own stream (its loops capture their CUDA graphs on it: ONNX Runtime's enable_cuda_graph keeps one graph
// per id and cannot release one); the addon's operators when given.
struct SessionSettings {
  bool cuda = false;
  int deviceId = 0;
  CudaRuntime::Stream stream = nullptr;
  OrtCustomOpDomain* customOps = nullptr;
  std::string profilePrefix;  // non-empty: ONNX Runtime writes a per-node profile
  int intraOpThreads = 0;     // 0: ONNX Runtime's default
};

OrtSession* createSession(const OrtApi* ort, OrtEnv* env, const std::string& path, const SessionSettings& settings);

}  // namespace genqueue
