#include "ort-api.h"

#include <dlfcn.h>

#include <functional>
#include <memory>
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

OrtSession* createSession(const OrtApi* ort, OrtEnv* env, const std::string& path, const SessionSettings& settings) {
  OrtSessionOptions* so = nullptr;
  checkOrt(ort, ort->CreateSessionOptions(&so));
  std::unique_ptr<OrtSessionOptions, std::function<void(OrtSessionOptions*)>> guard(so, [ort](OrtSessionOptions* p) { ort->ReleaseSessionOptions(p); });
  checkOrt(ort, ort->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL));
  if (settings.intraOpThreads > 0) checkOrt(ort, ort->SetIntraOpNumThreads(so, settings.intraOpThreads));
  if (!settings.profilePrefix.empty()) checkOrt(ort, ort->EnableProfiling(so, settings.profilePrefix.c_str()));
  if (settings.cuda) {
    OrtCUDAProviderOptionsV2* cuda = nullptr;
    checkOrt(ort, ort->CreateCUDAProviderOptions(&cuda));
    std::unique_ptr<OrtCUDAProviderOptionsV2, std::function<void(OrtCUDAProviderOptionsV2*)>> cudaGuard(
        cuda, [ort](OrtCUDAProviderOptionsV2* p) { ort->ReleaseCUDAProviderOptions(p); });
    const std::string device = std::to_string(settings.deviceId);
    const char* keys[] = {"device_id"};
    const char* values[] = {device.c_str()};
    checkOrt(ort, ort->UpdateCUDAProviderOptions(cuda, keys, values, 1));
    if (settings.stream != nullptr) checkOrt(ort, ort->UpdateCUDAProviderOptionsWithValue(cuda, "user_compute_stream", settings.stream));
    checkOrt(ort, ort->SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda));
  }
  if (settings.customOps != nullptr) checkOrt(ort, ort->AddCustomOpDomain(so, settings.customOps));
  OrtSession* session = nullptr;
  checkOrt(ort, ort->CreateSession(env, path.c_str(), so, &session));
  return session;
}

}  // namespace genqueue
