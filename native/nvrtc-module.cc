#include "nvrtc-module.h"

#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda-runtime.h"
#include "shared-library.h"

namespace genqueue {
namespace {

struct Nvrtc {
  int (*createProgram)(void**, const char*, const char*, int, const char* const*, const char* const*) = nullptr;
  int (*compileProgram)(void*, int, const char* const*) = nullptr;
  int (*getPtxSize)(void*, size_t*) = nullptr;
  int (*getPtx)(void*, char*) = nullptr;
  int (*getProgramLogSize)(void*, size_t*) = nullptr;
  int (*getProgramLog)(void*, char*) = nullptr;
  int (*destroyProgram)(void**) = nullptr;

  bool load() {
    void* lib = openSharedLibrary({"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"});
    return lib != nullptr && bindSymbol(lib, createProgram, "nvrtcCreateProgram") && bindSymbol(lib, compileProgram, "nvrtcCompileProgram") &&
           bindSymbol(lib, getPtxSize, "nvrtcGetPTXSize") && bindSymbol(lib, getPtx, "nvrtcGetPTX") &&
           bindSymbol(lib, getProgramLogSize, "nvrtcGetProgramLogSize") && bindSymbol(lib, getProgramLog, "nvrtcGetProgramLog") &&
           bindSymbol(lib, destroyProgram, "nvrtcDestroyProgram");
  }
};

struct CudaDriver {
  int (*moduleLoadData)(void**, const void*) = nullptr;
  int (*moduleUnload)(void*) = nullptr;
  int (*moduleGetFunction)(void**, void*, const char*) = nullptr;
  int (*launchKernel)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**) = nullptr;
  int (*occupancy)(int*, void*, int, size_t) = nullptr;

  bool load() {
    void* lib = openSharedLibrary({"libcuda.so.1", "libcuda.so"});
    return lib != nullptr && bindSymbol(lib, moduleLoadData, "cuModuleLoadData") && bindSymbol(lib, moduleUnload, "cuModuleUnload") &&
           bindSymbol(lib, moduleGetFunction, "cuModuleGetFunction") && bindSymbol(lib, launchKernel, "cuLaunchKernel") &&
           bindSymbol(lib, occupancy, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  }
};

std::once_flag loaded;
Nvrtc nvrtc;
CudaDriver driver;
std::string missing;  // what could not be loaded, once for the process

void load() {
  std::call_once(loaded, [] {
    if (!nvrtc.load()) missing = "NVRTC (libnvrtc.so.13/.12) not found";
    else if (!driver.load()) missing = "the CUDA driver library (libcuda.so.1) not found or incomplete";
  });
  if (!missing.empty()) throw std::runtime_error(missing);
}

void checkDriver(int code, const std::string& what) {
  if (code != 0) throw std::runtime_error(what + " failed with CUDA driver error " + std::to_string(code));
}

}  // namespace

NvrtcModule::NvrtcModule(const std::string& source, const char* fileName, int deviceId, const std::vector<std::string>& kernels) {
  load();
  cudart.load();
  // cuModuleLoadData needs a current context: on a thread that has not touched the device yet (an operator made
  // before any session ran), cudaSetDevice makes the device's primary context current.
  cudart.check(cudart.setDevice(deviceId), "cudaSetDevice");
  int major = 0, minor = 0;
  cudart.check(cudart.deviceGetAttribute(&major, CudaRuntime::kAttrComputeCapabilityMajor, deviceId), "cudaDeviceGetAttribute");
  cudart.check(cudart.deviceGetAttribute(&minor, CudaRuntime::kAttrComputeCapabilityMinor, deviceId), "cudaDeviceGetAttribute");
  const std::string arch = "--gpu-architecture=compute_" + std::to_string(major * 10 + minor);
  const char* options[] = {arch.c_str(), "--std=c++17"};
  void* program = nullptr;
  checkDriver(nvrtc.createProgram(&program, source.c_str(), fileName, 0, nullptr, nullptr), "nvrtcCreateProgram");
  std::string ptx;
  if (nvrtc.compileProgram(program, 2, options) == 0) {
    size_t size = 0;
    nvrtc.getPtxSize(program, &size);
    ptx.resize(size);
    nvrtc.getPtx(program, ptx.data());
    nvrtc.destroyProgram(&program);
  } else {
    size_t size = 0;
    nvrtc.getProgramLogSize(program, &size);
    std::string log(size, '\0');
    nvrtc.getProgramLog(program, log.data());
    nvrtc.destroyProgram(&program);
    throw std::runtime_error(std::string("NVRTC could not compile ") + fileName + " for " + arch + ": " + log);
  }
  checkDriver(driver.moduleLoadData(&module_, ptx.c_str()), std::string("cuModuleLoadData (") + fileName + ")");
  for (const std::string& name : kernels) {
    void* fn = nullptr;
    checkDriver(driver.moduleGetFunction(&fn, module_, name.c_str()), "cuModuleGetFunction " + name);
    functions_.push_back(fn);
  }
}

NvrtcModule::~NvrtcModule() {
  if (module_ != nullptr) driver.moduleUnload(module_);
}

int NvrtcModule::residentBlocks(size_t kernel, unsigned threads) const {
  int blocks = 0;
  checkDriver(driver.occupancy(&blocks, functions_.at(kernel), static_cast<int>(threads), 0), "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  return blocks;
}

void NvrtcModule::launch(size_t kernel, Grid blocks, unsigned threads, unsigned sharedBytes, void* stream, void** args) const {
  checkDriver(driver.launchKernel(functions_.at(kernel), blocks.x, blocks.y, 1, threads, 1, 1, sharedBytes, stream, args, nullptr), "cuLaunchKernel");
}

}  // namespace genqueue
