import { SEARCH_STEP_IO } from '../contract.js';
import type { GraphBuilder } from '../onnx/graph-builder.js';
import { type ElemTypeName, encodeFloats } from '../onnx/tensor-types.js';
import type { DecoderStep } from './decoder-step.js';
import { appendSamplingHead } from './sampling-head.js';
import { type SmallBatchProjection, smallBatchMatMul } from './small-batch.js';

/** The lowest finite value of a float type: a logit that never wins and never turns softmax into NaN. */
export function lowestLogit(type: ElemTypeName): number {
  return type === 'float16' ? -65504 : -3.4e38;
}

/**
 * The step's logits output from its final hidden state: the last position only (the search ops use nothing else,
 * and projecting the whole prompt would waste the largest matmul), against the [vocab, hidden] lm_head without a
 * transposed copy; several EOS ids folded onto the first; the sampling head for the 'sample' variant.
 */
export function appendLogitsHead(step: DecoderStep, hidden: string, lmHead: string): void {
  const { g, io, spec } = step;
  const sample = io.variant.logits === 'sample';
  // The slot steps keep every EOS logit: genqueue.NextToken ends a row on any of them.
  const extraEos = spec.eosTokenIds.length > 1 && io.variant.kvCache !== 'slots';
  const projected = io.isStatic
    ? hidden
    : g.op('Slice', [hidden, g.int64s('slice_start', [-1]), g.int64s('slice_end', [2 ** 62]), g.int64s('slice_axis', [1])], ['last_hidden'])[0]!;
  const name = extraEos ? 'raw_logits' : sample ? 'last_logits' : SEARCH_STEP_IO.logits;
  const [logits] = g.msOp('FusedMatMul', [projected, lmHead], [name], { transB: 1, alpha: { float: 1 } });
  const folded = extraEos ? foldEosIds(g, logits!, spec.eosTokenIds, step.w.type, spec.vocabSize, sample ? 'logsumexp' : 'max', sample ? 'last_logits' : SEARCH_STEP_IO.logits) : logits!;
  if (sample) appendSamplingHead(g, folded, step.w.type, spec.vocabSize, SEARCH_STEP_IO.logits);
}

/**
 * The small-batch step's logits (static steps, the last position only): one SmallBatchMatMul of the final hidden
 * state, with the final normalization folded in, against the [vocab, hidden] lm_head; several EOS ids folded onto
 * the first as in appendLogitsHead.
 */
export function appendSmallBatchLogits(step: DecoderStep, hidden: string, lmHead: string, norm: SmallBatchProjection['norm']): string {
  const { g, spec } = step;
  const extraEos = spec.eosTokenIds.length > 1;
  const logits = smallBatchMatMul(g, { input: hidden, weight: lmHead, norm }, extraEos ? 'raw_logits' : SEARCH_STEP_IO.logits);
  return extraEos ? foldEosIds(g, logits, spec.eosTokenIds, step.w.type, spec.vocabSize, 'max', SEARCH_STEP_IO.logits) : logits;
}

/**
 * ONNX Runtime's search operators and the device loop end a row on one EOS id; a model with several (Llama 3:
 * <|end_of_text|>, <|eom_id|>, <|eot_id|>) gets them folded onto the first in the logits: the others never win,
 * and the first takes 'max': the largest EOS logit, so an argmax ends the row exactly when HF's would (and
 * min_new_tokens, which suppresses the first id, suppresses them all); 'logsumexp': their summed probability, so
 * sampling ends a row with HF's probability. Beam scores differ from HF's only at steps where a second EOS id
 * competes in the beams.
 */
function foldEosIds(g: GraphBuilder, logits: string, eosIds: readonly number[], type: ElemTypeName, vocab: number, mode: 'max' | 'logsumexp', output: string): string {
  const isFirst = new Uint8Array(vocab);
  const isOther = new Uint8Array(vocab);
  isFirst[eosIds[0]!] = 1;
  for (const id of eosIds.slice(1)) isOther[id] = 1;
  const [eosLogits] = g.op('Gather', [logits, g.int64s('eos_ids', eosIds)], ['eos_logits'], { axis: 2 });
  const [merged] = g.op(mode === 'max' ? 'ReduceMax' : 'ReduceLogSumExp', [eosLogits!], ['eos_merged'], { axes: [-1], keepdims: 1 });
  const lowest = g.initializer('eos_lowest', type, [], encodeFloats(Float32Array.of(lowestLogit(type)), type === 'float16' ? 'fp16' : 'fp32'));
  const [others] = g.op('Where', [g.initializer('eos_is_other', 'bool', [vocab], isOther), lowest, logits], ['eos_others_dropped']);
  return g.op('Where', [g.initializer('eos_is_first', 'bool', [vocab], isFirst), merged!, others!], [output])[0]!;
}
