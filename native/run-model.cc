#include "run-model.h"

#include <onnxruntime_c_api.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "decode-attention.h"
#include "greedy-next-token.h"
#include "ort-api.h"
#include "small-batch-matmul.h"
#include "tensor-types.h"

namespace genqueue {
namespace {

void napiCheck(napi_status status, const char* what) {
  if (status != napi_ok) throw std::runtime_error(std::string("N-API: ") + what);
}

napi_value named(napi_env env, napi_value object, const char* name) {
  napi_value v;
  napiCheck(napi_get_named_property(env, object, name, &v), name);
  return v;
}

std::string stringOf(napi_env env, napi_value v, const char* what) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &length) != napi_ok) throw std::invalid_argument(std::string(what) + " must be a string");
  std::string s(length, '\0');
  napiCheck(napi_get_value_string_utf8(env, v, s.data(), length + 1, &length), what);
  return s;
}

std::vector<napi_value> elements(napi_env env, napi_value array, const char* what) {
  uint32_t length = 0;
  if (napi_get_array_length(env, array, &length) != napi_ok) throw std::invalid_argument(std::string(what) + " must be an array");
  std::vector<napi_value> out(length);
  for (uint32_t i = 0; i < length; i++) napiCheck(napi_get_element(env, array, i, &out[i]), what);
  return out;
}

// Everything one run holds, released in reverse order of creation whatever happened.
struct ModelRun {
  const OrtApi* ort;
  OrtEnv* env = nullptr;
  OrtMemoryInfo* cpu = nullptr;
  std::unique_ptr<SmallBatchMatMul> smallBatchMatMul;
  std::unique_ptr<GreedyNextToken> greedyNextToken;
  std::unique_ptr<DecodeAttention> decodeAttention;
  OrtCustomOpDomain* domain = nullptr;
  OrtSession* session = nullptr;
  std::vector<OrtValue*> inputs;
  std::vector<OrtValue*> outputs;

  explicit ModelRun(const OrtApi* api) : ort(api) {}
  ~ModelRun() {
    for (OrtValue* v : outputs) {
      if (v != nullptr) ort->ReleaseValue(v);
    }
    for (OrtValue* v : inputs) ort->ReleaseValue(v);
    if (session != nullptr) ort->ReleaseSession(session);
    if (domain != nullptr) ort->ReleaseCustomOpDomain(domain);
    decodeAttention.reset();
    greedyNextToken.reset();
    smallBatchMatMul.reset();
    if (cpu != nullptr) ort->ReleaseMemoryInfo(cpu);
    if (env != nullptr) ort->ReleaseEnv(env);
  }
};

}  // namespace

napi_value RunModel(napi_env env, napi_callback_info info) {
  try {
    size_t argc = 5;
    napi_value argv[5];
    napiCheck(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr), "napi_get_cb_info");
    if (argc < 5) throw std::invalid_argument("runModel(ortLibraryPath, modelPath, deviceId, feeds, outputNames)");
    const OrtApi* ort = loadOrtApi(stringOf(env, argv[0], "ortLibraryPath"));
    const std::string modelPath = stringOf(env, argv[1], "modelPath");
    int32_t deviceId = 0;
    if (napi_get_value_int32(env, argv[2], &deviceId) != napi_ok) throw std::invalid_argument("deviceId must be a number");

    ModelRun run(ort);
    cudart.load();
    cudart.check(cudart.setDevice(deviceId), "cudaSetDevice");
    checkOrt(ort, ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "genqueue-run-model", &run.env));
    checkOrt(ort, ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &run.cpu));
    run.smallBatchMatMul = std::make_unique<SmallBatchMatMul>(ort, deviceId);
    run.greedyNextToken = std::make_unique<GreedyNextToken>(ort, deviceId);
    run.decodeAttention = std::make_unique<DecodeAttention>(ort, deviceId);
    checkOrt(ort, ort->CreateCustomOpDomain(kGenqueueDomain, &run.domain));
    checkOrt(ort, ort->CustomOpDomain_Add(run.domain, run.smallBatchMatMul.get()));
    checkOrt(ort, ort->CustomOpDomain_Add(run.domain, run.greedyNextToken.get()));
    checkOrt(ort, ort->CustomOpDomain_Add(run.domain, run.decodeAttention.get()));
    SessionSettings settings;
    settings.cuda = true;
    settings.deviceId = deviceId;
    settings.customOps = run.domain;
    run.session = createSession(ort, run.env, modelPath, settings);

    std::vector<std::string> inputNames;
    for (napi_value feed : elements(env, argv[3], "feeds")) {
      inputNames.push_back(stringOf(env, named(env, feed, "name"), "feed name"));
      const TensorType& type = tensorTypeNamed(stringOf(env, named(env, feed, "type"), "feed type"));
      std::vector<int64_t> dims;
      size_t count = 1;
      for (napi_value d : elements(env, named(env, feed, "dims"), "feed dims")) {
        int64_t v = 0;
        if (napi_get_value_int64(env, d, &v) != napi_ok || v < 0) throw std::invalid_argument("feed dims must be non-negative numbers");
        dims.push_back(v);
        count *= static_cast<size_t>(v);
      }
      napi_typedarray_type arrayType;
      size_t length = 0;
      void* data = nullptr;
      if (napi_get_typedarray_info(env, named(env, feed, "data"), &arrayType, &length, &data, nullptr, nullptr) != napi_ok || arrayType != type.js ||
          length != count) {
        throw std::invalid_argument("feed " + inputNames.back() + ": data must be a " + type.name + " typed array of " + std::to_string(count) + " values");
      }
      OrtValue* value = nullptr;
      checkOrt(ort, ort->CreateTensorWithDataAsOrtValue(run.cpu, data, count * type.bytes, dims.data(), dims.size(), type.onnx, &value));
      run.inputs.push_back(value);
    }
    std::vector<std::string> outputNames;
    for (napi_value name : elements(env, argv[4], "outputNames")) outputNames.push_back(stringOf(env, name, "output name"));
    std::vector<const char*> inputPointers, outputPointers;
    for (const std::string& n : inputNames) inputPointers.push_back(n.c_str());
    for (const std::string& n : outputNames) outputPointers.push_back(n.c_str());
    run.outputs.assign(outputNames.size(), nullptr);
    checkOrt(ort, ort->Run(run.session, nullptr, inputPointers.data(), run.inputs.data(), run.inputs.size(), outputPointers.data(),
                                outputPointers.size(), run.outputs.data()));

    napi_value result;
    napiCheck(napi_create_array_with_length(env, outputNames.size(), &result), "napi_create_array_with_length");
    for (size_t i = 0; i < outputNames.size(); i++) {
      OrtTensorTypeAndShapeInfo* shape = nullptr;
      checkOrt(ort, ort->GetTensorTypeAndShape(run.outputs[i], &shape));
      ONNXTensorElementDataType onnxType = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      size_t rank = 0;
      std::vector<int64_t> dims;
      OrtStatus* failed = ort->GetTensorElementType(shape, &onnxType);
      if (failed == nullptr) failed = ort->GetDimensionsCount(shape, &rank);
      if (failed == nullptr) {
        dims.resize(rank);
        failed = ort->GetDimensions(shape, dims.data(), rank);
      }
      ort->ReleaseTensorTypeAndShapeInfo(shape);
      checkOrt(ort, failed);
      const TensorType& type = tensorTypeOf(onnxType, "runModel");
      size_t count = 1;
      for (int64_t d : dims) count *= static_cast<size_t>(d);
      void* source = nullptr;
      checkOrt(ort, ort->GetTensorMutableData(run.outputs[i], &source));
      napi_value buffer, array, dimsArray, output, text;
      void* target = nullptr;
      napiCheck(napi_create_arraybuffer(env, count * type.bytes, &target, &buffer), "napi_create_arraybuffer");
      if (count > 0) std::memcpy(target, source, count * type.bytes);
      napiCheck(napi_create_typedarray(env, type.js, count, buffer, 0, &array), "napi_create_typedarray");
      napiCheck(napi_create_array_with_length(env, rank, &dimsArray), "napi_create_array_with_length");
      for (size_t d = 0; d < rank; d++) {
        napi_value v;
        napiCheck(napi_create_int64(env, dims[d], &v), "napi_create_int64");
        napiCheck(napi_set_element(env, dimsArray, d, v), "napi_set_element");
      }
      napiCheck(napi_create_object(env, &output), "napi_create_object");
      napiCheck(napi_create_string_utf8(env, outputNames[i].c_str(), outputNames[i].size(), &text), "napi_create_string_utf8");
      napiCheck(napi_set_named_property(env, output, "name", text), "name");
      napiCheck(napi_create_string_utf8(env, type.name, NAPI_AUTO_LENGTH, &text), "napi_create_string_utf8");
      napiCheck(napi_set_named_property(env, output, "type", text), "type");
      napiCheck(napi_set_named_property(env, output, "dims", dimsArray), "dims");
      napiCheck(napi_set_named_property(env, output, "data", array), "data");
      napiCheck(napi_set_element(env, result, i, output), "napi_set_element");
    }
    return result;
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

}  // namespace genqueue
