import type onnxProto from 'onnx-proto';
import type { DecoderGraph } from './architectures/architecture.js';
import { DEVICE_LOOP_STATE, SEARCH_STEP_IO } from './contract.js';
import { GraphBuilder, encodeModel } from './onnx/graph-builder.js';
import { encodeFloats, floatElemType } from './onnx/tensor-types.js';

type IGraphProto = onnxProto.onnx.IGraphProto;

const PRODUCER = 'genqueue';

/**
 * One decode step whose whole state lives in bound device buffers, so that steps can be replayed as CUDA graphs
 * with no host work between them. The model reads the token at position `step` from `tokens` [capacity, B]
 * (position-major, so one step reads and writes one contiguous row), writes its KV in place at
 * past_sequence_length (the same position, as a host scalar: DecoderMaskedMultiHeadAttention reads it on the
 * CPU, so a captured graph is only valid for the positions it was captured at), and writes the next token into row
 * `step + 1` of the same buffer (tokens_next is bound to it): the prompt's own token while `step + 1` is inside
 * the prompt (prompts are fed one token per step, so ragged prompts need no padding and all rows share one
 * position), the argmax otherwise, with EOS suppressed while `step + 1 < min_lengths`. `step_next = step + 1`
 * goes to a second buffer (two bindings alternate), as nothing would order an in-place write after its readers.
 * All ids and lengths are int64, the type Gather/TopK/ScatterND use, so no Cast runs per step.
 * With tail 'genqueue' (fp16 CUDA steps) everything after the logits is one genqueue.GreedyNextToken node
 * (native/greedy-next-token.h) instead of ~15 ONNX operators.
 */
export function buildDeviceLoopStepGraph(decoder: DecoderGraph, options: DeviceLoopStepOptions = { tail: 'onnx' }): IGraphProto {
  const spec = decoder.spec;
  const ft = floatElemType(spec.precision);
  const S = DEVICE_LOOP_STATE;
  const g = new GraphBuilder('device_loop_step');
  const tokens = g.input(S.tokens, 'int64', ['capacity', 'batch']);
  const step = g.input(S.step, 'int64', [1]);
  const promptLengths = g.input(S.promptLengths, 'int64', ['batch']);
  const minLengths = g.input(S.minLengths, 'int64', ['batch']);
  g.output(S.tokensNext, 'int64', ['capacity', 'batch']);
  g.output(S.stepNext, 'int64', [1]);

  // Reshapes alias their input on ONNX Runtime's providers: they cost no kernel.
  const column = g.int64s('loop_column_shape', [-1, 1]);
  const [row] = g.op('Gather', [tokens, step], ['loop_row'], { axis: 0 });
  g.op('Reshape', [row!, column], [SEARCH_STEP_IO.inputIds]);
  g.op('Reshape', [step, g.int64s('loop_position_shape', [1, 1])], [SEARCH_STEP_IO.positionIds]);
  const pre = g.build();

  const post = new GraphBuilder('device_loop_next');
  if (options.tail === 'genqueue') {
    if (spec.precision !== 'fp16') throw new Error('device loop: GreedyNextToken reads fp16 logits');
    post.genqueueOp('GreedyNextToken', [SEARCH_STEP_IO.logits, tokens, step, promptLengths, minLengths], [S.tokensNext, S.stepNext], { eos_token_id: spec.eosTokenId });
    return splice(pre, decoder, post.build());
  }
  const one = post.int64s('loop_one', [1]);
  const [next] = post.op('Add', [step, one], [S.stepNext]);
  const [suppress] = post.op('Less', [next!, minLengths], ['loop_suppress_eos']);
  const [suppress3] = post.op('Reshape', [suppress!, post.int64s('loop_suppress_shape', [-1, 1, 1])], ['loop_suppress3']);
  // EOS suppression as one bias row: 0 everywhere, the lowest value at EOS, chosen per row by Where.
  const vocab = spec.vocabSize;
  const lowestValue = spec.precision === 'fp16' ? -65504 : -3.4e38;
  const eosBias = new Float32Array(vocab);
  eosBias[spec.eosTokenId] = lowestValue;
  const suppressRow = post.initializer('loop_eos_bias', ft, [vocab], encodeFloats(eosBias, spec.precision));
  const noBias = post.initializer('loop_no_bias', ft, [vocab], encodeFloats(new Float32Array(vocab), spec.precision));
  const [bias] = post.op('Where', [suppress3!, suppressRow, noBias], ['loop_bias']);
  const [logits] = post.op('Add', [SEARCH_STEP_IO.logits, bias!], ['loop_logits']);
  const argmax = appendChunkedArgmax(post, logits!, vocab, () => post.initializer('loop_lowest', ft, [], encodeFloats(Float32Array.of(lowestValue), spec.precision)));
  const [inPrompt] = post.op('Less', [next!, promptLengths], ['loop_in_prompt']);
  const [inPromptCol] = post.op('Reshape', [inPrompt!, column], ['loop_in_prompt_col']);
  const [forcedRow] = post.op('Gather', [tokens, next!], ['loop_forced_row'], { axis: 0 });
  const [forced] = post.op('Reshape', [forcedRow!, column], ['loop_forced']);
  const [chosen] = post.op('Where', [inPromptCol!, forced!, argmax], ['loop_chosen']);
  const [chosenRow] = post.op('Reshape', [chosen!, post.int64s('loop_row_shape', [1, -1])], ['loop_chosen_row']);
  const [at] = post.op('Reshape', [next!, post.int64s('loop_index_shape', [1, 1])], ['loop_next_index']);
  post.op('ScatterND', [tokens, at!, chosenRow!], [S.tokensNext]);
  return splice(pre, decoder, post.build());
}

/** The step: the decoder's input_ids/position_ids come from `pre`, its logits go to `tail`. */
function splice(pre: IGraphProto, decoder: DecoderGraph, tail: IGraphProto): IGraphProto {
  const computed = new Set<string>([SEARCH_STEP_IO.inputIds, SEARCH_STEP_IO.positionIds]);
  const dec = decoder.graph;
  const decOutputs = (dec.output ?? []).filter((o) => o.name !== SEARCH_STEP_IO.logits);
  if (decOutputs.length === (dec.output ?? []).length) throw new Error('device loop: the decoder must output logits (variant logits "last")');
  return {
    name: 'device_loop_step',
    node: [...(pre.node ?? []), ...(dec.node ?? []), ...(tail.node ?? [])],
    input: [...(pre.input ?? []), ...(dec.input ?? []).filter((i) => !computed.has(i.name ?? ''))],
    output: [...(pre.output ?? []), ...decOutputs],
    initializer: [...(pre.initializer ?? []), ...(dec.initializer ?? []), ...(tail.initializer ?? [])],
  };
}

/**
 * Argmax over the vocabulary in two TopK(1) passes: per chunk (the rows run in parallel), then over the chunk
 * maxima: ONNX Runtime's CUDA ArgMax (a cuDNN reduce) and one TopK over a whole row (a single-row radix select)
 * are both far slower at small batches (bench/results/device-loop-tuning-h100.json). The chunk width divides the
 * vocabulary when it can (GPT-2: 29 × 1,733), which saves a Pad; otherwise the logits are padded to 1,024-wide
 * chunks. Ties go to the lowest index, as with ArgMax. Logits [B,1,V] → int64 [B,1].
 */
function appendChunkedArgmax(g: GraphBuilder, logits: string, vocab: number, lowest: () => string): string {
  const width = chunkWidth(vocab);
  const chunks = Math.ceil(vocab / width);
  const padded = chunks * width;
  const k1 = g.int64s('argmax_k1', [1]);
  const input =
    padded === vocab
      ? logits
      : g.op('Pad', [logits, g.int64s('argmax_pads', [0, 0, 0, 0, 0, padded - vocab]), lowest()], ['argmax_padded'], { mode: 'constant' })[0]!;
  const [blocks] = g.op('Reshape', [input, g.int64s('argmax_blocks_shape', [-1, chunks, width])], ['argmax_blocks']);
  const [blockMax, blockIdx] = g.op('TopK', [blocks!, k1], ['argmax_block_max', 'argmax_block_idx'], { axis: -1 });
  const rowsShape = g.int64s('argmax_rows_shape', [-1, chunks]);
  const [maxRows] = g.op('Reshape', [blockMax!, rowsShape], ['argmax_max_rows']);
  const [idxRows] = g.op('Reshape', [blockIdx!, rowsShape], ['argmax_idx_rows']);
  const [, bestBlock] = g.op('TopK', [maxRows!, k1], ['argmax_best_max', 'argmax_best_block'], { axis: -1 });
  const offsets = g.int64s('argmax_chunk_offsets', Array.from({ length: chunks }, (_, c) => c * width));
  const [globalIdx] = g.op('Add', [idxRows!, offsets], ['argmax_global_idx']);
  return g.op('GatherElements', [globalIdx!, bestBlock!], ['loop_argmax'], { axis: 1 })[0]!;
}

/** A divisor of the vocabulary between 512 and 4,096 (closest to 1,024), or 1,024 with padding. */
function chunkWidth(vocab: number): number {
  let best = 0;
  for (let w = 512; w <= 4096; w++) if (vocab % w === 0 && (best === 0 || Math.abs(w - 1024) < Math.abs(best - 1024))) best = w;
  return best || 1024;
}

export interface DeviceLoopStepOptions {
  /** onnx: the tail as ONNX operators (any provider); genqueue: one GreedyNextToken node (the addon's CUDA sessions, fp16). */
  readonly tail: 'onnx' | 'genqueue';
}

export function encodeDeviceLoopStepModel(decoder: DecoderGraph, options?: DeviceLoopStepOptions): Uint8Array {
  return encodeModel(buildDeviceLoopStepGraph(decoder, options), PRODUCER, { search: 'device-loop' });
}
