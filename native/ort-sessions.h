// ONNX Runtime as the addon's exports use it: the library onnxruntime-node ships, opened by path (so the process
// never holds a second copy), and the CUDA provider settings of the addon's sessions.
#pragma once
#include <dlfcn.h>
#include <onnxruntime_c_api.h>

#include <stdexcept>
#include <string>

namespace genqueue {

// The C API of the ONNX Runtime library at `path` (dlopen'ed: a library already loaded is the same one).
inline const OrtApi* openOrtApi(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) throw std::runtime_error("dlopen " + path + ": " + dlerror());
  auto getBase = reinterpret_cast<const OrtApiBase* (*)()>(dlsym(handle, "OrtGetApiBase"));
  if (getBase == nullptr) throw std::runtime_error(path + " has no OrtGetApiBase");
  const OrtApi* api = getBase()->GetApi(ORT_API_VERSION);
  if (api == nullptr) throw std::runtime_error(path + " does not provide ONNX Runtime C API version " + std::to_string(ORT_API_VERSION));
  return api;
}

inline void throwIfFailed(const OrtApi* ort, OrtStatus* status) {
  if (status == nullptr) return;
  std::string message = ort->GetErrorMessage(status);
  ort->ReleaseStatus(status);
  throw std::runtime_error(message);
}

// The CUDA provider on deviceId, running on `stream` when one is given (the device loop captures its runs there),
// with the genqueue operators of `ops`.
inline void appendCudaProvider(const OrtApi* ort, OrtSessionOptions* so, int deviceId, void* stream, OrtCustomOpDomain* ops) {
  struct Options {
    const OrtApi* ort;
    OrtCUDAProviderOptionsV2* value = nullptr;
    ~Options() {
      if (value != nullptr) ort->ReleaseCUDAProviderOptions(value);
    }
  } options{ort};
  throwIfFailed(ort, ort->CreateCUDAProviderOptions(&options.value));
  OrtCUDAProviderOptionsV2* cuda = options.value;
  std::string device = std::to_string(deviceId);
  const char* keys[] = {"device_id"};
  const char* values[] = {device.c_str()};
  throwIfFailed(ort, ort->UpdateCUDAProviderOptions(cuda, keys, values, 1));
  if (stream != nullptr) throwIfFailed(ort, ort->UpdateCUDAProviderOptionsWithValue(cuda, "user_compute_stream", stream));
  throwIfFailed(ort, ort->SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda));
  throwIfFailed(ort, ort->AddCustomOpDomain(so, ops));
}

}  // namespace genqueue
