import type onnxProto from 'onnx-proto';
import type { DecoderGraph } from './architectures/architecture.js';
import { SEARCH_STEP_IO, SLOT_PARAMS, SLOT_STATE, SLOT_STATE_FIELDS, SLOT_STEP_IO, STATIC_KV } from './contract.js';
import { GraphBuilder, encodeModel } from './onnx/graph-builder.js';

type IGraphProto = onnxProto.onnx.IGraphProto;

const PRODUCER = 'genqueue';

/**
 * The slot engine's decode step, from the decoder's 'slots' variant: one token per row for all S rows, each at its
 * own position (input_ids, position_ids [S, 1], seqlens_k [S] = position, total_sequence_length = the capacity: a
 * host constant), and genqueue.NextToken (native/next-token.h) on the logits, which picks each running row's token
 * and writes the next step's inputs, so every step has the same shapes and inputs and a run of them can be
 * replayed as one CUDA graph.
 */
export function buildSlotDecodeGraph(decoder: DecoderGraph): IGraphProto {
  if (decoder.spec.eosTokenIds.length > 16) throw new Error(`genqueue.NextToken takes at most 16 EOS ids, not ${decoder.spec.eosTokenIds.length}`);
  const dec = slotsDecoder(decoder);
  const tail = new GraphBuilder('slot_next');
  appendNextToken(tail, SEARCH_STEP_IO.logits, decoder.spec.eosTokenIds);
  const t = tail.build();
  return {
    name: 'slot_decode',
    node: [...(dec.node ?? []), ...(t.node ?? [])],
    input: [...(dec.input ?? []), ...(t.input ?? [])],
    output: [...(dec.output ?? []).filter((o) => o.name !== SEARCH_STEP_IO.logits), ...(t.output ?? [])],
    initializer: [...(dec.initializer ?? []), ...(t.initializer ?? [])],
  };
}

/**
 * The prefill step, input_ids/position_ids [rows, chunk] into caches [rows, kv heads, *, head size], in one of
 * GroupQueryAttention's two forms: the first chunk of several prompts (right padded, seqlens_k = each length - 1,
 * total_sequence_length = chunk), or a later chunk of one prompt in its slot's slice (seqlens_k = past + chunk - 1,
 * total_sequence_length = past + chunk: several new tokens with past context go at batch 1 only). It is the same
 * decoder kept to what the caches need: nothing after the last layer's attention (its MLP, the final norm, the
 * vocabulary projection) is computed.
 */
export function buildSlotPrefillGraph(decoder: DecoderGraph): IGraphProto {
  const dec = slotsDecoder(decoder);
  const outputs = new Set<string>();
  for (let i = 0; i < decoder.spec.numLayers; i++) outputs.add(STATIC_KV.presentKey(i)).add(STATIC_KV.presentValue(i));
  // Backwards from the caches: a node stays when one of its outputs is needed.
  const needed = new Set(outputs);
  const kept: NonNullable<IGraphProto['node']> = [];
  const nodes = dec.node ?? [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!(n.output ?? []).some((o) => needed.has(o))) continue;
    kept.unshift(n);
    for (const input of n.input ?? []) if (input !== '') needed.add(input);
  }
  return {
    name: 'slot_prefill',
    node: kept,
    // Every input stays, used or not (position_ids feeds nothing where GroupQueryAttention rotates by itself): the
    // loop binds the same names to both steps.
    input: dec.input ?? [],
    output: (dec.output ?? []).filter((o) => outputs.has(o.name ?? '')),
    initializer: (dec.initializer ?? []).filter((t) => needed.has(t.name ?? '')),
  };
}

/**
 * genqueue.NextToken on `logits` with the slot state as graph inputs and its results as graph outputs
 * (contract.ts SLOT_STATE, SLOT_STEP_IO); the NextToken tests build a graph of this node alone.
 */
export function appendNextToken(g: GraphBuilder, logits: string, eosTokenIds: readonly number[]): void {
  const s = SLOT_STATE;
  const io = SLOT_STEP_IO;
  g.input(s.state, 'int64', ['batch', SLOT_STATE_FIELDS.length]);
  g.input(s.params, 'float32', ['batch', SLOT_PARAMS.length]);
  g.input(s.history, 'int32', ['batch', 'history_words']);
  g.input(s.ring, 'int32', ['chunk_steps', 'batch']);
  g.input(s.counter, 'int64', [1]);
  const outputs = [s.next(io.inputIds), s.next(io.positionIds), s.next(io.seqlensK), s.next(s.state), s.next(s.history), s.next(s.ring), s.next(s.counter)];
  g.output(outputs[0]!, 'int64', ['batch', 1]);
  g.output(outputs[1]!, 'int64', ['batch', 1]);
  g.output(outputs[2]!, 'int32', ['batch']);
  g.output(outputs[3]!, 'int64', ['batch', SLOT_STATE_FIELDS.length]);
  g.output(outputs[4]!, 'int32', ['batch', 'history_words']);
  g.output(outputs[5]!, 'int32', ['chunk_steps', 'batch']);
  g.output(outputs[6]!, 'int64', [1]);
  g.genqueueOp('NextToken', [logits, s.state, s.params, s.history, s.ring, s.counter], outputs, { eos_token_ids: [...eosTokenIds] });
}

export function encodeSlotDecodeModel(decoder: DecoderGraph): Uint8Array {
  return encodeModel(buildSlotDecodeGraph(decoder), PRODUCER, { search: 'slot-decode' });
}

export function encodeSlotPrefillModel(decoder: DecoderGraph): Uint8Array {
  return encodeModel(buildSlotPrefillGraph(decoder), PRODUCER, { search: 'slot-prefill' });
}

function slotsDecoder(decoder: DecoderGraph): IGraphProto {
  const inputs = new Set((decoder.graph.input ?? []).map((i) => i.name));
  if (!inputs.has(SLOT_STEP_IO.seqlensK)) throw new Error('slot steps are built from the decoder\'s "slots" variant');
  return decoder.graph;
}
