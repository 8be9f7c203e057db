import onnxProto from 'onnx-proto';
import type { DecoderGraph } from './architectures/decoder-graph.js';
import { GraphBuilder, encodeModel } from './onnx/graph-builder.js';
import { encodeFloats, floatElemType } from './onnx/tensor-types.js';

type IGraphProto = onnxProto.onnx.IGraphProto;

const PRODUCER = 'genqueue';

export const DEVICE_LOOP_FILE = 'device-loop-step.onnx';

/**
 * Names of the device loop's state. The native addon (native/device-loop.cc) binds the same names as string
 * literals (it reads no manifest), so a rename here must be made there too; the addon's tests catch a mismatch.
 */
export const DEVICE_LOOP_STATE = {
  tokens: 'tokens',
  step: 'step',
  promptLengths: 'prompt_lengths',
  minLengths: 'min_lengths',
  totalSequenceLength: 'total_sequence_length',
  tokensNext: 'tokens_next',
  stepNext: 'step_next',
} as const;

/**
 * One decode step whose whole state lives in bound device buffers, so it can be replayed as a CUDA graph
 * with no host work between steps: the model reads the token at position `step` from `tokens` [B, capacity],
 * writes its KV in place (a decoder built with kvCache 'static'), and writes the next token at `step + 1`
 * — the prompt's own token while `step + 1` is inside the prompt (prompts are fed one token per step, so
 * ragged prompts need no padding and all rows share one position), the argmax afterwards, with EOS
 * suppressed while `step + 1 < min_lengths`. `step_next = step + 1`. Two bindings that swap tokens/step
 * (A→B, B→A) make a loop of fixed addresses.
 */
export function buildDeviceLoopStepGraph(decoder: DecoderGraph): IGraphProto {
  const spec = decoder.spec;
  const ft = floatElemType(spec.precision);
  const S = DEVICE_LOOP_STATE;
  const g = new GraphBuilder('device_loop_step');
  const tokens = g.input(S.tokens, 'int32', ['batch', 'capacity']);
  const step = g.input(S.step, 'int32', [1]);
  const promptLengths = g.input(S.promptLengths, 'int32', ['batch']);
  const minLengths = g.input(S.minLengths, 'int32', ['batch']);
  g.output(S.tokensNext, 'int32', ['batch', 'capacity']);
  g.output(S.stepNext, 'int32', [1]);

  // Broadcasting instead of Shape/Expand: shape nodes would run on the CPU and forbid CUDA graph capture.
  const zero = g.int32s('loop_zero', [0], []);
  const one = g.int32s('loop_one', [1], []);
  const axis1 = g.int64s('loop_axis1', [1]);
  const axis2 = g.int64s('loop_axis2', [2]);
  const [zerosB] = g.op('Mul', [promptLengths, zero], ['loop_zeros_b']);
  g.op('Add', [zerosB!, step], ['seqlens_k']);
  g.op('Unsqueeze', ['seqlens_k', axis1], ['position_ids']);
  g.op('GatherElements', [tokens, 'position_ids'], ['input_ids'], { axis: 1 });
  const pre = g.build();

  const post = new GraphBuilder('device_loop_next');
  const [nextCol] = post.op('Add', ['position_ids', one], ['loop_next_col']);
  const [promptCol] = post.op('Unsqueeze', [promptLengths, axis1], ['loop_prompt_col']);
  const [minCol] = post.op('Unsqueeze', [minLengths, axis1], ['loop_min_col']);
  const [inPrompt] = post.op('Less', [nextCol!, promptCol!], ['loop_in_prompt']);
  const [suppressEos] = post.op('Less', [nextCol!, minCol!], ['loop_suppress_eos']);
  const [zerosCol] = post.op('Mul', ['position_ids', zero], ['loop_zeros_col']);
  const [eosCol] = post.op('Add', [zerosCol!, post.int32s('loop_eos', [spec.eosTokenId], [])], ['loop_eos_col']);
  const [eosIdx] = post.op('Unsqueeze', [eosCol!, axis2], ['loop_eos_idx']);
  const [eosLogit] = post.op('GatherElements', ['logits', eosIdx!], ['loop_eos_logit'], { axis: 2 });
  const [suppress3] = post.op('Unsqueeze', [suppressEos!, axis2], ['loop_suppress3']);
  const lowest = post.initializer('loop_lowest', ft, [], encodeFloats(Float32Array.of(spec.precision === 'fp16' ? -65504 : -3.4e38), spec.precision));
  const [newEos] = post.op('Where', [suppress3!, lowest, eosLogit!], ['loop_new_eos']);
  const [logits] = post.op('ScatterElements', ['logits', eosIdx!, newEos!], ['loop_logits'], { axis: 2 });
  const argmax = appendChunkedArgmax(post, logits!, spec.vocabSize, lowest);
  const [argmax32] = post.op('Cast', [argmax!], ['loop_argmax32'], { to: onnxProto.onnx.TensorProto.DataType.INT32 });
  const [forced] = post.op('GatherElements', [tokens, nextCol!], ['loop_forced'], { axis: 1 });
  const [chosen] = post.op('Where', [inPrompt!, forced!, argmax32!], ['loop_chosen']);
  post.op('ScatterElements', [tokens, nextCol!, chosen!], [S.tokensNext], { axis: 1 });
  post.op('Add', [step, one], [S.stepNext]);
  const tail = post.build();

  // Splice: the decoder's input_ids/position_ids/seqlens_k come from `pre`, its logits go to `post`.
  const computed = new Set(['input_ids', 'position_ids', 'seqlens_k']);
  const dec = decoder.graph;
  const decOutputs = (dec.output ?? []).filter((o) => o.name !== 'logits');
  if (decOutputs.length === (dec.output ?? []).length) throw new Error('device loop: the decoder must output logits (variant logits "last")');
  return {
    name: 'device_loop_step',
    node: [...(pre.node ?? []), ...(dec.node ?? []), ...(tail.node ?? [])],
    input: [...(pre.input ?? []), ...(dec.input ?? []).filter((i) => !computed.has(i.name ?? ''))],
    output: [...(pre.output ?? []), ...decOutputs],
    initializer: [...(pre.initializer ?? []), ...(dec.initializer ?? []), ...(tail.initializer ?? [])],
  };
}

const ARGMAX_CHUNK = 1024;

/**
 * Argmax over the vocabulary in two TopK(1) passes: per 1024-wide chunk (the rows run in parallel), then over
 * the chunk maxima. Measured on the H100 at batch 1: ONNX Runtime's CUDA ArgMax (cuDNN reduce) took 0.53 ms of
 * a 1.23 ms step and one TopK over 50,257 logits ~0.18 ms (a single-row radix select). Ties go to the lowest
 * index, as with ArgMax. Logits [B,1,V] → int64 [B,1].
 */
function appendChunkedArgmax(g: GraphBuilder, logits: string, vocab: number, lowest: string): string {
  const chunks = Math.ceil(vocab / ARGMAX_CHUNK);
  const padded = chunks * ARGMAX_CHUNK;
  const k1 = g.int64s('argmax_k1', [1]);
  const input =
    padded === vocab
      ? logits
      : g.op('Pad', [logits, g.int64s('argmax_pads', [0, 0, 0, 0, 0, padded - vocab]), lowest], ['argmax_padded'], { mode: 'constant' })[0]!;
  const [blocks] = g.op('Reshape', [input, g.int64s('argmax_blocks_shape', [-1, chunks, ARGMAX_CHUNK])], ['argmax_blocks']);
  const [blockMax, blockIdx] = g.op('TopK', [blocks!, k1], ['argmax_block_max', 'argmax_block_idx'], { axis: -1 });
  const rowsShape = g.int64s('argmax_rows_shape', [-1, chunks]);
  const [maxRows] = g.op('Reshape', [blockMax!, rowsShape], ['argmax_max_rows']);
  const [idxRows] = g.op('Reshape', [blockIdx!, rowsShape], ['argmax_idx_rows']);
  const [, bestBlock] = g.op('TopK', [maxRows!, k1], ['argmax_best_max', 'argmax_best_block'], { axis: -1 });
  const [within] = g.op('GatherElements', [idxRows!, bestBlock!], ['argmax_within'], { axis: 1 });
  const [base] = g.op('Mul', [bestBlock!, g.int64s('argmax_chunk', [ARGMAX_CHUNK])], ['argmax_base']);
  return g.op('Add', [base!, within!], ['loop_argmax'])[0]!;
}

export function encodeDeviceLoopStepModel(decoder: DecoderGraph): Uint8Array {
  return encodeModel(buildDeviceLoopStepGraph(decoder), PRODUCER, { search: 'device-loop' });
}
