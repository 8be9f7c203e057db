// The CUDA runtime as the native parts use it.
#pragma once
#include <mutex>
#include <stdexcept>
#include <string>

#include "shared-library.h"

namespace genqueue {

// The CUDA runtime, for what ONNX Runtime's C API does not offer: device buffers that are not ONNX Runtime's
// (cudaMalloc), host↔device copies (IO binding would not write a bound device buffer from a one-node copy
// session: tried Identity and Abs on CUDA, the buffer stayed unwritten), a stream of our own for the session, and
// stream capture into CUDA graphs, events that time work on a stream. dlopen'ed (the one the CUDA provider uses), never linked.
struct CudaRuntime {
  using Stream = void*;
  using Graph = void*;
  using GraphExec = void*;
  using Event = void*;
  int (*malloc)(void**, size_t) = nullptr;
  int (*free)(void*) = nullptr;
  int (*memcpy)(void*, const void*, size_t, int) = nullptr;
  int (*memcpyAsync)(void*, const void*, size_t, int, Stream) = nullptr;
  int (*memcpy2DAsync)(void*, size_t, const void*, size_t, size_t, size_t, int, Stream) = nullptr;
  int (*memset)(void*, int, size_t) = nullptr;
  int (*deviceSynchronize)() = nullptr;
  int (*setDevice)(int) = nullptr;
  int (*deviceGetAttribute)(int*, int, int) = nullptr;
  const char* (*errorString)(int) = nullptr;
  int (*getLastError)() = nullptr;
  int (*streamCreateWithFlags)(Stream*, unsigned) = nullptr;
  int (*streamDestroy)(Stream) = nullptr;
  int (*streamBeginCapture)(Stream, int) = nullptr;
  int (*streamEndCapture)(Stream, Graph*) = nullptr;
  int (*graphInstantiateWithFlags)(GraphExec*, Graph, unsigned long long) = nullptr;
  int (*graphDestroy)(Graph) = nullptr;
  int (*graphExecDestroy)(GraphExec) = nullptr;
  int (*graphLaunch)(GraphExec, Stream) = nullptr;
  int (*eventCreate)(Event*) = nullptr;
  int (*eventRecord)(Event, Stream) = nullptr;
  int (*eventSynchronize)(Event) = nullptr;
  int (*eventElapsedTime)(float*, Event, Event) = nullptr;
  int (*eventDestroy)(Event) = nullptr;
  static constexpr int kHostToDevice = 1;
  static constexpr int kDeviceToHost = 2;
  static constexpr int kDeviceToDevice = 3;
  static constexpr unsigned kStreamNonBlocking = 1;
  static constexpr int kCaptureModeRelaxed = 2;
  static constexpr int kAttrComputeCapabilityMajor = 75;
  static constexpr int kAttrComputeCapabilityMinor = 76;
  static constexpr int kAttrMultiProcessorCount = 16;

  void load() {
    static std::mutex loading;
    std::lock_guard<std::mutex> lock(loading);
    if (memcpy != nullptr) return;
    void* lib = openSharedLibrary({"libcudart.so.13", "libcudart.so.12", "libcudart.so"});
    if (lib == nullptr) throw std::runtime_error("CUDA runtime (libcudart.so.13/.12) not found");
    bool all = true;
    auto sym = [&](auto& fn, const char* name) { all = bindSymbol(lib, fn, name) && all; };
    sym(malloc, "cudaMalloc");
    sym(free, "cudaFree");
    sym(memcpy, "cudaMemcpy");
    sym(memcpyAsync, "cudaMemcpyAsync");
    sym(memcpy2DAsync, "cudaMemcpy2DAsync");
    sym(memset, "cudaMemset");
    sym(deviceSynchronize, "cudaDeviceSynchronize");
    sym(setDevice, "cudaSetDevice");
    sym(deviceGetAttribute, "cudaDeviceGetAttribute");
    sym(errorString, "cudaGetErrorString");
    sym(getLastError, "cudaGetLastError");
    sym(streamCreateWithFlags, "cudaStreamCreateWithFlags");
    sym(streamDestroy, "cudaStreamDestroy");
    sym(streamBeginCapture, "cudaStreamBeginCapture");
    sym(streamEndCapture, "cudaStreamEndCapture");
    sym(graphInstantiateWithFlags, "cudaGraphInstantiateWithFlags");
    sym(graphDestroy, "cudaGraphDestroy");
    sym(graphExecDestroy, "cudaGraphExecDestroy");
    sym(graphLaunch, "cudaGraphLaunch");
    sym(eventCreate, "cudaEventCreate");
    sym(eventRecord, "cudaEventRecord");
    sym(eventSynchronize, "cudaEventSynchronize");
    sym(eventElapsedTime, "cudaEventElapsedTime");
    sym(eventDestroy, "cudaEventDestroy");
    if (!all) {
      memcpy = nullptr;
      throw std::runtime_error("the CUDA runtime lacks a function the device loop uses");
    }
  }

  void check(int code, const char* what) const {
    if (code != 0) throw std::runtime_error(std::string(what) + ": " + errorString(code));
  }
};

// One per process: the functions are the same for every device loop.
inline CudaRuntime cudart;

}  // namespace genqueue
