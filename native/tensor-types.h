// The tensor element types the addon's test entries (runModel, runGraph) pass between JS typed arrays and ONNX
// Runtime tensors.
#pragma once
#include <node_api.h>
#include <onnxruntime_c_api.h>

#include <stdexcept>
#include <string>

namespace genqueue {

struct TensorType {
  const char* name;  // as JS names it
  ONNXTensorElementDataType onnx;
  napi_typedarray_type js;
  size_t bytes;
};

inline constexpr TensorType kTensorTypes[] = {
    {"float32", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, napi_float32_array, 4},
    {"float16", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, napi_uint16_array, 2},
    {"int64", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, napi_bigint64_array, 8},
    {"int32", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, napi_int32_array, 4},
};

inline const TensorType& tensorTypeNamed(const std::string& name) {
  for (const TensorType& t : kTensorTypes)
    if (name == t.name) return t;
  throw std::invalid_argument("tensor type " + name + " is not one of float32, float16, int64, int32");
}

// `what` names the caller in the error.
inline const TensorType& tensorTypeOf(ONNXTensorElementDataType onnx, const char* what) {
  for (const TensorType& t : kTensorTypes)
    if (t.onnx == onnx) return t;
  throw std::invalid_argument(std::string("an output has a tensor type ") + what + " does not return (" + std::to_string(onnx) + ")");
}

}  // namespace genqueue
