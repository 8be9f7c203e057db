// The slot loop's Node-API functions (src/engine/slot-addon.ts declares them), added to the addon's exports by
// its Init (device-loop.cc), and runGraph(): one run of any model with the addon's operators registered, which
// the NextToken tests use to run the operator alone.
#include "slot-loop-napi.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "custom-op-context.h"
#include "handle-registry.h"
#include "napi-util.h"
#include "next-token.h"
#include "ort-api.h"
#include "slot-loop.h"
#include "tensor-types.h"

namespace genqueue {
namespace {

HandleRegistry<SlotLoop> loops("slot loop");

SlotBindings bindingsOf(napi_env env, napi_value b) {
  using napi::stringProperty;
  SlotBindings n;
  n.inputIds = stringProperty(env, b, "inputIds");
  n.positionIds = stringProperty(env, b, "positionIds");
  n.seqlensK = stringProperty(env, b, "seqlensK");
  n.totalSequenceLength = stringProperty(env, b, "totalSequenceLength");
  n.inputIdsNext = stringProperty(env, b, "inputIdsNext");
  n.positionIdsNext = stringProperty(env, b, "positionIdsNext");
  n.seqlensKNext = stringProperty(env, b, "seqlensKNext");
  n.state = stringProperty(env, b, "state");
  n.stateNext = stringProperty(env, b, "stateNext");
  n.params = stringProperty(env, b, "params");
  n.history = stringProperty(env, b, "history");
  n.historyNext = stringProperty(env, b, "historyNext");
  n.ring = stringProperty(env, b, "ring");
  n.ringNext = stringProperty(env, b, "ringNext");
  n.counter = stringProperty(env, b, "counter");
  n.counterNext = stringProperty(env, b, "counterNext");
  n.pastKeyPrefix = stringProperty(env, b, "pastKeyPrefix");
  n.pastValuePrefix = stringProperty(env, b, "pastValuePrefix");
  n.presentKeyPrefix = stringProperty(env, b, "presentKeyPrefix");
  n.presentValuePrefix = stringProperty(env, b, "presentValuePrefix");
  return n;
}

int intOption(napi_env env, napi_value o, const char* name) { return static_cast<int>(napi::intProperty(env, o, name)); }

// slotOpen(ortLibrary, options) → handle
napi_value SlotOpen(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 2);
    const OrtApi* api = loadOrtApi(napi::string(env, argv[0], "ortLibrary"));
    napi_value o = argv[1];
    SlotLoopOptions options;
    options.decodeStep = napi::stringProperty(env, o, "decodeStep");
    options.prefillStep = napi::stringProperty(env, o, "prefillStep");
    options.cuda = napi::boolProperty(env, o, "cuda");
    options.deviceId = intOption(env, o, "deviceId");
    options.cudaGraph = napi::boolProperty(env, o, "cudaGraph");
    options.numLayers = intOption(env, o, "numLayers");
    options.kvHeads = intOption(env, o, "kvHeads");
    options.headSize = intOption(env, o, "headSize");
    options.kvFloat16 = napi::boolProperty(env, o, "kvFloat16");
    options.slots = intOption(env, o, "slots");
    options.capacity = intOption(env, o, "capacity");
    options.chunkSteps = intOption(env, o, "chunkSteps");
    options.prefillChunk = intOption(env, o, "prefillChunk");
    options.prefillRows = intOption(env, o, "prefillRows");
    options.vocabSize = intOption(env, o, "vocabSize");
    options.intraOpThreads = intOption(env, o, "intraOpThreads");
    options.prefillProfilePrefix = napi::optionalString(env, o, "prefillProfilePrefix");
    options.warmPrefill = napi::has(env, o, "warmPrefill") && napi::boolProperty(env, o, "warmPrefill");
    options.names = bindingsOf(env, napi::property(env, o, "bindings"));
    return loops.wrap(env, new SlotLoop(api, options));
  });
}

// slotAdmit(handle, rows: {slot, promptIds: Int32Array, maxNewTokens, minNewTokens, seed: bigint, topK, sample,
// temperature, topP, repetitionPenalty}[])
napi_value SlotAdmit(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 2);
    SlotLoop* loop = loops.get(env, argv[0]);
    const uint32_t count = napi::arrayLength(env, argv[1], "rows");
    std::vector<SlotAdmission> rows(count);
    for (uint32_t i = 0; i < count; i++) {
      napi_value r = napi::element(env, argv[1], i);
      SlotAdmission& a = rows[i];
      a.slot = intOption(env, r, "slot");
      a.prompt = napi::int32s(env, napi::property(env, r, "promptIds"), "promptIds");
      a.maxNewTokens = napi::intProperty(env, r, "maxNewTokens");
      a.minNewTokens = napi::intProperty(env, r, "minNewTokens");
      a.seed = napi::bigUint(env, napi::property(env, r, "seed"), "seed");
      a.topK = napi::intProperty(env, r, "topK");
      a.sample = napi::boolProperty(env, r, "sample");
      a.temperature = static_cast<float>(napi::numberProperty(env, r, "temperature"));
      a.topP = static_cast<float>(napi::numberProperty(env, r, "topP"));
      a.repetitionPenalty = static_cast<float>(napi::numberProperty(env, r, "repetitionPenalty"));
    }
    loop->admit(rows);
    return nullptr;
  });
}

// slotRelease(handle, slots: Int32Array)
napi_value SlotRelease(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 2);
    SlotLoop* loop = loops.get(env, argv[0]);
    const std::vector<int32_t> slots = napi::int32s(env, argv[1], "slots");
    loop->release(std::vector<int>(slots.begin(), slots.end()));
    return nullptr;
  });
}

// slotRun(handle) → { ring: Int32Array [K * S], status: Int32Array [S] }
napi_value SlotRun(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 1);
    const SlotChunk chunk = loops.get(env, argv[0])->run();
    napi_value result = napi::object(env);
    napi::set(env, result, "ring", napi::newTypedArray(env, napi_int32_array, chunk.ring.data(), chunk.ring.size(), sizeof(int32_t)));
    napi::set(env, result, "status", napi::newTypedArray(env, napi_int32_array, chunk.status.data(), chunk.status.size(), sizeof(int32_t)));
    return result;
  });
}

// slotStats(handle) → counters of the loop's work and time, and the rows running on the device
napi_value SlotStats(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 1);
    const SlotLoopStats s = loops.get(env, argv[0])->stats();
    napi_value result = napi::object(env);
    napi::set(env, result, "chunks", napi::fromInt(env, s.chunks));
    napi::set(env, result, "decodeSteps", napi::fromInt(env, s.decodeSteps));
    napi::set(env, result, "graphReplays", napi::fromInt(env, s.graphReplays));
    napi::set(env, result, "prefillRuns", napi::fromInt(env, s.prefillRuns));
    napi::set(env, result, "prefillTokens", napi::fromInt(env, s.prefillTokens));
    napi::set(env, result, "admitted", napi::fromInt(env, s.admitted));
    napi::set(env, result, "running", napi::fromInt(env, s.running));
    napi::set(env, result, "prefillSeconds", napi::fromDouble(env, s.prefillSeconds));
    napi::set(env, result, "decodeSeconds", napi::fromDouble(env, s.decodeSeconds));
    napi::set(env, result, "hostSeconds", napi::fromDouble(env, s.hostSeconds));
    napi::set(env, result, "admitSeconds", napi::fromDouble(env, s.admitSeconds));
    napi::set(env, result, "rowSteps", napi::fromInt(env, s.rowSteps));
    napi::set(env, result, "emittedTokens", napi::fromInt(env, s.emittedTokens));
    return result;
  });
}

// slotClose(handle): releases sessions and buffers; closing again does nothing.
napi_value SlotClose(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 1);
    loops.close(env, argv[0]);
    return nullptr;
  });
}

// slotResourceCounts() → { slotLoops }: SlotLoops holding resources in this process.
napi_value SlotResourceCounts(napi_env env, napi_callback_info) {
  return napi::guarded(env, [&]() -> napi_value {
    napi_value result = napi::object(env);
    napi::set(env, result, "slotLoops", napi::fromInt(env, SlotLoop::live.load()));
    return result;
  });
}

// ---- runGraph ----

// Everything one run creates, released in reverse order on every path.
struct OneRun {
  const OrtApi* api;
  OrtEnv* env = nullptr;
  OrtMemoryInfo* cpu = nullptr;
  std::unique_ptr<NextToken> nextToken;
  OrtCustomOpDomain* domain = nullptr;
  OrtSession* session = nullptr;
  std::vector<OrtValue*> inputs, outputs;
  std::vector<std::vector<char>> inputData;  // copies: the JS memory may move while the session runs

  explicit OneRun(const OrtApi* a) : api(a) {}
  ~OneRun() {
    for (OrtValue* v : outputs)
      if (v != nullptr) api->ReleaseValue(v);
    for (OrtValue* v : inputs) api->ReleaseValue(v);
    if (session != nullptr) api->ReleaseSession(session);
    if (domain != nullptr) api->ReleaseCustomOpDomain(domain);
    nextToken.reset();
    if (cpu != nullptr) api->ReleaseMemoryInfo(cpu);
    if (env != nullptr) api->ReleaseEnv(env);
  }
};

// runGraph(ortLibrary, modelPath, { cuda, deviceId }, feeds: { [name]: { type, dims, data } }, outputNames)
//   → { [name]: { type, dims, data } }: host tensors in and out; on CUDA, ONNX Runtime copies them across.
napi_value RunGraph(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 5);
    const OrtApi* api = loadOrtApi(napi::string(env, argv[0], "ortLibrary"));
    const std::string model = napi::string(env, argv[1], "modelPath");
    const bool cuda = napi::boolProperty(env, argv[2], "cuda");
    const int deviceId = intOption(env, argv[2], "deviceId");
    OneRun run(api);
    checkOrt(api, api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "genqueue-run-graph", &run.env));
    checkOrt(api, api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &run.cpu));
    run.nextToken = std::make_unique<NextToken>(api, cuda, deviceId);
    checkOrt(api, api->CreateCustomOpDomain(kGenqueueDomain, &run.domain));
    checkOrt(api, api->CustomOpDomain_Add(run.domain, run.nextToken.get()));
    SessionSettings settings;
    settings.cuda = cuda;
    settings.deviceId = deviceId;
    settings.customOps = run.domain;
    run.session = createSession(api, run.env, model, settings);

    napi_value feeds = argv[3], names;
    napi::call(napi_get_property_names(env, feeds, &names), "napi_get_property_names");
    const uint32_t count = napi::arrayLength(env, names, "feeds");
    std::vector<std::string> inputNames;
    for (uint32_t i = 0; i < count; i++) {
      inputNames.push_back(napi::string(env, napi::element(env, names, i), "feed name"));
      napi_value feed = napi::property(env, feeds, inputNames.back().c_str());
      const TensorType& type = tensorTypeNamed(napi::stringProperty(env, feed, "type"));
      napi_value dimsArray = napi::property(env, feed, "dims");
      std::vector<int64_t> dims(napi::arrayLength(env, dimsArray, "dims"));
      int64_t elements = 1;
      for (uint32_t d = 0; d < dims.size(); d++) elements *= dims[d] = napi::integer(env, napi::element(env, dimsArray, d), "dims");
      napi::TypedArray data = napi::typedArray(env, napi::property(env, feed, "data"), "data");
      if (data.type != type.js || static_cast<int64_t>(data.length) != elements) {
        throw std::invalid_argument("feed " + inputNames.back() + ": data does not match its type and dims");
      }
      const char* bytes = static_cast<const char*>(data.data);
      run.inputData.emplace_back(bytes, bytes + elements * type.bytes);
      OrtValue* v = nullptr;
      checkOrt(api, api->CreateTensorWithDataAsOrtValue(run.cpu, run.inputData.back().data(), run.inputData.back().size(), dims.data(), dims.size(),
                                                        type.onnx, &v));
      run.inputs.push_back(v);
    }
    const uint32_t outputCount = napi::arrayLength(env, argv[4], "outputNames");
    std::vector<std::string> outputNames;
    for (uint32_t i = 0; i < outputCount; i++) outputNames.push_back(napi::string(env, napi::element(env, argv[4], i), "output name"));
    std::vector<const char*> in, out;
    for (const std::string& n : inputNames) in.push_back(n.c_str());
    for (const std::string& n : outputNames) out.push_back(n.c_str());
    run.outputs.assign(outputCount, nullptr);
    checkOrt(api, api->Run(run.session, nullptr, in.data(), run.inputs.data(), in.size(), out.data(), out.size(), run.outputs.data()));

    napi_value result = napi::object(env);
    for (uint32_t i = 0; i < outputCount; i++) {
      OrtTensorTypeAndShapeInfo* shape = nullptr;
      checkOrt(api, api->GetTensorTypeAndShape(run.outputs[i], &shape));
      ONNXTensorElementDataType onnx = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      size_t rank = 0;
      OrtStatus* failed = api->GetTensorElementType(shape, &onnx);
      if (failed == nullptr) failed = api->GetDimensionsCount(shape, &rank);
      std::vector<int64_t> dims(rank);
      if (failed == nullptr) failed = api->GetDimensions(shape, dims.data(), rank);
      api->ReleaseTensorTypeAndShapeInfo(shape);
      checkOrt(api, failed);
      const TensorType& type = tensorTypeOf(onnx, "runGraph");
      int64_t elements = 1;
      for (int64_t d : dims) elements *= d;
      void* data = nullptr;
      checkOrt(api, api->GetTensorMutableData(run.outputs[i], &data));
      napi_value tensor = napi::object(env), dimsArray;
      napi::call(napi_create_array_with_length(env, rank, &dimsArray), "napi_create_array_with_length");
      for (size_t d = 0; d < rank; d++) napi::call(napi_set_element(env, dimsArray, d, napi::fromInt(env, dims[d])), "napi_set_element");
      napi_value typeName;
      napi::call(napi_create_string_utf8(env, type.name, NAPI_AUTO_LENGTH, &typeName), "napi_create_string_utf8");
      napi::set(env, tensor, "type", typeName);
      napi::set(env, tensor, "dims", dimsArray);
      napi::set(env, tensor, "data", napi::newTypedArray(env, type.js, data, elements, type.bytes));
      napi::set(env, result, outputNames[i].c_str(), tensor);
    }
    return result;
  });
}

}  // namespace

void defineSlotLoopExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"slotOpen", nullptr, SlotOpen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotAdmit", nullptr, SlotAdmit, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotRelease", nullptr, SlotRelease, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotRun", nullptr, SlotRun, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotStats", nullptr, SlotStats, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotClose", nullptr, SlotClose, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slotResourceCounts", nullptr, SlotResourceCounts, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"runGraph", nullptr, RunGraph, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}

}  // namespace genqueue
