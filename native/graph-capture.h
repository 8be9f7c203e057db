// Recording a run of steps into a CUDA graph, as the device loop and the slot loop both do.
#pragma once
#include <onnxruntime_c_api.h>

#include <string>

#include "cuda-runtime.h"

namespace genqueue {

// Records what record() launches on stream into one CUDA graph (recording runs nothing; relaxed capture mode lets
// ONNX Runtime's arena grow meanwhile) and instantiates it into *exec. Returns "" on success, otherwise why it
// failed, with the (non-sticky) error the failed capture left cleared.
template <typename Record>
std::string captureGraph(const OrtApi* ort, CudaRuntime::Stream stream, Record&& record, CudaRuntime::GraphExec* exec) {
  *exec = nullptr;
  cudart.check(cudart.streamBeginCapture(stream, CudaRuntime::kCaptureModeRelaxed), "cudaStreamBeginCapture");
  OrtStatus* failed = record();
  CudaRuntime::Graph graph = nullptr;
  const int ended = cudart.streamEndCapture(stream, &graph);
  int instantiated = 1;
  if (failed == nullptr && ended == 0 && graph != nullptr) instantiated = cudart.graphInstantiateWithFlags(exec, graph, 0);
  if (graph != nullptr) cudart.graphDestroy(graph);
  if (failed == nullptr && ended == 0 && instantiated == 0) return "";
  std::string why = failed != nullptr ? ort->GetErrorMessage(failed) : cudart.errorString(ended != 0 ? ended : instantiated);
  if (failed != nullptr) ort->ReleaseStatus(failed);
  cudart.getLastError();
  *exec = nullptr;
  return why;
}

}  // namespace genqueue
