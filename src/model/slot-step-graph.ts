import type onnxProto from 'onnx-proto';
import type { DecoderGraph } from './architectures/decoder-graph.js';
import { GraphBuilder, encodeModel } from './onnx/graph-builder.js';
import { ElemType } from './onnx/tensor-types.js';

type IGraphProto = onnxProto.onnx.IGraphProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;

const PRODUCER = 'genqueue';

/** The slot engine's two steps in a built model directory (native/slot-loop.h runs them). */
export const SLOT_FILES = {
  decode: 'slot-decode.onnx',
  prefill: 'slot-prefill.onnx',
} as const;

/**
 * The values the addon binds (native/slot-loop.h SlotBindings), passed to it at open so they are spelled here
 * only. The decoder inputs are the same in both steps; in the decode step genqueue.NextToken writes the next
 * step's inputs (`*_next`, bound to the same buffers) and updates the state in place.
 */
export const SLOT_BINDINGS = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  seqlensK: 'seqlens_k',
  totalSequenceLength: 'total_sequence_length',
  inputIdsNext: 'input_ids_next',
  positionIdsNext: 'position_ids_next',
  seqlensKNext: 'seqlens_k_next',
  state: 'slot_state',
  stateNext: 'slot_state_next',
  params: 'slot_params',
  history: 'slot_history',
  historyNext: 'slot_history_next',
  ring: 'slot_ring',
  ringNext: 'slot_ring_next',
  counter: 'slot_counter',
  counterNext: 'slot_counter_next',
  pastKeyPrefix: 'past_key_',
  pastValuePrefix: 'past_value_',
  presentKeyPrefix: 'present_key_',
  presentValuePrefix: 'present_value_',
} as const;

/** The int64 fields of a row's state, in order (native/next-token.h SlotStateField). */
export const SLOT_STATE_FIELDS = ['token', 'position', 'end', 'min', 'seed', 'topK', 'status', 'sample'] as const;
/** The float parameters of a row, in order (native/next-token.h SlotParam). */
export const SLOT_PARAMS = ['temperature', 'topP', 'repetitionPenalty'] as const;
/** A row's status field. */
export const SLOT_STATUS = { idle: 0, running: 1, stopped: 2, length: 3 } as const;

/**
 * What the static-cpu decoder variant (GroupQueryAttention over in-place [batch, heads, capacity, head size]
 * caches) calls the values the slot steps rewire: GQA's two length inputs, computed in that variant from one
 * shared position, become inputs of their own, so that every row has its own position.
 */
const STATIC_CPU = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  seqlensK: 'gqa_seqlens_k',
  totalSequenceLength: 'gqa_total_sequence_length',
  logits: 'logits',
  presentKey: (i: number) => `present_key_${i}`,
  presentValue: (i: number) => `present_value_${i}`,
} as const;

/**
 * The slot engine's decode step: one token per row for all S rows, each at its own position. Inputs input_ids,
 * position_ids int64 [S, 1], seqlens_k int32 [S] (= position), total_sequence_length int32 [1] (the capacity: a
 * host constant), the caches, and the rows' state for genqueue.NextToken (native/next-token.h), which ends the
 * step: it picks each running row's token and writes the next step's inputs, so every step has the same shapes
 * and inputs and a run of them can be replayed as one CUDA graph.
 */
export function buildSlotDecodeGraph(decoder: DecoderGraph, eosTokenIds: readonly number[] = [decoder.spec.eosTokenId]): IGraphProto {
  const outputs = [...presentNames(decoder), STATIC_CPU.logits];
  const base = rewire(decoder.graph, 'slot_decode', outputs, ['batch', 1]);
  const tail = new GraphBuilder('slot_next');
  appendNextToken(tail, STATIC_CPU.logits, eosTokenIds);
  const t = tail.build();
  return {
    ...base,
    node: [...(base.node ?? []), ...(t.node ?? [])],
    input: [...(base.input ?? []), ...(t.input ?? [])],
    output: [...(base.output ?? []).filter((o) => o.name !== STATIC_CPU.logits), ...(t.output ?? [])],
    initializer: [...(base.initializer ?? []), ...(t.initializer ?? [])],
  };
}

/**
 * The prefill step, input_ids/position_ids [rows, chunk] into caches [rows, heads, *, head size], in one of
 * GroupQueryAttention's two forms: the first chunk of several prompts (right padded, seqlens_k = each length - 1,
 * total_sequence_length = chunk), or a later chunk of one prompt in its slot's slice (seqlens_k = past + chunk - 1,
 * total_sequence_length = past + chunk: several new tokens with past context go at batch 1 only). It ends with
 * the last layer's cache: nothing after it (the last MLP, the final norm, the vocabulary projection) is computed.
 */
export function buildSlotPrefillGraph(decoder: DecoderGraph): IGraphProto {
  return rewire(decoder.graph, 'slot_prefill', presentNames(decoder), ['batch', 'chunk']);
}

/**
 * genqueue.NextToken on `logits` with the slot state as graph inputs and its results as graph outputs
 * (SLOT_BINDINGS names); the NextToken tests build a graph of this node alone.
 */
export function appendNextToken(g: GraphBuilder, logits: string, eosTokenIds: readonly number[]): void {
  const B = SLOT_BINDINGS;
  g.input(B.state, 'int64', ['batch', SLOT_STATE_FIELDS.length]);
  g.input(B.params, 'float32', ['batch', SLOT_PARAMS.length]);
  g.input(B.history, 'int32', ['batch', 'history_words']);
  g.input(B.ring, 'int32', ['chunk_steps', 'batch']);
  g.input(B.counter, 'int64', [1]);
  g.output(B.inputIdsNext, 'int64', ['batch', 1]);
  g.output(B.positionIdsNext, 'int64', ['batch', 1]);
  g.output(B.seqlensKNext, 'int32', ['batch']);
  g.output(B.stateNext, 'int64', ['batch', SLOT_STATE_FIELDS.length]);
  g.output(B.historyNext, 'int32', ['batch', 'history_words']);
  g.output(B.ringNext, 'int32', ['chunk_steps', 'batch']);
  g.output(B.counterNext, 'int64', [1]);
  g.genqueueOp(
    'NextToken',
    [logits, B.state, B.params, B.history, B.ring, B.counter],
    [B.inputIdsNext, B.positionIdsNext, B.seqlensKNext, B.stateNext, B.historyNext, B.ringNext, B.counterNext],
    { eos_token_ids: [...eosTokenIds] },
  );
}

export function encodeSlotDecodeModel(decoder: DecoderGraph, eosTokenIds?: readonly number[]): Uint8Array {
  return encodeModel(buildSlotDecodeGraph(decoder, eosTokenIds), PRODUCER, { search: 'slot-decode' });
}

export function encodeSlotPrefillModel(decoder: DecoderGraph): Uint8Array {
  return encodeModel(buildSlotPrefillGraph(decoder), PRODUCER, { search: 'slot-prefill' });
}

function presentNames(decoder: DecoderGraph): string[] {
  const names: string[] = [];
  for (let i = 0; i < decoder.spec.numLayers; i++) names.push(STATIC_CPU.presentKey(i), STATIC_CPU.presentValue(i));
  return names;
}

/**
 * The static-cpu decoder with per-row positions: GroupQueryAttention's length inputs become graph inputs (their
 * producers go), input_ids and position_ids take `idsShape`, and only what `outputs` need is kept (nodes,
 * initializers, inputs), so each step computes nothing it does not use.
 */
function rewire(graph: IGraphProto, name: string, outputs: readonly string[], idsShape: readonly (number | string)[]): IGraphProto {
  const B = SLOT_BINDINGS;
  const rename = new Map<string, string>([
    [STATIC_CPU.seqlensK, B.seqlensK],
    [STATIC_CPU.totalSequenceLength, B.totalSequenceLength],
    [STATIC_CPU.inputIds, B.inputIds],
    [STATIC_CPU.positionIds, B.positionIds],
  ]);
  const produced = new Set((graph.node ?? []).flatMap((n) => n.output ?? []));
  for (const value of [STATIC_CPU.seqlensK, STATIC_CPU.totalSequenceLength]) {
    if (!produced.has(value)) throw new Error(`slot steps: the decoder has no ${value} (not the static-cpu variant?)`);
  }
  const named = (v: string): string => rename.get(v) ?? v;
  const cut = new Set<string>([STATIC_CPU.seqlensK, STATIC_CPU.totalSequenceLength]);
  const nodes = (graph.node ?? []).filter((n) => !(n.output ?? []).some((o) => cut.has(o)));
  // Backwards from the outputs: a node stays when one of its outputs is needed.
  const needed = new Set(outputs);
  const kept: typeof nodes = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!(n.output ?? []).some((o) => needed.has(o))) continue;
    kept.unshift(n);
    for (const input of n.input ?? []) if (input !== '') needed.add(input);
  }
  const missing = outputs.filter((o) => !produced.has(o));
  if (missing.length > 0) throw new Error(`slot steps: the decoder does not produce ${missing.join(', ')}`);
  const dims = (d: readonly (number | string)[]) => ({ dim: d.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })) });
  const info = (n: string, elemType: number, d: readonly (number | string)[]): IValueInfoProto => ({ name: n, type: { tensorType: { elemType, shape: dims(d) } } });
  const inputs: IValueInfoProto[] = [];
  for (const input of graph.input ?? []) {
    if (!needed.has(input.name ?? '')) continue;
    const n = named(input.name ?? '');
    const elemType = input.type?.tensorType?.elemType ?? 0;
    inputs.push(n === B.inputIds || n === B.positionIds ? info(n, elemType, idsShape) : { ...input, name: n });
  }
  inputs.push(info(B.seqlensK, ElemType.int32, [idsShape[0]!]), info(B.totalSequenceLength, ElemType.int32, [1]));
  return {
    name,
    node: kept.map((n) => ({ ...n, input: (n.input ?? []).map(named), output: (n.output ?? []).map(named) })),
    input: inputs,
    output: (graph.output ?? []).filter((o) => outputs.includes(o.name ?? '')),
    initializer: (graph.initializer ?? []).filter((t) => needed.has(t.name ?? '')),
  };
}
