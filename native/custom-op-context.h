// What the addon's ONNX Runtime custom operators share: the parts of the OrtCustomOp table that are the same for
// all of them, and a thin reader of a kernel's context (inputs, outputs, stream) that throws instead of
// returning OrtStatus.
#pragma once
#include <onnxruntime_c_api.h>

#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ort-api.h"

namespace genqueue {

// The ONNX domain of the addon's operators (graph-builder.ts GENQUEUE_DOMAIN).
constexpr const char* kGenqueueDomain = "genqueue";

// Required single inputs and outputs, default memory, every opset version of the domain, on the CUDA provider.
inline void setCudaCustomOpDefaults(OrtCustomOp& op) {
  op.version = ORT_API_VERSION;
  op.GetExecutionProviderType = [](const OrtCustomOp*) { return "CUDAExecutionProvider"; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetStartVersion = [](const OrtCustomOp*) { return 1; };
  op.GetEndVersion = [](const OrtCustomOp*) { return std::numeric_limits<int>::max(); };
}

// KernelComputeV2 and KernelDestroy for an operator whose CreateKernelV2 makes `new Kernel{op, ...}`: compute
// runs Op::compute(kernel, context) and turns an exception into ONNX Runtime's error status. Op declares this a
// friend (compute and api_ stay private).
template <typename Kernel>
void setKernelCallbacks(OrtCustomOp& op) {
  op.KernelComputeV2 = [](void* kernel, OrtKernelContext* context) -> OrtStatusPtr {
    const auto* k = static_cast<const Kernel*>(kernel);
    try {
      k->op->compute(*k, context);
      return nullptr;
    } catch (const std::exception& e) {
      return k->op->api_->CreateStatus(ORT_FAIL, e.what());
    }
  };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
}

// An optional attribute of a node being created: absent means `fallback`.
inline int64_t intAttribute(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = fallback;
  if (OrtStatus* missing = api->KernelInfoGetAttribute_int64(info, name, &value)) {
    api->ReleaseStatus(missing);
    value = fallback;
  }
  return value;
}
inline float floatAttribute(const OrtApi* api, const OrtKernelInfo* info, const char* name, float fallback) {
  float value = fallback;
  if (OrtStatus* missing = api->KernelInfoGetAttribute_float(info, name, &value)) {
    api->ReleaseStatus(missing);
    value = fallback;
  }
  return value;
}

// Input i's shape as the graph declares it (-1 where a dimension is symbolic; initializers' shapes are known when
// the kernel is created).
inline std::vector<int64_t> declaredShape(const OrtApi* api, const OrtKernelInfo* info, size_t i) {
  OrtTypeInfo* type = nullptr;
  checkOrt(api, api->KernelInfo_GetInputTypeInfo(info, i, &type));
  const OrtTensorTypeAndShapeInfo* tensor = nullptr;
  size_t count = 0;
  std::vector<int64_t> dims;
  OrtStatus* failed = api->CastTypeInfoToTensorInfo(type, &tensor);
  if (failed == nullptr && tensor == nullptr) failed = api->CreateStatus(ORT_FAIL, "input is not a tensor");
  if (failed == nullptr) failed = api->GetDimensionsCount(tensor, &count);
  if (failed == nullptr) {
    dims.resize(count);
    failed = api->GetDimensions(tensor, dims.data(), count);
  }
  api->ReleaseTypeInfo(type);
  checkOrt(api, failed);
  return dims;
}

class CustomOpContext {
 public:
  CustomOpContext(const OrtApi* api, OrtKernelContext* context, const char* op) : api_(api), context_(context), op_(op) {}

  const OrtValue* input(size_t i) const {
    const OrtValue* v = nullptr;
    check(api_->KernelContext_GetInput(context_, i, &v));
    return v;
  }

  // Inputs present, counting trailing optional ones only when given.
  size_t inputCount() const {
    size_t n = 0;
    check(api_->KernelContext_GetInputCount(context_, &n));
    return n;
  }

  std::vector<int64_t> dims(const OrtValue* v) const {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(api_->GetTensorTypeAndShape(v, &info));
    size_t count = 0;
    std::vector<int64_t> out;
    OrtStatus* failed = api_->GetDimensionsCount(info, &count);
    if (failed == nullptr) {
      out.resize(count);
      failed = api_->GetDimensions(info, out.data(), count);
    }
    api_->ReleaseTensorTypeAndShapeInfo(info);
    check(failed);
    return out;
  }

  OrtValue* output(size_t i, const std::vector<int64_t>& shape) const {
    OrtValue* v = nullptr;
    check(api_->KernelContext_GetOutput(context_, i, shape.data(), shape.size(), &v));
    return v;
  }

  // The C API hands out input data as mutable pointers; the operators only read their inputs.
  void* data(const OrtValue* v) const {
    void* p = nullptr;
    check(api_->GetTensorMutableData(const_cast<OrtValue*>(v), &p));
    return p;
  }

  void* stream() const {
    void* s = nullptr;
    check(api_->KernelContext_GetGPUComputeStream(context_, &s));
    return s;
  }

  [[noreturn]] void fail(const std::string& why) const { throw std::runtime_error(std::string(op_) + ": " + why); }

 private:
  void check(OrtStatus* status) const {
    if (status == nullptr) return;
    std::string message = api_->GetErrorMessage(status);
    api_->ReleaseStatus(status);
    fail(message);
  }

  const OrtApi* api_;
  OrtKernelContext* context_;
  const char* op_;
};

}  // namespace genqueue
