import type { AttrValue, GraphBuilder } from '../onnx/graph-builder.js';

/**
 * The longest row genqueue.SmallBatchMatMul reads (native/small-batch-matmul.h kMaxK): a 256-thread team holds at
 * most 8 pieces of 8 values of it per thread.
 */
export const SMALL_BATCH_MAX_K = 16384;

/** Whether every projection input length fits the kernel: multiples of 8 (16-byte loads), at most SMALL_BATCH_MAX_K. */
export function smallBatchFits(...lengths: readonly number[]): boolean {
  return lengths.every((k) => k % 8 === 0 && k <= SMALL_BATCH_MAX_K);
}

/** One projection of the small-batch step and what it folds in. */
export interface SmallBatchProjection {
  readonly input: string;
  /** [out, in]; with SwiGLU [2 · out, in], the gate rows then the up rows. */
  readonly weight: string;
  /** One value per weight row. */
  readonly bias?: string | undefined;
  /** Added last: the residual stream. */
  readonly residual?: string | undefined;
  /** The input's rows normalized first: layer normalization (gamma, beta) or RMS normalization (gamma). */
  readonly norm?: { readonly kind: 'layernorm' | 'rmsnorm'; readonly gamma: string; readonly beta?: string; readonly epsilon: AttrValue } | undefined;
  /** fast_gelu: ONNX Runtime's FastGelu after the bias; swiglu: silu(gate) · up. */
  readonly activation?: 'fast_gelu' | 'swiglu' | undefined;
}

/** One genqueue.SmallBatchMatMul node (native/small-batch-matmul.h) writing `output`. */
export function smallBatchMatMul(g: GraphBuilder, p: SmallBatchProjection, output: string): string {
  const inputs = [p.input, p.weight, p.bias ?? '', p.residual ?? ''];
  const attrs: Record<string, AttrValue> = {};
  if (p.norm) {
    if (p.norm.kind === 'layernorm' && !p.norm.beta) throw new Error('SmallBatchMatMul: a layer normalization needs beta');
    inputs.push(p.norm.gamma, ...(p.norm.kind === 'layernorm' ? [p.norm.beta!] : []));
    attrs.epsilon = p.norm.epsilon;
    if (p.norm.kind === 'rmsnorm') attrs.rms_norm = 1;
  }
  if (p.activation) attrs[p.activation] = 1;
  while (inputs.at(-1) === '') inputs.pop();
  return g.genqueueOp('SmallBatchMatMul', inputs, [output], attrs)[0]!;
}
