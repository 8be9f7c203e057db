// The ONNX Runtime C API of the library that onnxruntime-node ships, for the slot loop's parts: dlopen'ed from the
// path JS gives (so there is one ONNX Runtime in the process), looked up once per process.
#pragma once
#include <onnxruntime_c_api.h>

#include <stdexcept>
#include <string>

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

}  // namespace genqueue
