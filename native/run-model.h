// runModel: one run of an ONNX model on the CUDA provider with the addon's operators registered, inputs from and
// outputs to host memory. The device loop returns tokens only; this is how the operators' outputs are checked
// against references (test/genqueue-operators.test.ts).
#pragma once
#include <node_api.h>

namespace genqueue {

// runModel(ortLibraryPath, modelPath, deviceId, feeds, outputNames) → outputs, where feeds and outputs are arrays of
// { name, type: 'float16' | 'float32' | 'int32' | 'int64', dims: number[], data } (data: Uint16Array for float16,
// Float32Array, Int32Array, BigInt64Array), outputs in outputNames' order.
napi_value RunModel(napi_env env, napi_callback_info info);

}  // namespace genqueue
