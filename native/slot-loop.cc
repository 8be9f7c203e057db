#include "slot-loop.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "custom-op-context.h"
#include "graph-capture.h"
#include "next-token-rules.h"
#include "ort-api.h"

namespace genqueue {

std::atomic<int> SlotLoop::live{0};

namespace {

constexpr auto kInt64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
constexpr auto kInt32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
constexpr auto kFloat = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;

// Adds the wall time of its scope to a counter on every way out, a throw included.
class ScopeSeconds {
 public:
  explicit ScopeSeconds(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~ScopeSeconds() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  ScopeSeconds(const ScopeSeconds&) = delete;
  ScopeSeconds& operator=(const ScopeSeconds&) = delete;

 private:
  double& total_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace

SlotLoop::SlotLoop(const OrtApi* api, const SlotLoopOptions& options) : ort_(api), o_(options) {
  live++;
  try {
    init();
  } catch (...) {
    releaseAll();  // a constructor that throws runs no destructor
    throw;
  }
}

SlotLoop::~SlotLoop() { releaseAll(); }

void SlotLoop::init() {
  if (o_.slots < 1 || o_.capacity < 2 || o_.chunkSteps < 1 || o_.prefillChunk < 1 || o_.prefillRows < 1 || o_.vocabSize < 1 || o_.numLayers < 1) {
    throw std::invalid_argument("slot loop: slots, chunkSteps, prefillChunk, prefillRows, vocabSize and numLayers must be ≥ 1 and capacity ≥ 2");
  }
  if (o_.prefillChunk > o_.capacity) throw std::invalid_argument("slot loop: prefillChunk exceeds the capacity");
  if (o_.cudaGraph && !o_.cuda) throw std::invalid_argument("slot loop: cudaGraph needs the CUDA provider");
  words_ = (o_.vocabSize + 31) / 32;
  checkOrt(ort_, ort_->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "genqueue-slot-loop", &env_));
  checkOrt(ort_, ort_->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &cpuInfo_));
  if (o_.cuda) {
    cudart.load();
    cudart.check(cudart.setDevice(o_.deviceId), "cudaSetDevice");
    // Non-blocking: the legacy default stream (synchronous cudaMemcpy) must not serialize with it.
    cudart.check(cudart.streamCreateWithFlags(&stream_, CudaRuntime::kStreamNonBlocking), "cudaStreamCreateWithFlags");
    for (CudaRuntime::Event* e : {&prefillBegin_, &prefillEnd_, &decodeBegin_, &decodeEnd_}) cudart.check(cudart.eventCreate(e), "cudaEventCreate");
    checkOrt(ort_, ort_->CreateMemoryInfo("Cuda", OrtDeviceAllocator, o_.deviceId, OrtMemTypeDefault, &deviceInfo_));
  }
  nextToken_ = std::make_unique<NextToken>(ort_, o_.cuda, o_.deviceId);
  checkOrt(ort_, ort_->CreateCustomOpDomain(kGenqueueDomain, &customOps_));
  checkOrt(ort_, ort_->CustomOpDomain_Add(customOps_, nextToken_.get()));
  decode_ = createSession(o_.decodeStep);
  prefill_ = createSession(o_.prefillStep, o_.prefillProfilePrefix);
  checkOrt(ort_, ort_->CreateRunOptions(&runAsync_));
  // Inside a stream capture nothing may wait for the stream; the loop synchronizes before it reads results.
  if (o_.cuda) checkOrt(ort_, ort_->AddRunConfigEntry(runAsync_, "disable_synchronize_execution_providers", "1"));

  const int64_t S = o_.slots, C = o_.capacity, L = o_.numLayers, H = o_.kvHeads, D = o_.headSize;
  const auto kvType = o_.kvFloat16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : kFloat;
  const size_t slotBytes = elementBytes(kvType) * H * C * D;
  for (int64_t l = 0; l < L; l++) {
    keyCaches_.push_back(tensor({S, H, C, D}, kvType));
    valueCaches_.push_back(tensor({S, H, C, D}, kvType));
  }
  // A slot's slice of each cache is contiguous: the prefill step's [1, H, C, D] past/present.
  for (int64_t s = 0; s < S; s++) {
    for (int64_t l = 0; l < L; l++) {
      keyViews_.push_back(view(static_cast<char*>(dataOf(keyCaches_[l])) + s * slotBytes, slotBytes, {1, H, C, D}, kvType));
      valueViews_.push_back(view(static_cast<char*>(dataOf(valueCaches_[l])) + s * slotBytes, slotBytes, {1, H, C, D}, kvType));
    }
  }
  inputIds_ = tensor({S, 1}, kInt64);
  positionIds_ = tensor({S, 1}, kInt64);
  seqlensK_ = tensor({S}, kInt32);
  // GroupQueryAttention reads total_sequence_length on the host: the capacity, the same for every decode step.
  totalHost_ = o_.capacity;
  total_ = hostScalar(&totalHost_);
  state_ = tensor({S, kStateFields}, kInt64);
  params_ = tensor({S, kParams}, kFloat);
  history_ = tensor({S, words_}, kInt32);
  ring_ = tensor({o_.chunkSteps, S}, kInt32);
  counter_ = tensor({1}, kInt64);
  const int64_t R = o_.prefillRows, P = o_.prefillChunk;
  prefillIds_ = dataOf(tensor({R * P}, kInt64));
  prefillPositions_ = dataOf(tensor({R * P}, kInt64));
  prefillSeqlens_ = dataOf(tensor({R}, kInt32));
  for (int64_t l = 0; l < L; l++) {
    stagingKeys_.push_back(dataOf(tensor({R, H, P, D}, kvType)));
    stagingValues_.push_back(dataOf(tensor({R, H, P, D}, kvType)));
  }
  prefillTotal_ = hostScalar(&prefillTotalHost_);
  const int64_t rowBytes = static_cast<int64_t>(elementBytes(kvType)) * D;
  if (o_.cuda && StagingCopy::fits(rowBytes)) {
    std::vector<const void*> sources;
    std::vector<void*> targets;
    for (int64_t l = 0; l < L; l++) {
      sources.push_back(stagingKeys_[l]), targets.push_back(dataOf(keyCaches_[l]));
      sources.push_back(stagingValues_[l]), targets.push_back(dataOf(valueCaches_[l]));
    }
    stagingCopy_ = std::make_unique<StagingCopy>(o_.deviceId, sources, targets, StagingCopy::Layout{H, rowBytes * P, rowBytes * C, rowBytes}, R);
  }

  const SlotBindings& n = o_.names;
  checkOrt(ort_, ort_->CreateIoBinding(decode_, &decodeBinding_));
  auto in = [&](const std::string& name, OrtValue* v) { checkOrt(ort_, ort_->BindInput(decodeBinding_, name.c_str(), v)); };
  auto out = [&](const std::string& name, OrtValue* v) { checkOrt(ort_, ort_->BindOutput(decodeBinding_, name.c_str(), v)); };
  // The state is read and written in place: each buffer is bound as an input and as the output that replaces it.
  in(n.inputIds, inputIds_), out(n.inputIdsNext, inputIds_);
  in(n.positionIds, positionIds_), out(n.positionIdsNext, positionIds_);
  in(n.seqlensK, seqlensK_), out(n.seqlensKNext, seqlensK_);
  in(n.totalSequenceLength, total_);
  in(n.state, state_), out(n.stateNext, state_);
  in(n.params, params_);
  in(n.history, history_), out(n.historyNext, history_);
  in(n.ring, ring_), out(n.ringNext, ring_);
  in(n.counter, counter_), out(n.counterNext, counter_);
  for (int64_t l = 0; l < L; l++) {
    const std::string i = std::to_string(l);
    in(n.pastKeyPrefix + i, keyCaches_[l]), out(n.presentKeyPrefix + i, keyCaches_[l]);
    in(n.pastValuePrefix + i, valueCaches_[l]), out(n.presentValuePrefix + i, valueCaches_[l]);
  }
  stateHost_.assign(S * kStateFields, 0);
  paramsHost_.assign(S * kParams, 1.f);
  if (o_.warmPrefill) warmPrefill();
}

void SlotLoop::releaseAll() {
  if (released_) return;
  released_ = true;
  if (graph_ != nullptr) cudart.graphExecDestroy(graph_);
  stagingCopy_.reset();
  if (decodeBinding_ != nullptr) ort_->ReleaseIoBinding(decodeBinding_);
  for (OrtValue* v : values_) ort_->ReleaseValue(v);
  for (void* p : memory_) {
    if (o_.cuda) cudart.free(p);
    else std::free(p);
  }
  if (runAsync_ != nullptr) ort_->ReleaseRunOptions(runAsync_);
  if (prefill_ != nullptr && !o_.prefillProfilePrefix.empty()) {
    OrtAllocator* a = nullptr;
    char* file = nullptr;
    if (ort_->GetAllocatorWithDefaultOptions(&a) == nullptr && ort_->SessionEndProfiling(prefill_, a, &file) == nullptr && file != nullptr) a->Free(a, file);
  }
  if (decode_ != nullptr) ort_->ReleaseSession(decode_);
  if (prefill_ != nullptr) ort_->ReleaseSession(prefill_);
  // The domain and its operator outlive the sessions that use them.
  if (customOps_ != nullptr) ort_->ReleaseCustomOpDomain(customOps_);
  nextToken_.reset();
  if (deviceInfo_ != nullptr) ort_->ReleaseMemoryInfo(deviceInfo_);
  if (cpuInfo_ != nullptr) ort_->ReleaseMemoryInfo(cpuInfo_);
  for (CudaRuntime::Event e : {prefillBegin_, prefillEnd_, decodeBegin_, decodeEnd_})
    if (e != nullptr) cudart.eventDestroy(e);
  if (stream_ != nullptr) cudart.streamDestroy(stream_);
  if (env_ != nullptr) ort_->ReleaseEnv(env_);
  live--;
}

OrtSession* SlotLoop::createSession(const std::string& path, const std::string& profilePrefix) {
  SessionSettings settings;
  settings.profilePrefix = profilePrefix;
  settings.cuda = o_.cuda;
  settings.deviceId = o_.deviceId;
  settings.stream = stream_;
  settings.customOps = customOps_;
  settings.intraOpThreads = o_.intraOpThreads;
  return genqueue::createSession(ort_, env_, path, settings);
}

// A zero-filled tensor in the loop's own memory (device memory on CUDA, host memory on the CPU provider), never
// ONNX Runtime's arena: a captured graph's buffers must keep their addresses.
OrtValue* SlotLoop::tensor(const std::vector<int64_t>& shape, ONNXTensorElementDataType type) {
  const size_t bytes = elementBytes(type) * elementCount(shape);
  void* p = nullptr;
  if (o_.cuda) {
    cudart.check(cudart.malloc(&p, bytes), "cudaMalloc");
    memory_.push_back(p);
    cudart.check(cudart.memset(p, 0, bytes), "cudaMemset");
  } else {
    p = std::calloc(1, bytes);
    if (p == nullptr) throw std::bad_alloc();
    memory_.push_back(p);
  }
  return view(p, bytes, shape, type);
}

// An int32 [1] over a host variable of the loop's (the value is read when a run is launched).
OrtValue* SlotLoop::hostScalar(int32_t* value) {
  OrtValue* v = nullptr;
  const int64_t shape[] = {1};
  checkOrt(ort_, ort_->CreateTensorWithDataAsOrtValue(cpuInfo_, value, sizeof(int32_t), shape, 1, kInt32, &v));
  values_.push_back(v);
  return v;
}

OrtValue* SlotLoop::view(void* data, size_t bytes, const std::vector<int64_t>& shape, ONNXTensorElementDataType type) {
  OrtValue* v = nullptr;
  checkOrt(ort_, ort_->CreateTensorWithDataAsOrtValue(o_.cuda ? deviceInfo_ : cpuInfo_, data, bytes, shape.data(), shape.size(), type, &v));
  values_.push_back(v);
  return v;
}

void* SlotLoop::dataOf(OrtValue* v) const {
  void* p = nullptr;
  checkOrt(ort_, ort_->GetTensorMutableData(v, &p));
  return p;
}

// Host → loop memory, ordered before the steps that follow on the loop's stream (pageable memory is staged before
// cudaMemcpyAsync returns, so the host copy may go away at once).
void SlotLoop::upload(void* device, const void* host, size_t bytes) {
  if (!o_.cuda) {
    std::memcpy(device, host, bytes);
    return;
  }
  cudart.check(cudart.memcpyAsync(device, host, bytes, CudaRuntime::kHostToDevice, stream_), "cudaMemcpyAsync to device");
}

// Loop memory → host, after everything queued so far (call synchronize() first on CUDA).
void SlotLoop::download(void* host, const void* device, size_t bytes) {
  if (!o_.cuda) {
    std::memcpy(host, device, bytes);
    return;
  }
  cudart.check(cudart.memcpy(host, device, bytes, CudaRuntime::kDeviceToHost), "cudaMemcpy to host");
}

void SlotLoop::admit(const std::vector<SlotAdmission>& rows) {
  const ScopeSeconds host(stats_.hostSeconds);
  const ScopeSeconds admitting(stats_.admitSeconds);
  if (o_.cuda) cudart.check(cudart.setDevice(o_.deviceId), "cudaSetDevice");
  for (const SlotAdmission& r : rows) {
    const int64_t prompt = static_cast<int64_t>(r.prompt.size());
    if (r.slot < 0 || r.slot >= o_.slots) throw std::invalid_argument("slot " + std::to_string(r.slot) + " outside 0 .. " + std::to_string(o_.slots - 1));
    if (prompt < 1 || r.maxNewTokens < 1) throw std::invalid_argument("a row needs a prompt and max_new_tokens ≥ 1");
    if (prompt + r.maxNewTokens > o_.capacity) {
      throw std::invalid_argument("prompt (" + std::to_string(prompt) + " tokens) + max_new_tokens (" + std::to_string(r.maxNewTokens) +
                                  ") exceeds the slot capacity " + std::to_string(o_.capacity));
    }
    for (int32_t t : r.prompt)
      if (t < 0 || t >= o_.vocabSize) throw std::invalid_argument("prompt token " + std::to_string(t) + " outside the vocabulary");
  }
  for (const SlotAdmission& r : rows) {
    const int64_t prompt = static_cast<int64_t>(r.prompt.size());
    int64_t* s = stateHost_.data() + static_cast<int64_t>(r.slot) * kStateFields;
    s[kToken] = r.prompt.back();
    s[kPosition] = prompt - 1;
    s[kEnd] = prompt + r.maxNewTokens;
    s[kMin] = prompt + r.minNewTokens;
    s[kSeed] = static_cast<int64_t>(r.seed);
    s[kTopK] = r.topK;
    s[kStatus] = rules::GQ_RUNNING;
    s[kSample] = r.sample ? 1 : 0;
    float* p = paramsHost_.data() + static_cast<int64_t>(r.slot) * kParams;
    p[kTemperature] = r.temperature;
    p[kTopP] = r.topP;
    p[kRepetitionPenalty] = r.repetitionPenalty;
    std::vector<uint32_t> seen(words_, 0u);
    for (int32_t t : r.prompt) seen[t >> 5] |= 1u << (t & 31);
    upload(static_cast<uint32_t*>(dataOf(history_)) + r.slot * words_, seen.data(), sizeof(uint32_t) * words_);
    stats_.admitted++;
  }
  std::vector<const SlotAdmission*> prefilled;
  for (const SlotAdmission& r : rows)
    if (r.prompt.size() > 1) prefilled.push_back(&r);
  if (!prefilled.empty()) {
    std::optional<ScopeSeconds> wall;
    if (o_.cuda) {
      // A second admit() before run() reuses the events: the first one's time is read now, waiting for its runs.
      if (prefillPending_) cudart.check(cudart.eventSynchronize(prefillEnd_), "cudaEventSynchronize");
      countPrefill();
      record(prefillBegin_);
    } else {
      wall.emplace(stats_.prefillSeconds);
    }
    prefillFirstChunks(prefilled);
    prefillLaterChunks(prefilled);
    if (o_.cuda) {
      record(prefillEnd_);
      prefillPending_ = true;
    }
  }
  stateDirty_ = true;
}

// Later chunks of prompts longer than P, at batch 1 in the slot's own slice (after its first chunk's copy), each
// padded to its length bucket where the slot has room: the padding's keys and values land past the prompt, where
// the row's decode steps write before they read.
void SlotLoop::prefillLaterChunks(const std::vector<const SlotAdmission*>& rows) {
  for (const SlotAdmission* r : rows) {
    const int64_t count = static_cast<int64_t>(r->prompt.size()) - 1;
    for (int64_t start = o_.prefillChunk; start < count; start += o_.prefillChunk) {
      const int64_t length = std::min<int64_t>(o_.prefillChunk, count - start);
      const int64_t bucket = lengthBucket(length, o_.prefillChunk);
      const int64_t padded = start + bucket <= o_.capacity ? bucket : length;
      std::vector<int64_t> ids(padded, 0), positions(padded);
      for (int64_t i = 0; i < padded; i++) {
        if (i < length) ids[i] = r->prompt[start + i];
        positions[i] = start + i;
      }
      runLaterChunk(r->slot, start, ids, positions, length);
    }
  }
}

// One later chunk (ids/positions: its padded tokens) into the slot's slice; tokens: the real ones.
void SlotLoop::runLaterChunk(int slot, int64_t start, const std::vector<int64_t>& ids, const std::vector<int64_t>& positions, int64_t tokens) {
  const int64_t length = static_cast<int64_t>(ids.size());
  upload(prefillIds_, ids.data(), sizeof(int64_t) * length);
  upload(prefillPositions_, positions.data(), sizeof(int64_t) * length);
  // GroupQueryAttention: seqlens_k = total - 1.
  const int32_t last = static_cast<int32_t>(start + length - 1);
  upload(prefillSeqlens_, &last, sizeof last);
  std::vector<OrtValue*> keys, values;
  for (int l = 0; l < o_.numLayers; l++) {
    keys.push_back(keyViews_[static_cast<size_t>(slot) * o_.numLayers + l]);
    values.push_back(valueViews_[static_cast<size_t>(slot) * o_.numLayers + l]);
  }
  runPrefill(1, length, static_cast<int32_t>(start + length), keys, values, tokens);
}

// The first chunk of each prompt (all but its last token, up to P), sorted by length so that a run's rows are alike,
// in runs of a bucketed shape (rowBucket, lengthBucket): right padded to the run's length (seqlens_k = each row's length - 1,
// total_sequence_length = the run's length: GroupQueryAttention's first prompt), into the staging cache, then
// copied into the slots.
void SlotLoop::prefillFirstChunks(std::vector<const SlotAdmission*> rows) {
  const int64_t P = o_.prefillChunk;
  auto first = [&](const SlotAdmission* r) { return std::min<int64_t>(P, static_cast<int64_t>(r->prompt.size()) - 1); };
  std::stable_sort(rows.begin(), rows.end(), [&](const SlotAdmission* a, const SlotAdmission* b) { return first(a) < first(b); });
  for (size_t begin = 0; begin < rows.size();) {
    const int64_t batch = rowBucket(static_cast<int64_t>(rows.size() - begin));
    const int64_t length = lengthBucket(first(rows[begin + batch - 1]), P);
    std::vector<int64_t> ids(batch * length, 0), positions(batch * length);
    std::vector<int32_t> seqlens(batch);
    int64_t tokens = 0;
    for (int64_t i = 0; i < batch; i++) {
      const SlotAdmission* r = rows[begin + i];
      const int64_t n = first(r);
      for (int64_t t = 0; t < length; t++) {
        if (t < n) ids[i * length + t] = r->prompt[t];
        positions[i * length + t] = t;
      }
      seqlens[i] = static_cast<int32_t>(n - 1);
      tokens += n;
    }
    upload(prefillIds_, ids.data(), sizeof(int64_t) * ids.size());
    upload(prefillPositions_, positions.data(), sizeof(int64_t) * positions.size());
    upload(prefillSeqlens_, seqlens.data(), sizeof(int32_t) * seqlens.size());
    runStaged(batch, length, tokens);
    if (stagingCopy_) {
      std::vector<int32_t> slots(batch), counts(batch);
      for (int64_t i = 0; i < batch; i++) slots[i] = rows[begin + i]->slot, counts[i] = static_cast<int32_t>(first(rows[begin + i]));
      stagingCopy_->run(slots, counts, stream_);
    } else {
      for (int64_t i = 0; i < batch; i++) copyToSlot(i, rows[begin + i]->slot, first(rows[begin + i]));
    }
    begin += static_cast<size_t>(batch);
  }
}

// Prefill runs take their shapes from a few buckets: ONNX Runtime's first run of each new input shape costs ~55 ms
// of host time on the H200 (bench/results/slot-engine-h200-prefill-buckets.json), and mixed prompts would make a new
// shape almost every run. Rows: 1, 2, 4, … below R, and R; lengths: 16, 32, 48, 64, 96, 128, 192, … up to P.

// The most rows of `waiting` that a row bucket holds.
int64_t SlotLoop::rowBucket(int64_t waiting) const {
  int64_t batch = 1;
  for (int64_t b : rowBuckets())
    if (b <= waiting) batch = b;
  return batch;
}

std::vector<int64_t> SlotLoop::rowBuckets() const {
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b < o_.prefillRows; b *= 2) buckets.push_back(b);
  buckets.push_back(o_.prefillRows);
  return buckets;
}

std::vector<int64_t> SlotLoop::lengthBuckets(int64_t limit) {
  std::vector<int64_t> buckets{std::min<int64_t>(16, limit)};
  for (int64_t p = 32; buckets.back() < limit; p *= 2) {
    for (int64_t b : {p, p + p / 2})
      if (buckets.back() < limit) buckets.push_back(std::min(b, limit));
  }
  return buckets;
}

int64_t SlotLoop::lengthBucket(int64_t n, int64_t limit) {
  for (int64_t b : lengthBuckets(limit))
    if (b >= n) return b;
  return limit;
}

// One first-chunk run over the staging caches, [batch, kv heads, P, D] each layer.
void SlotLoop::runStaged(int64_t batch, int64_t length, int64_t tokens) {
  const auto kvType = o_.kvFloat16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : kFloat;
  const std::vector<int64_t> shape{batch, o_.kvHeads, o_.prefillChunk, o_.headSize};
  const size_t bytes = elementBytes(kvType) * elementCount(shape);
  std::vector<OrtValue*> keys, values;
  struct Release {
    const OrtApi* api;
    std::vector<OrtValue*>& a;
    std::vector<OrtValue*>& b;
    ~Release() {
      for (OrtValue* v : a) api->ReleaseValue(v);
      for (OrtValue* v : b) api->ReleaseValue(v);
    }
  } release{ort_, keys, values};
  OrtMemoryInfo* info = o_.cuda ? deviceInfo_ : cpuInfo_;
  for (int l = 0; l < o_.numLayers; l++) {
    OrtValue* k = nullptr;
    OrtValue* v = nullptr;
    checkOrt(ort_, ort_->CreateTensorWithDataAsOrtValue(info, stagingKeys_[l], bytes, shape.data(), shape.size(), kvType, &k));
    keys.push_back(k);
    checkOrt(ort_, ort_->CreateTensorWithDataAsOrtValue(info, stagingValues_[l], bytes, shape.data(), shape.size(), kvType, &v));
    values.push_back(v);
  }
  runPrefill(batch, length, static_cast<int32_t>(length), keys, values, tokens);
}

// Every bucketed first-chunk shape once (zero tokens into the staging caches), so that no admission pays for a
// shape's first run; the counters start after it.
void SlotLoop::warmPrefill() {
  const std::vector<int64_t> zeros(static_cast<size_t>(o_.prefillRows) * static_cast<size_t>(o_.prefillChunk), 0);
  upload(prefillIds_, zeros.data(), sizeof(int64_t) * zeros.size());
  upload(prefillPositions_, zeros.data(), sizeof(int64_t) * zeros.size());
  const std::vector<int32_t> seqlens(static_cast<size_t>(o_.prefillRows), 0);
  upload(prefillSeqlens_, seqlens.data(), sizeof(int32_t) * seqlens.size());
  for (int64_t batch : rowBuckets())
    for (int64_t length : lengthBuckets(o_.prefillChunk)) runStaged(batch, length, 0);
  // Later chunks (prompts longer than P) run in a slot's slice: slot 0's, before any row holds it.
  if (o_.capacity > o_.prefillChunk + 1) {
    for (int64_t length : lengthBuckets(o_.prefillChunk)) {
      if (o_.prefillChunk + length > o_.capacity) continue;
      std::vector<int64_t> positions(length);
      for (int64_t i = 0; i < length; i++) positions[i] = o_.prefillChunk + i;
      runLaterChunk(0, o_.prefillChunk, std::vector<int64_t>(length, 0), positions, 0);
    }
  }
  if (o_.cuda) cudart.check(cudart.deviceSynchronize(), "cudaDeviceSynchronize");
  stats_ = SlotLoopStats{};
}

// Positions 0 .. positions - 1 of staging row stagingRow, every layer and head, into the slot's slice.
void SlotLoop::copyToSlot(int64_t stagingRow, int slot, int64_t positions) {
  const size_t element = o_.kvFloat16 ? 2 : 4;
  const size_t row = element * o_.headSize;
  const size_t stagingPitch = row * o_.prefillChunk, slotPitch = row * o_.capacity;
  const size_t stagingOffset = stagingPitch * o_.kvHeads * stagingRow, slotOffset = slotPitch * o_.kvHeads * slot;
  const size_t width = row * positions;
  for (int l = 0; l < o_.numLayers; l++) {
    for (const auto& [from, to] : {std::make_pair(stagingKeys_[l], keyCaches_[l]), std::make_pair(stagingValues_[l], valueCaches_[l])}) {
      const char* src = static_cast<const char*>(from) + stagingOffset;
      char* dst = static_cast<char*>(dataOf(to)) + slotOffset;
      if (o_.cuda) {
        cudart.check(cudart.memcpy2DAsync(dst, slotPitch, src, stagingPitch, width, o_.kvHeads, CudaRuntime::kDeviceToDevice, stream_), "cudaMemcpy2DAsync");
      } else {
        for (int h = 0; h < o_.kvHeads; h++) std::memcpy(dst + h * slotPitch, src + h * stagingPitch, width);
      }
    }
  }
}

void SlotLoop::release(const std::vector<int>& slots) {
  for (int slot : slots) {
    if (slot < 0 || slot >= o_.slots) throw std::invalid_argument("slot " + std::to_string(slot) + " outside 0 .. " + std::to_string(o_.slots - 1));
    stateHost_[static_cast<int64_t>(slot) * kStateFields + kStatus] = rules::GQ_IDLE;
  }
  stateDirty_ = true;
}

// One prefill run over the tokens and positions uploaded to the staging inputs ([batch, length], row-major), the
// seqlens_k uploaded to prefillSeqlens_, and the given caches ([batch, kv heads, *, D] each layer); tokens: the
// real ones among them (padding aside).
void SlotLoop::runPrefill(int64_t batch, int64_t length, int32_t total, const std::vector<OrtValue*>& keys, const std::vector<OrtValue*>& values,
                          int64_t tokens) {
  const SlotBindings& n = o_.names;
  prefillTotalHost_ = total;
  OrtValue* idsValue = nullptr;
  OrtValue* positionsValue = nullptr;
  OrtValue* seqlensValue = nullptr;
  OrtIoBinding* binding = nullptr;
  OrtMemoryInfo* info = o_.cuda ? deviceInfo_ : cpuInfo_;
  const int64_t shape[] = {batch, length};
  const size_t bytes = sizeof(int64_t) * batch * length;
  OrtStatus* failed = ort_->CreateTensorWithDataAsOrtValue(info, prefillIds_, bytes, shape, 2, kInt64, &idsValue);
  if (failed == nullptr) failed = ort_->CreateTensorWithDataAsOrtValue(info, prefillPositions_, bytes, shape, 2, kInt64, &positionsValue);
  if (failed == nullptr) failed = ort_->CreateTensorWithDataAsOrtValue(info, prefillSeqlens_, sizeof(int32_t) * batch, &batch, 1, kInt32, &seqlensValue);
  if (failed == nullptr) failed = ort_->CreateIoBinding(prefill_, &binding);
  if (failed == nullptr) failed = ort_->BindInput(binding, n.inputIds.c_str(), idsValue);
  if (failed == nullptr) failed = ort_->BindInput(binding, n.positionIds.c_str(), positionsValue);
  if (failed == nullptr) failed = ort_->BindInput(binding, n.seqlensK.c_str(), seqlensValue);
  if (failed == nullptr) failed = ort_->BindInput(binding, n.totalSequenceLength.c_str(), prefillTotal_);
  // The caches are read and written in place.
  for (int l = 0; l < o_.numLayers && failed == nullptr; l++) {
    const std::string i = std::to_string(l);
    failed = ort_->BindInput(binding, (n.pastKeyPrefix + i).c_str(), keys[l]);
    if (failed == nullptr) failed = ort_->BindOutput(binding, (n.presentKeyPrefix + i).c_str(), keys[l]);
    if (failed == nullptr) failed = ort_->BindInput(binding, (n.pastValuePrefix + i).c_str(), values[l]);
    if (failed == nullptr) failed = ort_->BindOutput(binding, (n.presentValuePrefix + i).c_str(), values[l]);
  }
  if (failed == nullptr) failed = ort_->RunWithBinding(prefill_, runAsync_, binding);
  if (binding != nullptr) ort_->ReleaseIoBinding(binding);
  for (OrtValue* v : {idsValue, positionsValue, seqlensValue})
    if (v != nullptr) ort_->ReleaseValue(v);
  checkOrt(ort_, failed);
  stats_.prefillRuns++;
  stats_.prefillTokens += tokens;
}

// The host mirror of the state, and the decoder inputs it implies, to the loop's buffers.
void SlotLoop::uploadState() {
  const int64_t S = o_.slots;
  std::vector<int64_t> tokens(S), positions(S);
  std::vector<int32_t> seqlens(S);
  for (int64_t b = 0; b < S; b++) {
    tokens[b] = stateHost_[b * kStateFields + kToken];
    positions[b] = stateHost_[b * kStateFields + kPosition];
    seqlens[b] = static_cast<int32_t>(positions[b]);
  }
  upload(dataOf(state_), stateHost_.data(), sizeof(int64_t) * stateHost_.size());
  upload(dataOf(params_), paramsHost_.data(), sizeof(float) * paramsHost_.size());
  upload(dataOf(inputIds_), tokens.data(), sizeof(int64_t) * S);
  upload(dataOf(positionIds_), positions.data(), sizeof(int64_t) * S);
  upload(dataOf(seqlensK_), seqlens.data(), sizeof(int32_t) * S);
  stateDirty_ = false;
}

SlotChunk SlotLoop::run() {
  const ScopeSeconds host(stats_.hostSeconds);
  if (o_.cuda) cudart.check(cudart.setDevice(o_.deviceId), "cudaSetDevice");
  if (stateDirty_) uploadState();
  const int64_t running = runningRows();
  if (o_.cuda) {
    record(decodeBegin_);
    runSteps();
    record(decodeEnd_);
    cudart.check(cudart.deviceSynchronize(), "cudaDeviceSynchronize");
    // Every event has completed: reading their times waits for nothing.
    float ms = 0;
    cudart.check(cudart.eventElapsedTime(&ms, decodeBegin_, decodeEnd_), "cudaEventElapsedTime");
    stats_.decodeSeconds += ms / 1000.0;
    countPrefill();
  } else {
    const ScopeSeconds wall(stats_.decodeSeconds);
    runSteps();
  }
  SlotChunk chunk;
  chunk.ring.resize(static_cast<size_t>(o_.chunkSteps) * o_.slots);
  download(chunk.ring.data(), dataOf(ring_), sizeof(int32_t) * chunk.ring.size());
  download(stateHost_.data(), dataOf(state_), sizeof(int64_t) * stateHost_.size());
  chunk.status.resize(o_.slots);
  for (int b = 0; b < o_.slots; b++) chunk.status[b] = static_cast<int32_t>(stateHost_[static_cast<int64_t>(b) * kStateFields + kStatus]);
  stats_.chunks++;
  stats_.decodeSteps += o_.chunkSteps;
  stats_.rowSteps += running * o_.chunkSteps;
  for (int32_t t : chunk.ring) stats_.emittedTokens += t >= 0;
  return chunk;
}

// Rows whose host mirror says running: after the last chunk's download, plus admissions and releases since.
int64_t SlotLoop::runningRows() const {
  int64_t n = 0;
  for (int b = 0; b < o_.slots; b++) n += stateHost_[static_cast<int64_t>(b) * kStateFields + kStatus] == rules::GQ_RUNNING;
  return n;
}

void SlotLoop::record(CudaRuntime::Event event) { cudart.check(cudart.eventRecord(event, stream_), "cudaEventRecord"); }

// The recorded prefill pair's time into the stats, once its runs have completed.
void SlotLoop::countPrefill() {
  if (!prefillPending_) return;
  prefillPending_ = false;
  float ms = 0;
  cudart.check(cudart.eventElapsedTime(&ms, prefillBegin_, prefillEnd_), "cudaEventElapsedTime");
  stats_.prefillSeconds += ms / 1000.0;
}

void SlotLoop::runSteps() {
  if (o_.cudaGraph && warm_ && !captureFailed_ && (graph_ != nullptr || captureSteps())) {
    cudart.check(cudart.graphLaunch(graph_, stream_), "cudaGraphLaunch");
    stats_.graphReplays++;
    return;
  }
  for (int k = 0; k < o_.chunkSteps; k++) checkOrt(ort_, ort_->RunWithBinding(decode_, runAsync_, decodeBinding_));
  warm_ = true;
}

// Records K decode steps into one CUDA graph. Every step has the same shapes and host inputs, so the graph is valid
// for every chunk. A failed capture leaves the loop on plain runs, with a warning.
bool SlotLoop::captureSteps() {
  const std::string failed = captureGraph(
      ort_, stream_,
      [&]() -> OrtStatus* {
        OrtStatus* status = nullptr;
        for (int k = 0; k < o_.chunkSteps && status == nullptr; k++) status = ort_->RunWithBinding(decode_, runAsync_, decodeBinding_);
        return status;
      },
      &graph_);
  if (failed.empty()) return true;
  fprintf(stderr, "genqueue slot loop: CUDA graph capture failed (%s); the decode steps run without graphs\n", failed.c_str());
  captureFailed_ = true;
  return false;
}

SlotLoopStats SlotLoop::stats() const {
  SlotLoopStats s = stats_;
  s.running = runningRows();
  return s;
}

}  // namespace genqueue
