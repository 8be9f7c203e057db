import { SAMPLING_INPUTS } from '../contract.js';
import type { GraphBuilder } from '../onnx/graph-builder.js';
import type { ElemTypeName } from '../onnx/tensor-types.js';

/**
 * Sampling as a greedy search: adds Gumbel noise to temperature-scaled, top-k/top-p-filtered logits, so that the
 * search op's argmax draws a token from softmax(logits / T) over the kept tokens (the Gumbel-max trick). This
 * keeps sampling inside ONNX Runtime's GreedySearch loop on every provider; ONNX Runtime 1.29's own Sampling
 * op crashes the process on CUDA. Noise comes from RandomUniformLike, so runs are not reproducible by seed.
 * Returns the name of the new logits value (same element type as the input).
 */
export function appendSamplingHead(g: GraphBuilder, logits: string, type: ElemTypeName, vocabSize: number, output: string): string {
  const f32 = (name: string, v: number): string => g.initializer(name, 'float32', [], new Uint8Array(Float32Array.of(v).buffer));
  const x = type === 'float32' ? logits : g.op('Cast', [logits], ['sample_logits_f32'], { to: 1 })[0]!;
  const [scaled] = g.op('Div', [x, SAMPLING_INPUTS.temperature], ['sample_scaled']);

  // then-branch: keep the top_k best (all when top_k = 0), then the smallest prefix of those whose probability
  // reaches top_p, HF's order. Sorting only k candidates keeps top-k cheap; top_p alone sorts the vocabulary.
  const t = g.subgraph('sample_filter_then');
  const [kPositive] = t.op('Greater', [SAMPLING_INPUTS.topK, t.int64s('sample_zero', [0])], ['sample_k_positive']);
  const [kCapped] = t.op('Min', [SAMPLING_INPUTS.topK, t.int64s('sample_vocab_max', [vocabSize])], ['sample_k_capped']);
  const [k] = t.op('Where', [kPositive!, kCapped!, t.int64s('sample_vocab_k', [vocabSize])], ['sample_k']);
  const [sortedVals] = t.op('TopK', [scaled!, k!], ['sample_sorted', 'sample_sorted_idx'], { axis: -1, largest: 1, sorted: 1 });
  // Nucleus over the kept candidates: a sorted token stays while the mass before it is below top_p (the first always does).
  const [probs] = t.op('Softmax', [sortedVals!], ['sample_sorted_probs'], { axis: -1 });
  const [cum] = t.op('CumSum', [probs!, t.int32s('sample_cumsum_axis', [-1], [])], ['sample_cum'], { exclusive: 1 });
  const [keep] = t.op('Less', [cum!, SAMPLING_INPUTS.topP], ['sample_keep']);
  const [keptVals] = t.op('Where', [keep!, sortedVals!, t.initializer('sample_inf', 'float32', [], new Uint8Array(Float32Array.of(Infinity).buffer))], ['sample_kept_vals']);
  // The smallest kept value is the cut: every logit below it is dropped (it is also at least the k-th best).
  const [threshold] = t.op('ReduceMin', [keptVals!], ['sample_threshold'], { axes: [-1], keepdims: 1 });
  const [below] = t.op('Less', [scaled!, threshold!], ['sample_below']);
  t.op('Where', [below!, t.initializer('sample_neg_inf', 'float32', [], new Uint8Array(Float32Array.of(-Infinity).buffer)), scaled!], ['sample_filtered_then']);
  t.output('sample_filtered_then', 'float32', ['batch', 1, vocabSize]);
  const e = g.subgraph('sample_filter_else');
  e.op('Identity', [scaled!], ['sample_filtered_else']);
  e.output('sample_filtered_else', 'float32', ['batch', 1, vocabSize]);
  const [filtered] = g.op('If', [SAMPLING_INPUTS.filter], ['sample_filtered'], { then_branch: { graph: t.build() }, else_branch: { graph: e.build() } });

  // Gumbel(0, 1) noise: -log(-log(u)), u kept inside (0, 1) so the logs stay finite.
  const [u] = g.op('RandomUniformLike', [filtered!], ['sample_u'], { low: { float: 0 }, high: { float: 1 } });
  const [uSafe] = g.op('Clip', [u!, f32('sample_u_min', 1e-10), f32('sample_u_max', 1 - 1e-7)], ['sample_u_safe']);
  const [l1] = g.op('Log', [uSafe!], ['sample_log_u']);
  const [n1] = g.op('Neg', [l1!], ['sample_neg_log_u']);
  const [l2] = g.op('Log', [n1!], ['sample_log_neg_log_u']);
  const [gumbel] = g.op('Neg', [l2!], ['sample_gumbel']);
  const [noisy] = g.op('Add', [filtered!, gumbel!], [type === 'float32' ? output : 'sample_noisy']);
  if (type !== 'float32') g.op('Cast', [noisy!], [output], { to: 10 });
  return output;
}
