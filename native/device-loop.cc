// genqueue device loop: a Node-API addon that runs a model's device-loop step graph (device-loop-graph.ts)
// through ONNX Runtime's C API with every input and output bound to device buffers (IO binding), so that on
// CUDA the step is captured once as a CUDA graph and then replayed: no host work between decode steps.
// onnxruntime-node's JS API cannot bind device memory nor set CUDA provider options; this is the part it lacks.
//
// The ONNX Runtime library is the one onnxruntime-node ships: its path comes from JS and is opened with
// dlopen, so the addon links nothing but libdl and cannot load a second copy.
#include <node_api.h>
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda-runtime.h"
#include "custom-op-context.h"
#include "decode-attention.h"
#include "graph-capture.h"
#include "greedy-next-token.h"
#include "handle-registry.h"
#include "napi-util.h"
#include "ort-api.h"
#include "slot-loop-napi.h"
#include "run-model.h"
#include "small-batch-matmul.h"

namespace {

using genqueue::CudaRuntime;
using genqueue::cudart;
using genqueue::DecodeAttention;
using genqueue::GreedyNextToken;
using genqueue::SmallBatchMatMul;

using genqueue::elementBytes;
using genqueue::elementCount;
namespace napi = genqueue::napi;

const OrtApi* ort = nullptr;

void check(OrtStatus* status) { genqueue::checkOrt(ort, status); }

// The step graph's input/output names, as src/model/contract.ts defines them (the addon repeats none of them);
// per-layer caches are the prefix followed by the layer index.
struct Bindings {
  std::string tokens, tokensNext, step, stepNext, promptLengths, minLengths, pastLength;
  std::string pastKeyPrefix, pastValuePrefix, presentKeyPrefix, presentValuePrefix;
};

struct Options {
  bool cuda = false;
  int deviceId = 0;
  bool cudaGraph = false;  // replay runs of steps from CUDA graphs the addon captures (CUDA only)
  int numLayers = 0;
  int kvHeads = 0;  // each layer's K and V buffers are [batch, kvHeads, capacity, headSize]
  int headSize = 0;
  bool kvFloat16 = false;
  Bindings names;
  // A second step graph for batches of at most smallBatchRows (empty: none): the fp16 CUDA step built on
  // genqueue.SmallBatchMatMul (the 'small-batch' decoder variant), for the batches where it beats cuBLAS.
  std::string smallBatchStep;
  int smallBatchRows = 2;
  std::string profilePrefix;  // non-empty: ONNX Runtime writes a per-node profile of the step session
};

// Buffers and bindings for one (batch, capacity) shape. Their addresses never change, which is what lets captured
// CUDA graphs be replayed. They are the addon's own allocations, not ONNX Runtime's arena: a captured graph
// writes its intermediates to arena addresses that are free between runs, and must never find a slot there.
struct Slot {
  uint64_t lastUsed = 0;
  OrtSession* session = nullptr;  // the step graph this shape runs
  std::vector<OrtValue*> values;
  std::vector<void*> memory;
  OrtValue* tokens = nullptr;  // int64 [capacity, batch], read and written in place
  OrtValue* step[2] = {nullptr, nullptr};
  OrtValue* promptLengths = nullptr;
  OrtValue* minLengths = nullptr;
  OrtValue* pastLength = nullptr;  // CPU int32 scalar over pastLengthHost: the attention reads it on the host
  int32_t pastLengthHost = 0;
  OrtIoBinding* binding[2] = {nullptr, nullptr};  // step[p] → step[1-p]
  bool warm = false;           // a generate has completed on this slot
  bool captureFailed = false;  // a capture failed on a warm slot: this shape runs without graphs
  std::map<std::pair<int64_t, int64_t>, CudaRuntime::GraphExec> graphs;  // (first step, steps) → captured graph
};

class DeviceLoop {
 public:
  DeviceLoop(const std::string& stepPath, const Options& o) : options_(o) {
    liveLoops++;
    try {
      init(stepPath, o);
    } catch (...) {
      release();  // a constructor that throws runs no destructor: release what it created so far
      throw;
    }
  }

  ~DeviceLoop() { release(); }

  // DeviceLoop objects holding ONNX Runtime or CUDA resources, partly constructed ones included (resourceCounts()).
  static std::atomic<int> liveLoops;

  // Why the small-batch step given in the options is not used ('' when it is, or when none was given).
  const std::string& smallBatchError() const { return smallBatchError_; }

 private:
  void init(const std::string& stepPath, const Options& o) {
    check(ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "genqueue-device-loop", &env_));
    check(ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &cpuInfo_));
    if (o.cuda) {
      cudart.load();
      cudart.check(cudart.setDevice(o.deviceId), "cudaSetDevice");
      // Non-blocking: the legacy default stream (synchronous cudaMemcpy) must not serialize with it.
      cudart.check(cudart.streamCreateWithFlags(&stream_, CudaRuntime::kStreamNonBlocking), "cudaStreamCreateWithFlags");
      check(ort->CreateMemoryInfo("Cuda", OrtDeviceAllocator, o.deviceId, OrtMemTypeDefault, &deviceInfo_));
      // The fp16 CUDA steps' own operators (native/*.h), compiled here with NVRTC; the domain outlives the sessions.
      smallBatchMatMul_ = std::make_unique<SmallBatchMatMul>(ort, o.deviceId);
      greedyNextToken_ = std::make_unique<GreedyNextToken>(ort, o.deviceId);
      decodeAttention_ = std::make_unique<DecodeAttention>(ort, o.deviceId);
      check(ort->CreateCustomOpDomain(genqueue::kGenqueueDomain, &customOps_));
      check(ort->CustomOpDomain_Add(customOps_, smallBatchMatMul_.get()));
      check(ort->CustomOpDomain_Add(customOps_, greedyNextToken_.get()));
      check(ort->CustomOpDomain_Add(customOps_, decodeAttention_.get()));
    }
    step_ = createSession(stepPath);
    if (!o.smallBatchStep.empty() && o.smallBatchRows > 0) {
      if (o.smallBatchRows > SmallBatchMatMul::kMaxRows) throw std::invalid_argument("smallBatchRows is at most 2");
      // Its kernels compile here (NVRTC): one that fails costs the small batches their faster step, not the loop.
      try {
        smallStep_ = createSession(o.smallBatchStep);
      } catch (const std::exception& e) {
        smallBatchError_ = e.what();
        fprintf(stderr, "genqueue device loop: the small-batch step could not be created (%s); every batch runs the regular step\n", e.what());
      }
    }
    check(ort->CreateRunOptions(&runSync_));
    check(ort->CreateRunOptions(&runAsync_));
    // Inside a stream capture nothing may wait for the stream; the addon synchronizes before it reads results.
    check(ort->AddRunConfigEntry(runAsync_, "disable_synchronize_execution_providers", "1"));
  }

  // Releases whatever init() created; safe on a partly initialized loop, and once only.
  void release() {
    if (released_) return;
    released_ = true;
    for (OrtSession* session : {step_, smallStep_}) {
      if (options_.profilePrefix.empty() || session == nullptr) continue;
      OrtAllocator* a = nullptr;
      char* file = nullptr;
      if (ort->GetAllocatorWithDefaultOptions(&a) == nullptr && ort->SessionEndProfiling(session, a, &file) == nullptr && file != nullptr) a->Free(a, file);
    }
    for (auto& [key, slot] : slots_) releaseSlot(slot);
    if (runSync_ != nullptr) ort->ReleaseRunOptions(runSync_);
    if (runAsync_ != nullptr) ort->ReleaseRunOptions(runAsync_);
    if (deviceInfo_ != nullptr) ort->ReleaseMemoryInfo(deviceInfo_);
    if (cpuInfo_ != nullptr) ort->ReleaseMemoryInfo(cpuInfo_);
    if (step_ != nullptr) ort->ReleaseSession(step_);
    if (smallStep_ != nullptr) ort->ReleaseSession(smallStep_);
    if (customOps_ != nullptr) ort->ReleaseCustomOpDomain(customOps_);
    smallBatchMatMul_.reset();
    greedyNextToken_.reset();
    if (stream_ != nullptr) cudart.streamDestroy(stream_);
    if (env_ != nullptr) ort->ReleaseEnv(env_);
    liveLoops--;
  }

 public:
  struct Generated {
    std::vector<int32_t> tokens;
    int64_t steps = 0;
  };

  // tokens: batch × capacity (prompts left-aligned). Row b needs positions up to endLengths[b] - 1; the loop runs
  // until every row has them, or, every checkEvery steps, stops early once each row has ended with EOS (a token
  // copy to the host per check, so rows that stop early do not hold the batch to its longest length).
  Generated generate(const int32_t* tokens, const int32_t* promptLengths, const int32_t* minLengths, const int32_t* endLengths,
                     int64_t batch, int64_t capacity, int32_t eosTokenId, int64_t checkEvery) {
    int64_t steps = 0;
    bool eosCanEnd = false;  // false when min_new_tokens keeps EOS out of every row's range (benchmarks)
    for (int64_t b = 0; b < batch; b++) {
      if (promptLengths[b] < 1 || endLengths[b] <= promptLengths[b]) throw std::invalid_argument("each row needs 1 ≤ promptLength < endLength");
      steps = std::max<int64_t>(steps, endLengths[b] - 1);
      if (minLengths[b] < endLengths[b] - 1) eosCanEnd = true;
    }
    if (steps >= capacity) throw std::invalid_argument("endLengths exceed the capacity");
    if (options_.cuda) {
      cudart.check(cudart.setDevice(options_.deviceId), "cudaSetDevice");
      // A call that failed part-way may have left steps queued on the stream; they must not race the uploads.
      cudart.check(cudart.deviceSynchronize(), "cudaDeviceSynchronize");
    }
    Slot& slot = slotFor(batch, capacity);
    std::vector<int64_t> positionMajor(capacity * batch);
    for (int64_t b = 0; b < batch; b++)
      for (int64_t p = 0; p < capacity; p++) positionMajor[p * batch + b] = tokens[b * capacity + p];
    upload(slot.tokens, positionMajor.data(), positionMajor.size());
    const int64_t zero = 0;
    upload(slot.step[0], &zero, 1);
    std::vector<int64_t> lengths(promptLengths, promptLengths + batch);
    upload(slot.promptLengths, lengths.data(), batch);
    lengths.assign(minLengths, minLengths + batch);
    upload(slot.minLengths, lengths.data(), batch);

    Generated out{std::vector<int32_t>(batch * capacity), steps};
    std::vector<int64_t> scanned(promptLengths, promptLengths + batch);
    std::vector<bool> ended(batch, false);
    const bool watchEos = eosCanEnd && eosTokenId >= 0 && checkEvery > 0;
    const int64_t chunk = checkEvery > 0 ? checkEvery : kChunkSteps;
    bool replay = options_.cudaGraph && !slot.captureFailed;
    for (int64_t first = 0; first < steps; first += chunk) {
      const int64_t count = std::min(chunk, steps - first);
      CudaRuntime::GraphExec graph = replay ? graphFor(slot, first, count) : nullptr;
      replay = replay && graph != nullptr;  // after a failed capture, the rest of this call runs plainly
      if (graph != nullptr) {
        cudart.check(cudart.graphLaunch(graph, stream_), "cudaGraphLaunch");
      } else {
        for (int64_t s = first; s < first + count; s++) check(launchStep(slot, s, runSync_));
      }
      const int64_t done = first + count;  // positions 0..done now hold tokens
      if (watchEos && done < steps && done % checkEvery == 0) {
        download(slot, positionMajor);
        toBatchMajor(positionMajor, out.tokens, batch, capacity);
        if (allEnded(out.tokens.data(), endLengths, batch, capacity, eosTokenId, done, scanned, ended)) {
          out.steps = done;
          slot.warm = true;
          return out;
        }
      }
    }
    download(slot, positionMajor);
    toBatchMajor(positionMajor, out.tokens, batch, capacity);
    slot.warm = true;
    return out;
  }

 private:
  static constexpr int64_t kChunkSteps = 16;

  // Runs (or, inside a capture, records) step s: its past length is the host scalar the attention reads at launch.
  OrtStatus* launchStep(Slot& slot, int64_t s, OrtRunOptions* runOptions) {
    slot.pastLengthHost = static_cast<int32_t>(s);
    return ort->RunWithBinding(slot.session, runOptions, slot.binding[s & 1]);
  }

  // Captures steps first..first+count-1 into one CUDA graph: each step's kernels, with its past length baked in as
  // the host value the attention read while it was launched. A slot's first call captures too (relaxed capture
  // mode lets ONNX Runtime's arena grow meanwhile); a capture that fails runs the steps plainly instead of failing
  // the request, and on a slot that has completed a call before (an ONNX Runtime whose kernels do something a
  // capture forbids) switches the shape to plain runs for good.
  CudaRuntime::GraphExec graphFor(Slot& slot, int64_t first, int64_t count) {
    auto key = std::make_pair(first, count);
    auto found = slot.graphs.find(key);
    if (found != slot.graphs.end()) return found->second;
    CudaRuntime::GraphExec exec = nullptr;
    const std::string failed = genqueue::captureGraph(
        ort, stream_,
        [&]() -> OrtStatus* {
          OrtStatus* status = nullptr;
          for (int64_t s = first; s < first + count && status == nullptr; s++) status = launchStep(slot, s, runAsync_);
          return status;
        },
        &exec);
    if (!failed.empty()) {
      if (slot.warm) {
        fprintf(stderr, "genqueue device loop: CUDA graph capture failed (%s); this shape runs without graphs\n", failed.c_str());
        slot.captureFailed = true;
      }
      return nullptr;
    }
    slot.graphs[key] = exec;
    return exec;
  }

  static void toBatchMajor(const std::vector<int64_t>& positionMajor, std::vector<int32_t>& out, int64_t batch, int64_t capacity) {
    for (int64_t p = 0; p < capacity; p++)
      for (int64_t b = 0; b < batch; b++) out[b * capacity + p] = static_cast<int32_t>(positionMajor[p * batch + b]);
  }

  static bool allEnded(const int32_t* tokens, const int32_t* endLengths, int64_t batch, int64_t capacity, int32_t eos, int64_t done,
                       std::vector<int64_t>& scanned, std::vector<bool>& ended) {
    bool all = true;
    for (int64_t b = 0; b < batch; b++) {
      if (ended[b]) continue;
      if (done >= endLengths[b] - 1) {
        ended[b] = true;
        continue;
      }
      for (int64_t p = scanned[b]; p <= done && !ended[b]; p++) ended[b] = tokens[b * capacity + p] == eos;
      scanned[b] = done + 1;
      all = all && ended[b];
    }
    return all;
  }

  void* dataOf(OrtValue* v) {
    void* p = nullptr;
    check(ort->GetTensorMutableData(v, &p));
    return p;
  }

  void upload(OrtValue* dst, const int64_t* src, int64_t count) {
    const size_t bytes = sizeof(int64_t) * count;
    if (!options_.cuda) {
      std::memcpy(dataOf(dst), src, bytes);
      return;
    }
    cudart.check(cudart.memcpy(dataOf(dst), src, bytes, CudaRuntime::kHostToDevice), "cudaMemcpy to device");
  }

  void download(Slot& slot, std::vector<int64_t>& dst) {
    const size_t bytes = sizeof(int64_t) * dst.size();
    if (!options_.cuda) {
      std::memcpy(dst.data(), dataOf(slot.tokens), bytes);
      return;
    }
    // Steps run on the addon's stream (non-blocking), which a synchronous cudaMemcpy would not wait for.
    cudart.check(cudart.deviceSynchronize(), "cudaDeviceSynchronize");
    cudart.check(cudart.memcpy(dst.data(), dataOf(slot.tokens), bytes, CudaRuntime::kDeviceToHost), "cudaMemcpy to host");
  }

  OrtSession* createSession(const std::string& path) {
    genqueue::SessionSettings settings;
    settings.cuda = options_.cuda;
    settings.deviceId = options_.deviceId;
    settings.stream = stream_;
    settings.customOps = customOps_;  // the fp16 CUDA steps' operators; none on the CPU provider
    settings.profilePrefix = options_.profilePrefix;
    return genqueue::createSession(ort, env_, path, settings);
  }

  // A zero-filled tensor in the addon's own memory (device memory on CUDA, host memory on the CPU provider).
  OrtValue* tensor(Slot& slot, const std::vector<int64_t>& shape, ONNXTensorElementDataType type) {
    const size_t bytes = elementBytes(type) * elementCount(shape);
    void* p = nullptr;
    if (options_.cuda) {
      cudart.check(cudart.malloc(&p, bytes), "cudaMalloc");
      slot.memory.push_back(p);
      cudart.check(cudart.memset(p, 0, bytes), "cudaMemset");
    } else {
      p = std::calloc(1, bytes);
      if (p == nullptr) throw std::bad_alloc();
      slot.memory.push_back(p);
    }
    OrtValue* v = nullptr;
    check(ort->CreateTensorWithDataAsOrtValue(options_.cuda ? deviceInfo_ : cpuInfo_, p, bytes, shape.data(), shape.size(), type, &v));
    slot.values.push_back(v);
    return v;
  }

  // Each shape keeps its KV buffers (and, on CUDA, its captured graphs); beyond kMaxSlots shapes the least
  // recently used one is released, so a worker fed many prompt-length/batch mixes does not grow without bound.
  static constexpr size_t kMaxSlots = 8;

  Slot& slotFor(int64_t batch, int64_t capacity) {
    auto key = std::make_pair(batch, capacity);
    auto found = slots_.find(key);
    if (found != slots_.end()) {
      found->second.lastUsed = ++useClock_;
      return found->second;
    }
    if (slots_.size() >= kMaxSlots) {
      auto oldest = slots_.begin();
      for (auto it = slots_.begin(); it != slots_.end(); ++it) {
        if (it->second.lastUsed < oldest->second.lastUsed) oldest = it;
      }
      releaseSlot(oldest->second);
      slots_.erase(oldest);
    }
    Slot& slot = slots_[key];
    slot.lastUsed = ++useClock_;
    slot.session = smallStep_ != nullptr && batch <= options_.smallBatchRows ? smallStep_ : step_;
    try {
      buildSlot(slot, batch, capacity);
    } catch (...) {
      releaseSlot(slot);
      slots_.erase(key);
      throw;
    }
    return slot;
  }

  void buildSlot(Slot& slot, int64_t batch, int64_t capacity) {
    const auto i64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    const auto kvType = options_.kvFloat16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    slot.tokens = tensor(slot, {capacity, batch}, i64);
    for (int p = 0; p < 2; p++) slot.step[p] = tensor(slot, {1}, i64);
    slot.promptLengths = tensor(slot, {batch}, i64);
    slot.minLengths = tensor(slot, {batch}, i64);
    const int64_t scalarShape[] = {1};
    check(ort->CreateTensorWithDataAsOrtValue(cpuInfo_, &slot.pastLengthHost, sizeof(int32_t), scalarShape, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                                              &slot.pastLength));
    slot.values.push_back(slot.pastLength);
    std::vector<OrtValue*> keys, values;
    for (int l = 0; l < options_.numLayers; l++) {
      keys.push_back(tensor(slot, {batch, options_.kvHeads, capacity, options_.headSize}, kvType));
      values.push_back(tensor(slot, {batch, options_.kvHeads, capacity, options_.headSize}, kvType));
    }
    const Bindings& n = options_.names;
    for (int p = 0; p < 2; p++) {
      OrtIoBinding* b = nullptr;
      check(ort->CreateIoBinding(slot.session, &b));
      slot.binding[p] = b;
      // tokens and the caches are read and written in place: one buffer bound as input and output.
      check(ort->BindInput(b, n.tokens.c_str(), slot.tokens));
      check(ort->BindOutput(b, n.tokensNext.c_str(), slot.tokens));
      check(ort->BindInput(b, n.step.c_str(), slot.step[p]));
      check(ort->BindOutput(b, n.stepNext.c_str(), slot.step[1 - p]));
      check(ort->BindInput(b, n.promptLengths.c_str(), slot.promptLengths));
      check(ort->BindInput(b, n.minLengths.c_str(), slot.minLengths));
      check(ort->BindInput(b, n.pastLength.c_str(), slot.pastLength));
      for (int l = 0; l < options_.numLayers; l++) {
        std::string layer = std::to_string(l);
        check(ort->BindInput(b, (n.pastKeyPrefix + layer).c_str(), keys[l]));
        check(ort->BindInput(b, (n.pastValuePrefix + layer).c_str(), values[l]));
        check(ort->BindOutput(b, (n.presentKeyPrefix + layer).c_str(), keys[l]));
        check(ort->BindOutput(b, (n.presentValuePrefix + layer).c_str(), values[l]));
      }
    }
  }

  void releaseSlot(Slot& slot) {
    for (auto& [key, exec] : slot.graphs) cudart.graphExecDestroy(exec);
    slot.graphs.clear();
    for (int p = 0; p < 2; p++) {
      if (slot.binding[p] != nullptr) ort->ReleaseIoBinding(slot.binding[p]);
      slot.binding[p] = nullptr;
    }
    for (OrtValue* v : slot.values) ort->ReleaseValue(v);
    slot.values.clear();
    for (void* p : slot.memory) {
      if (options_.cuda) cudart.free(p);
      else std::free(p);
    }
    slot.memory.clear();
  }

  Options options_;
  OrtEnv* env_ = nullptr;
  OrtMemoryInfo* cpuInfo_ = nullptr;
  OrtMemoryInfo* deviceInfo_ = nullptr;
  CudaRuntime::Stream stream_ = nullptr;
  std::unique_ptr<SmallBatchMatMul> smallBatchMatMul_;
  std::unique_ptr<GreedyNextToken> greedyNextToken_;
  std::unique_ptr<DecodeAttention> decodeAttention_;
  OrtCustomOpDomain* customOps_ = nullptr;
  OrtSession* step_ = nullptr;
  OrtSession* smallStep_ = nullptr;  // batches of at most options_.smallBatchRows, when given
  std::string smallBatchError_;
  OrtRunOptions* runSync_ = nullptr;
  OrtRunOptions* runAsync_ = nullptr;
  std::map<std::pair<int64_t, int64_t>, Slot> slots_;
  uint64_t useClock_ = 0;
  bool released_ = false;
};

std::atomic<int> DeviceLoop::liveLoops{0};

// ---- Node-API glue ----

genqueue::HandleRegistry<DeviceLoop> loops("device loop");

// open(ortLibraryPath, stepPath, options) → handle
napi_value Open(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 3);
    ort = genqueue::loadOrtApi(napi::string(env, argv[0], "ortLibrary"));
    Options o;
    napi_value opts = argv[2];
    const auto integer = [&](const char* name) { return static_cast<int>(napi::intProperty(env, opts, name)); };
    o.cuda = napi::boolProperty(env, opts, "cuda");
    o.deviceId = integer("deviceId");
    o.cudaGraph = napi::boolProperty(env, opts, "cudaGraph");
    o.numLayers = integer("numLayers");
    o.kvHeads = integer("kvHeads");
    o.headSize = integer("headSize");
    o.kvFloat16 = napi::boolProperty(env, opts, "kvFloat16");
    napi_value names = napi::property(env, opts, "bindings");
    napi_valuetype namesType;
    napi::call(napi_typeof(env, names, &namesType), "napi_typeof");
    if (namesType != napi_object) throw std::invalid_argument("option bindings must be an object of binding names");
    const auto name = [&](const char* key) { return napi::stringProperty(env, names, key); };
    o.names = Bindings{name("tokens"),        name("tokensNext"),      name("step"),           name("stepNext"),
                       name("promptLengths"), name("minLengths"),      name("pastLength"),     name("pastKeyPrefix"),
                       name("pastValuePrefix"), name("presentKeyPrefix"), name("presentValuePrefix")};
    o.profilePrefix = napi::optionalString(env, opts, "profilePrefix");
    o.smallBatchStep = napi::optionalString(env, opts, "smallBatchStep");
    if (napi::has(env, opts, "smallBatchRows")) o.smallBatchRows = integer("smallBatchRows");

    if (o.cudaGraph && !o.cuda) throw std::invalid_argument("cudaGraph needs the CUDA provider");
    if (!o.smallBatchStep.empty() && !o.cuda) throw std::invalid_argument("smallBatchStep needs the CUDA provider");
    return loops.wrap(env, new DeviceLoop(napi::string(env, argv[1], "stepPath"), o));
  });
}

// generate(handle, tokens Int32Array[B*C], promptLengths, minLengths, endLengths (Int32Array[B] each), B, C,
//          eosTokenId (-1: none), checkEvery) → { tokens: Int32Array[B*C], steps }
napi_value Generate(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 9);
    DeviceLoop* loop = loops.get(env, argv[0]);
    int64_t batch = napi::integer(env, argv[5], "batch");
    int64_t capacity = napi::integer(env, argv[6], "capacity");
    int64_t eos = napi::integer(env, argv[7], "eosTokenId");
    int64_t checkEvery = napi::integer(env, argv[8], "checkEvery");
    if (batch < 1 || capacity < 2) throw std::invalid_argument("batch must be ≥ 1 and capacity ≥ 2");
    const int32_t* tokens = napi::int32View(env, argv[1], batch * capacity, "tokens");
    const int32_t* prompt = napi::int32View(env, argv[2], batch, "promptLengths");
    const int32_t* minLen = napi::int32View(env, argv[3], batch, "minLengths");
    const int32_t* endLen = napi::int32View(env, argv[4], batch, "endLengths");
    auto out = loop->generate(tokens, prompt, minLen, endLen, batch, capacity, static_cast<int32_t>(eos), checkEvery);
    napi_value result = napi::object(env);
    napi::set(env, result, "tokens", napi::newTypedArray(env, napi_int32_array, out.tokens.data(), out.tokens.size(), sizeof(int32_t)));
    napi::set(env, result, "steps", napi::fromInt(env, out.steps));
    return result;
  });
}

// close(handle): releases sessions and device buffers; the handle must not be used afterwards, but closing it
// again does nothing.
napi_value Close(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 1);
    loops.close(env, argv[0]);
    return nullptr;
  });
}

// smallBatchError(handle) → why the small-batch step given to open() is not used, or undefined when it is (or none
// was given).
napi_value SmallBatchError(napi_env env, napi_callback_info info) {
  return napi::guarded(env, [&]() -> napi_value {
    auto argv = napi::args(env, info, 1);
    const std::string& error = loops.get(env, argv[0])->smallBatchError();
    napi_value out;
    if (error.empty()) napi::call(napi_get_undefined(env, &out), "napi_get_undefined");
    else napi::call(napi_create_string_utf8(env, error.c_str(), error.size(), &out), "napi_create_string_utf8");
    return out;
  });
}

// resourceCounts() → { loops }: DeviceLoops holding resources in this process (tests check that nothing leaks).
napi_value ResourceCounts(napi_env env, napi_callback_info) {
  return napi::guarded(env, [&]() -> napi_value {
    napi_value result = napi::object(env);
    napi::set(env, result, "loops", napi::fromInt(env, DeviceLoop::liveLoops.load()));
    return result;
  });
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", nullptr, Open, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"generate", nullptr, Generate, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"close", nullptr, Close, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"resourceCounts", nullptr, ResourceCounts, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"smallBatchError", nullptr, SmallBatchError, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"runModel", nullptr, genqueue::RunModel, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  genqueue::defineSlotLoopExports(env, exports);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
