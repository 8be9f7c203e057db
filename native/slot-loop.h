// The slot engine's native loop (src/engine/slot-engine.ts drives it): S slots share one running batch of a
// decode step whose whole state — each row's token, position, lengths, sampling parameters, seed, seen-token
// bitmap — lives in buffers the addon allocated, bound by IO binding (slot-step-graph.ts builds the steps).
//
// - admit(): a joining request's row is written into the host mirror of the state (uploaded by the next run) and its
//   prompt, all but the last token, goes through the prefill step in chunks of up to P tokens, so a 512-token prompt
//   costs a run, not 512 steps. The joiners' first chunks run together, up to R rows per run (sorted by length, right
//   padded): GroupQueryAttention's first-prompt form, into a staging cache [R, kv heads, P, D] whose rows are then
//   copied into the slots' slices of the KV buffers [S, kv heads, C, D] (the free slots are anywhere). Later chunks
//   of a longer prompt run at batch 1 over a view of the slot's slice [1, kv heads, C, D]: GroupQueryAttention takes
//   several new tokens with past context only at batch 1.
// - run(): K decode steps for all S rows, then one copy back of the ring of emitted tokens [K, S] and of the state
//   (the rows' status). Each decode step has the same shapes and reads every position from the device
//   (GroupQueryAttention's seqlens_k per row, total_sequence_length = C on the host, constant), so on CUDA one graph
//   of K steps is captured once, after a first plain run, and replayed for every chunk.
// - release(): a slot's row goes idle (its caller ended it early); a row that ended by itself stays ended until
//   the slot is admitted again.
#pragma once
#include <onnxruntime_c_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda-runtime.h"
#include "next-token.h"
#include "staging-copy.h"

namespace genqueue {

// The graph value names the loop binds (from slot-step-graph.ts, passed in by JS so they are spelled once).
struct SlotBindings {
  std::string inputIds, positionIds, seqlensK, totalSequenceLength;  // decoder inputs of both steps
  std::string inputIdsNext, positionIdsNext, seqlensKNext;           // NextToken's outputs for the next step
  std::string state, stateNext, params, history, historyNext, ring, ringNext, counter, counterNext;
  std::string pastKeyPrefix, pastValuePrefix, presentKeyPrefix, presentValuePrefix;  // + layer index
};

struct SlotLoopOptions {
  std::string decodeStep, prefillStep;  // model files
  bool cuda = false;
  int deviceId = 0;
  bool cudaGraph = false;
  int numLayers = 0, kvHeads = 0, headSize = 0;
  bool kvFloat16 = false;
  int slots = 0, capacity = 0, chunkSteps = 0, prefillChunk = 0, prefillRows = 0, vocabSize = 0;
  int intraOpThreads = 0;  // ONNX Runtime's intra-op threads per session (0: its default)
  bool warmPrefill = false;  // run every bucketed prefill shape once at construction
  std::string prefillProfilePrefix;  // non-empty: ONNX Runtime writes a per-node profile of the prefill session
  SlotBindings names;
};

struct SlotAdmission {
  int slot = 0;
  std::vector<int32_t> prompt;
  int64_t maxNewTokens = 0, minNewTokens = 0;
  uint64_t seed = 0;
  int64_t topK = 0;
  bool sample = false;
  float temperature = 1.f, topP = 1.f, repetitionPenalty = 1.f;
};

struct SlotChunk {
  std::vector<int32_t> ring;    // [K, S]: the token row s emitted at step k, or -1
  std::vector<int32_t> status;  // [S]: SlotStateField kStatus values after the chunk
};

struct SlotLoopStats {
  int64_t chunks = 0, decodeSteps = 0, graphReplays = 0, prefillRuns = 0, prefillTokens = 0, admitted = 0, running = 0;
  // Where the loop's time goes, in seconds. prefill: admit()'s prefill runs and staging copies; decode: run()'s K
  // steps. On CUDA both are device time between events on the loop's stream, read at run()'s synchronization (an
  // admission's prefill counts from the next run()); on the CPU provider, whose runs are synchronous, wall time.
  // host: wall time inside admit() and run(), the device work they wait for included; admit: the part inside
  // admit() (launching the prefill runs: against prefill, it says whether the host or the device sets its pace).
  double prefillSeconds = 0, decodeSeconds = 0, hostSeconds = 0, admitSeconds = 0;
  // rowSteps: K × the rows running at the start of each chunk (the decode work that could emit a token);
  // emittedTokens: ring entries ≥ 0 (a row's EOS included, which the engine drops).
  int64_t rowSteps = 0, emittedTokens = 0;
};

class SlotLoop {
 public:
  SlotLoop(const OrtApi* api, const SlotLoopOptions& options);
  ~SlotLoop();
  SlotLoop(const SlotLoop&) = delete;
  SlotLoop& operator=(const SlotLoop&) = delete;

  void admit(const std::vector<SlotAdmission>& rows);
  void release(const std::vector<int>& slots);
  SlotChunk run();
  SlotLoopStats stats() const;

  // SlotLoops holding ONNX Runtime or device resources in this process, partly constructed ones included.
  static std::atomic<int> live;

 private:
  void init();
  void releaseAll();
  OrtSession* createSession(const std::string& path, const std::string& profilePrefix = "");
  OrtValue* tensor(const std::vector<int64_t>& shape, ONNXTensorElementDataType type);
  OrtValue* view(void* data, size_t bytes, const std::vector<int64_t>& shape, ONNXTensorElementDataType type);
  OrtValue* hostScalar(int32_t* value);
  void* dataOf(OrtValue* v) const;
  void upload(void* device, const void* host, size_t bytes);
  void download(void* host, const void* device, size_t bytes);
  void prefillFirstChunks(std::vector<const SlotAdmission*> rows);
  void prefillLaterChunks(const std::vector<const SlotAdmission*>& rows);
  int64_t rowBucket(int64_t waiting) const;
  std::vector<int64_t> rowBuckets() const;
  static std::vector<int64_t> lengthBuckets(int64_t limit);
  static int64_t lengthBucket(int64_t n, int64_t limit);
  void runStaged(int64_t batch, int64_t length, int64_t tokens);
  void runLaterChunk(int slot, int64_t start, const std::vector<int64_t>& ids, const std::vector<int64_t>& positions, int64_t tokens);
  void warmPrefill();
  void runPrefill(int64_t batch, int64_t length, int32_t total, const std::vector<OrtValue*>& keys, const std::vector<OrtValue*>& values,
                  int64_t tokens);
  void copyToSlot(int64_t stagingRow, int slot, int64_t positions);
  void runSteps();
  bool captureSteps();
  void uploadState();
  int64_t runningRows() const;
  void record(CudaRuntime::Event event);
  void countPrefill();

  const OrtApi* ort_;
  SlotLoopOptions o_;
  int64_t words_ = 0;  // history bitmap words per row
  OrtEnv* env_ = nullptr;
  OrtMemoryInfo* cpuInfo_ = nullptr;
  OrtMemoryInfo* deviceInfo_ = nullptr;
  CudaRuntime::Stream stream_ = nullptr;
  std::unique_ptr<NextToken> nextToken_;
  OrtCustomOpDomain* customOps_ = nullptr;
  OrtSession* decode_ = nullptr;
  OrtSession* prefill_ = nullptr;
  OrtRunOptions* runAsync_ = nullptr;
  OrtIoBinding* decodeBinding_ = nullptr;
  std::vector<OrtValue*> values_;  // every OrtValue below, released with the loop
  std::vector<void*> memory_;      // the addon's allocations behind them
  std::vector<OrtValue*> keyCaches_, valueCaches_;  // per layer: [S, kv heads, C, D]
  std::vector<OrtValue*> keyViews_, valueViews_;  // [slot * layers + layer]: [1, kv heads, C, D]
  OrtValue *inputIds_ = nullptr, *positionIds_ = nullptr, *seqlensK_ = nullptr, *total_ = nullptr;
  OrtValue *state_ = nullptr, *params_ = nullptr, *history_ = nullptr, *ring_ = nullptr, *counter_ = nullptr;
  void *prefillIds_ = nullptr, *prefillPositions_ = nullptr;  // [R * P] int64 each: a run's tokens and positions
  void* prefillSeqlens_ = nullptr;                             // [R] int32
  std::vector<void*> stagingKeys_, stagingValues_;             // per layer: [R, kv heads, P, D]
  std::unique_ptr<StagingCopy> stagingCopy_;                   // CUDA: staging rows → slots in one kernel per run
  OrtValue* prefillTotal_ = nullptr;
  int32_t totalHost_ = 0, prefillTotalHost_ = 0;
  std::vector<int64_t> stateHost_;  // [S, kStateFields]: what the device holds after the last run, plus admissions
  std::vector<float> paramsHost_;   // [S, kParams]
  bool stateDirty_ = true;
  bool warm_ = false;           // a chunk has run plainly (ONNX Runtime has allocated what the steps need)
  bool captureFailed_ = false;  // a capture failed: plain runs from then on
  CudaRuntime::GraphExec graph_ = nullptr;
  // CUDA only: pairs around the prefill runs of an admit() and the steps of a run(), on the loop's stream.
  CudaRuntime::Event prefillBegin_ = nullptr, prefillEnd_ = nullptr, decodeBegin_ = nullptr, decodeEnd_ = nullptr;
  bool prefillPending_ = false;  // the prefill pair is recorded and its time not counted yet
  SlotLoopStats stats_;
  bool released_ = false;
};

}  // namespace genqueue
