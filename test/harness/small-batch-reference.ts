import { mulberry32 } from '../../src/model/checkpoint/random-gpt2-checkpoint.js';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/model/onnx/tensor-types.js';

/** One genqueue.SmallBatchMatMul call (native/small-batch-matmul.h): its sizes and what it folds in. */
export interface SmallBatchCase {
  readonly rows: number;
  /** Output columns (B has 2n rows with SwiGLU). */
  readonly n: number;
  readonly k: number;
  readonly norm: 'none' | 'layer' | 'rms';
  readonly bias: boolean;
  readonly residual: boolean;
  readonly activation: 'none' | 'fast_gelu' | 'swiglu';
  readonly epsilon: number;
  /** Kernel shape overrides (the operator's split/columns attributes); absent, the operator chooses. */
  readonly split?: number;
  readonly columns?: number;
}

/** fp16 bits of every input, each as the operator reads it. */
export interface SmallBatchInputs {
  readonly a: Uint16Array;
  readonly b: Uint16Array;
  readonly bias?: Uint16Array | undefined;
  readonly residual?: Uint16Array | undefined;
  readonly gamma?: Uint16Array | undefined;
  readonly beta?: Uint16Array | undefined;
}

export const weightRows = (c: SmallBatchCase): number => (c.activation === 'swiglu' ? 2 * c.n : c.n);

/** Seeded inputs whose outputs are of order 1: A off-centre (so a layer normalization has a mean to remove), B scaled by 1/√K. */
export function randomInputs(c: SmallBatchCase, seed: number): SmallBatchInputs {
  const rand = mulberry32(seed);
  const fill = (count: number, lo: number, hi: number): Uint16Array => {
    const out = new Uint16Array(count);
    for (let i = 0; i < count; i++) out[i] = float32ToFloat16Bits(lo + (hi - lo) * rand());
    return out;
  };
  const scale = Math.sqrt(3 / c.k);
  return {
    a: fill(c.rows * c.k, -1.5, 2.5),
    b: fill(weightRows(c) * c.k, -scale, scale),
    bias: c.bias ? fill(weightRows(c), -0.5, 0.5) : undefined,
    residual: c.residual ? fill(c.rows * c.n, -1, 1) : undefined,
    gamma: c.norm !== 'none' ? fill(c.k, 0.5, 1.5) : undefined,
    beta: c.norm === 'layer' ? fill(c.k, -0.5, 0.5) : undefined,
  };
}

const half = (bits: number): number => float16BitsToFloat32(bits);
const roundToHalf = (v: number): number => float16BitsToFloat32(float32ToFloat16Bits(v));

/**
 * The operator's definition in float64 from the same fp16 inputs: A's rows normalized (moments over the row, the
 * normalized values rounded to fp16 as the regular step's normalization output is), the products with B's rows,
 * + bias, SwiGLU (silu(gate) · up) or FastGelu, + residual. Outputs before their final rounding to fp16.
 */
export function smallBatchReference(c: SmallBatchCase, x: SmallBatchInputs): Float64Array {
  const out = new Float64Array(c.rows * c.n);
  for (let r = 0; r < c.rows; r++) {
    const a = Array.from(x.a.subarray(r * c.k, (r + 1) * c.k), half);
    if (c.norm !== 'none') {
      const mean = c.norm === 'layer' ? a.reduce((s, v) => s + v, 0) / c.k : 0;
      const meanSquare = a.reduce((s, v) => s + v * v, 0) / c.k;
      const rstd = 1 / Math.sqrt(Math.max(meanSquare - mean * mean, 0) + c.epsilon);
      for (let i = 0; i < c.k; i++) a[i] = roundToHalf((a[i]! - mean) * rstd * half(x.gamma![i]!) + (x.beta ? half(x.beta[i]!) : 0));
    }
    const dot = (row: number): number => {
      let s = 0;
      for (let i = 0; i < c.k; i++) s += a[i]! * half(x.b[row * c.k + i]!);
      return s + (x.bias ? half(x.bias[row]!) : 0);
    };
    for (let j = 0; j < c.n; j++) {
      let v = dot(j);
      if (c.activation === 'swiglu') v = (v / (1 + Math.exp(-v))) * dot(c.n + j);
      if (c.activation === 'fast_gelu') v = 0.5 * v * (1 + Math.tanh(0.7978845608 * (v + 0.044715 * v * v * v)));
      if (x.residual) v += half(x.residual[r * c.n + j]!);
      out[r * c.n + j] = v;
    }
  }
  return out;
}

/** The first output farther from the reference than fp16 allows (relative 3e-3, absolute below 1), or undefined. */
export function firstMismatch(c: SmallBatchCase, output: Uint16Array, reference: Float64Array): string | undefined {
  if (output.length !== reference.length) return `${output.length} outputs, expected ${reference.length}`;
  for (let i = 0; i < output.length; i++) {
    const got = half(output[i]!);
    const want = reference[i]!;
    if (!(Math.abs(got - want) <= 3e-3 * Math.max(1, Math.abs(want)))) return `row ${Math.floor(i / c.n)} column ${i % c.n}: ${got}, expected ${want}`;
  }
  return undefined;
}
