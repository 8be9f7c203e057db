#include "ort-api.h"

#include <dlfcn.h>

#include <mutex>

namespace genqueue {

const OrtApi* loadOrtApi(const std::string& libraryPath) {
  static std::mutex loading;
  static const OrtApi* api = nullptr;
  std::lock_guard<std::mutex> lock(loading);
  if (api != nullptr) return api;
  void* handle = dlopen(libraryPath.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) throw std::runtime_error("dlopen " + libraryPath + ": " + dlerror());
  auto getBase = reinterpret_cast<const OrtApiBase* (*)()>(dlsym(handle, "OrtGetApiBase"));
  if (getBase == nullptr) throw std::runtime_error(libraryPath + " has no OrtGetApiBase");
  const OrtApi* found = getBase()->GetApi(ORT_API_VERSION);
  if (found == nullptr) throw std::runtime_error(libraryPath + " does not provide ONNX Runtime C API version " + std::to_string(ORT_API_VERSION));
  api = found;
  return api;
}

}  // namespace genqueue
