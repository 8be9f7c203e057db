/**
 * The names that the builder, the engine and the native addon (native/device-loop.cc, native/slot-loop.cc) share:
 * the files of a built model directory, the search graphs' inputs and outputs, the device loop's and the slot
 * loop's state buffers and the interval at which the device loop looks for EOS. Each is spelled here once; the
 * addon receives its binding names from `deviceLoopBindings()` / `slotBindings()` when it opens a step, so it
 * repeats none of them.
 */

/** The files of a built model directory. */
export const MODEL_FILES = {
  manifest: 'genqueue-model.json',
  weights: 'decoder.onnx.data',
  tokenizer: 'tokenizer.json',
  /** tokenizer_config.json, copied when the checkpoint has one (its chat template renders `messages` jobs). */
  tokenizerConfig: 'tokenizer_config.json',
  /** chat_template.jinja, where transformers 5 saves the template outside tokenizer_config.json. */
  chatTemplate: 'chat_template.jinja',
} as const;

/** Search operators a decoder can be wrapped in; each becomes its own small .onnx sharing one weight file. */
export type SearchKind = 'greedy' | 'greedyShared' | 'beam' | 'sample';

export const SEARCH_FILES: Record<SearchKind, string> = {
  greedy: 'greedy.onnx',
  /** GreedySearch over a decoder with one in-place KV buffer (past_present_share_buffer): CUDA only. */
  greedyShared: 'greedy-shared-kv.onnx',
  beam: 'beam.onnx',
  /** GreedySearch over the decoder with the sampling head (Gumbel-max): sampling on every provider. */
  sample: 'sample.onnx',
};

/**
 * The step for CUDA, for small batches on CUDA (fp16: the projections as genqueue.SmallBatchMatMul) and for the
 * CPU provider (another attention operator: see the static-cpu step variant).
 */
export const DEVICE_LOOP_FILES = {
  cuda: 'device-loop-step.onnx',
  cudaSmallBatch: 'device-loop-step-small-batch.onnx',
  cpu: 'device-loop-step-cpu.onnx',
} as const;

/**
 * The decoder subgraph signature of ONNX Runtime's GreedySearch/BeamSearch for a GPT-style model (model_type 0):
 * the operators look the inputs and outputs up by these names.
 */
export const SEARCH_STEP_IO = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  attentionMask: 'attention_mask',
  /** The filled length of a shared (in-place) cache, a host scalar. */
  pastSequenceLength: 'past_sequence_length',
  logits: 'logits',
  past: (layer: number): string => `past_${layer}`,
  present: (layer: number): string => `present_${layer}`,
} as const;

/**
 * Main-graph inputs the sampling head reads from inside the decoder (outer-scope values of the search op's
 * subgraph), so one built graph serves every temperature / top-k / top-p.
 */
export const SAMPLING_INPUTS = {
  temperature: 'sample_temperature',
  topK: 'sample_top_k',
  topP: 'sample_top_p',
  /** true when top_k > 0 or top_p < 1: only then is the vocabulary sorted. */
  filter: 'sample_filter',
} as const;

/** Names of the device loop's state buffers (device-loop-graph.ts), bound by the addon. */
export const DEVICE_LOOP_STATE = {
  tokens: 'tokens',
  step: 'step',
  pastLength: 'past_sequence_length',
  promptLengths: 'prompt_lengths',
  minLengths: 'min_lengths',
  tokensNext: 'tokens_next',
  stepNext: 'step_next',
} as const;

/** The static steps' per-layer caches [batch, kv heads, capacity, head size], written in place. */
export const STATIC_KV = {
  pastKey: (layer: number): string => `past_key_${layer}`,
  pastValue: (layer: number): string => `past_value_${layer}`,
  presentKey: (layer: number): string => `present_key_${layer}`,
  presentValue: (layer: number): string => `present_value_${layer}`,
} as const;

/** Steps between looks for EOS on the host (a token-buffer copy each); 16 costs ~2 µs per step. */
export const EOS_CHECK_EVERY = 16;

/** What the addon binds, as it receives it in open()'s options: state names, and per-layer cache names as prefixes + layer index. */
export interface DeviceLoopBindings {
  readonly tokens: string;
  readonly tokensNext: string;
  readonly step: string;
  readonly stepNext: string;
  readonly promptLengths: string;
  readonly minLengths: string;
  readonly pastLength: string;
  readonly pastKeyPrefix: string;
  readonly pastValuePrefix: string;
  readonly presentKeyPrefix: string;
  readonly presentValuePrefix: string;
}

/** The per-layer names without their index: the addon appends the layer number. */
function prefixOf(name: (layer: number) => string): string {
  const n = name(0);
  if (!n.endsWith('0')) throw new Error(`cache name ${n} does not end with its layer index`);
  return n.slice(0, -1);
}

export function deviceLoopBindings(): DeviceLoopBindings {
  const S = DEVICE_LOOP_STATE;
  return {
    tokens: S.tokens,
    tokensNext: S.tokensNext,
    step: S.step,
    stepNext: S.stepNext,
    promptLengths: S.promptLengths,
    minLengths: S.minLengths,
    pastLength: S.pastLength,
    pastKeyPrefix: prefixOf(STATIC_KV.pastKey),
    pastValuePrefix: prefixOf(STATIC_KV.pastValue),
    presentKeyPrefix: prefixOf(STATIC_KV.presentKey),
    presentValuePrefix: prefixOf(STATIC_KV.presentValue),
  };
}

/** The slot engine's two steps (slot-step-graph.ts; native/slot-loop.h runs them). */
export const SLOT_FILES = {
  decode: 'slot-decode.onnx',
  prefill: 'slot-prefill.onnx',
} as const;

/**
 * The slot steps' decoder inputs, per row: input_ids and position_ids int64 [rows, seq], GroupQueryAttention's
 * seqlens_k int32 [rows] (= total length - 1) and total_sequence_length int32 [1] (a host scalar).
 */
export const SLOT_STEP_IO = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  seqlensK: 'seqlens_k',
  totalSequenceLength: 'total_sequence_length',
} as const;

/**
 * The decode step's row state, read and written by genqueue.NextToken (native/next-token.h): its outputs
 * (`*_next`, and the next step's decoder inputs) are bound to the buffers of the inputs they replace.
 */
export const SLOT_STATE = {
  state: 'slot_state',
  params: 'slot_params',
  history: 'slot_history',
  ring: 'slot_ring',
  counter: 'slot_counter',
  next: (name: string): string => `${name}_next`,
} as const;

/** The int64 fields of a row's state, in order (native/next-token.h SlotStateField). */
export const SLOT_STATE_FIELDS = ['token', 'position', 'end', 'min', 'seed', 'topK', 'status', 'sample'] as const;
/** The float parameters of a row, in order (native/next-token.h SlotParam). */
export const SLOT_PARAMS = ['temperature', 'topP', 'repetitionPenalty'] as const;
/** A row's status field. */
export const SLOT_STATUS = { idle: 0, running: 1, stopped: 2, length: 3 } as const;

/** What the slot loop binds (native/slot-loop.h SlotBindings), as slotOpen() receives it. */
export interface SlotBindings {
  readonly inputIds: string;
  readonly positionIds: string;
  readonly seqlensK: string;
  readonly totalSequenceLength: string;
  readonly inputIdsNext: string;
  readonly positionIdsNext: string;
  readonly seqlensKNext: string;
  readonly state: string;
  readonly stateNext: string;
  readonly params: string;
  readonly history: string;
  readonly historyNext: string;
  readonly ring: string;
  readonly ringNext: string;
  readonly counter: string;
  readonly counterNext: string;
  readonly pastKeyPrefix: string;
  readonly pastValuePrefix: string;
  readonly presentKeyPrefix: string;
  readonly presentValuePrefix: string;
}

export function slotBindings(): SlotBindings {
  const io = SLOT_STEP_IO;
  const s = SLOT_STATE;
  return {
    ...io,
    inputIdsNext: s.next(io.inputIds),
    positionIdsNext: s.next(io.positionIds),
    seqlensKNext: s.next(io.seqlensK),
    state: s.state,
    stateNext: s.next(s.state),
    params: s.params,
    history: s.history,
    historyNext: s.next(s.history),
    ring: s.ring,
    ringNext: s.next(s.ring),
    counter: s.counter,
    counterNext: s.next(s.counter),
    pastKeyPrefix: prefixOf(STATIC_KV.pastKey),
    pastValuePrefix: prefixOf(STATIC_KV.pastValue),
    presentKeyPrefix: prefixOf(STATIC_KV.presentKey),
    presentValuePrefix: prefixOf(STATIC_KV.presentValue),
  };
}
