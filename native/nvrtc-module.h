// CUDA C++ compiled at run time with NVRTC for the device at hand and launched through the driver API: how the
// addon's own operators get kernels without a CUDA toolkit at build time (the addon is built with g++ alone).
#pragma once
#include <string>
#include <vector>

namespace genqueue {

class NvrtcModule {
 public:
  // Compiles source for deviceId's architecture and looks up the extern "C" kernels named in kernels.
  // Throws with NVRTC's log when it does not compile, or when NVRTC / the driver library is missing.
  NvrtcModule(const std::string& source, const char* fileName, int deviceId, const std::vector<std::string>& kernels);
  ~NvrtcModule();
  NvrtcModule(const NvrtcModule&) = delete;
  NvrtcModule& operator=(const NvrtcModule&) = delete;

  // Queues kernel i (the order of the constructor's names) on stream with sharedBytes of dynamic shared memory;
  // args point at the kernel's arguments.
  void launch(size_t kernel, unsigned blocks, unsigned threads, unsigned sharedBytes, void* stream, void** args) const {
    launch(kernel, {blocks, 1}, threads, sharedBytes, stream, args);
  }
  struct Grid {
    unsigned x, y;
  };
  void launch(size_t kernel, Grid blocks, unsigned threads, unsigned sharedBytes, void* stream, void** args) const;

  // How many blocks of `threads` threads of kernel i fit on one SM at once (0: none, it cannot be launched so).
  int residentBlocks(size_t kernel, unsigned threads) const;

 private:
  void* module_ = nullptr;           // CUmodule
  std::vector<void*> functions_;     // CUfunction
};

}  // namespace genqueue
