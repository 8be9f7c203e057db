import type { GraphBuilder } from '../onnx/graph-builder.js';
import { type ElemTypeName, ElemType, type FloatPrecision, encodeFloats } from '../onnx/tensor-types.js';
import { ModelConfigError } from './model-config.js';

/** Rotary position embedding parameters, as HF's rope types define them. */
export interface RopeSpec {
  readonly type: 'default' | 'linear' | 'llama3' | 'dynamic';
  readonly theta: number;
  /** Rotated dimensions per head (the head size for Llama, Mistral and Qwen2). */
  readonly dim: number;
  readonly factor?: number | undefined;
  /** llama3: the band limits. */
  readonly lowFreqFactor?: number | undefined;
  readonly highFreqFactor?: number | undefined;
  /** llama3: the context the unscaled model had; dynamic: the length past which the base grows. */
  readonly originalMaxPositions?: number | undefined;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * The rope parameters of a config.json in either style: transformers 4's top-level rope_theta + rope_scaling, or
 * transformers 5's rope_parameters. Types other than default/linear/llama3/dynamic are refused by name.
 */
export function parseRope(config: Record<string, unknown>, headSize: number, maxPositions: number, where: string): RopeSpec {
  const params = (config.rope_parameters ?? null) as Record<string, unknown> | null;
  const scaling = (config.rope_scaling ?? null) as Record<string, unknown> | null;
  const source = params ?? scaling ?? {};
  const field = params ? 'rope_parameters' : 'rope_scaling';
  const theta = num(params?.rope_theta) ?? num(config.rope_theta) ?? 10000;
  const rawType = source.rope_type ?? source.type ?? 'default';
  const partial = num(source.partial_rotary_factor) ?? num(config.partial_rotary_factor) ?? 1;
  if (partial !== 1) throw new ModelConfigError(`${where}: partial_rotary_factor ${partial} is not supported (only 1)`);
  const factor = num(source.factor);
  const needFactor = (): number => {
    if (factor === undefined || factor <= 0) throw new ModelConfigError(`${where}: ${field}.factor: required field is missing for rope_type "${String(rawType)}"`);
    return factor;
  };
  switch (rawType) {
    case 'default':
      return { type: 'default', theta, dim: headSize };
    case 'linear':
      return { type: 'linear', theta, dim: headSize, factor: needFactor() };
    case 'dynamic':
      return { type: 'dynamic', theta, dim: headSize, factor: needFactor(), originalMaxPositions: num(source.original_max_position_embeddings) ?? maxPositions };
    case 'llama3': {
      const low = num(source.low_freq_factor);
      const high = num(source.high_freq_factor);
      const original = num(source.original_max_position_embeddings);
      for (const [name, v] of [['low_freq_factor', low], ['high_freq_factor', high], ['original_max_position_embeddings', original]] as const) {
        if (v === undefined) throw new ModelConfigError(`${where}: ${field}.${name}: required field is missing for rope_type "llama3"`);
      }
      return { type: 'llama3', theta, dim: headSize, factor: needFactor(), lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: original };
    }
    default:
      throw new ModelConfigError(`${where}: ${field}.rope_type "${String(rawType)}" is not supported (supported: default, linear, llama3, dynamic)`);
  }
}

const f = Math.fround;

/** HF's inverse frequencies in float32 arithmetic, as its rope initialisers compute them (not for 'dynamic'). */
export function inverseFrequencies(rope: RopeSpec): Float32Array {
  const half = rope.dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(rope.theta, f(f(2 * i) / rope.dim))));
  if (rope.type === 'linear') for (let i = 0; i < half; i++) inv[i] = f(inv[i]! / rope.factor!);
  if (rope.type === 'llama3') {
    const factor = rope.factor!;
    const low = rope.lowFreqFactor!;
    const high = rope.highFreqFactor!;
    const old = rope.originalMaxPositions!;
    const lowWavelen = old / low;
    const highWavelen = old / high;
    for (let i = 0; i < half; i++) {
      const x = inv[i]!;
      const wavelen = f((2 * Math.PI) / x);
      const scaled = wavelen > lowWavelen ? f(x / factor) : x;
      const smooth = f(f(f(old / wavelen) - low) / (high - low));
      const smoothed = f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
      const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      inv[i] = medium ? smoothed : scaled;
    }
  }
  return inv;
}

/**
 * cos/sin caches [positions, dim / 2] for ONNX Runtime's RotaryEmbedding and GroupQueryAttention (non-interleaved
 * halves, HF's rotate_half layout), shared by every step variant through the weight file.
 */
export function rotaryCaches(g: GraphBuilder, rope: RopeSpec, positions: number, precision: FloatPrecision, type: ElemTypeName): { cos: string; sin: string } {
  const inv = inverseFrequencies(rope);
  const half = rope.dim / 2;
  const table = (fn: (x: number) => number): (() => Uint8Array) => () => {
    const out = new Float32Array(positions * half);
    for (let p = 0; p < positions; p++) for (let i = 0; i < half; i++) out[p * half + i] = fn(f(p * inv[i]!));
    return encodeFloats(out, precision);
  };
  return {
    cos: g.initializer('rope_cos_cache', type, [positions, half], table(Math.cos)),
    sin: g.initializer('rope_sin_cache', type, [positions, half], table(Math.sin)),
  };
}

/**
 * Dynamic NTK scaling, computed in the graph as HF's dynamic rope does it per forward call: with L = the largest
 * position in the batch + 1, the base grows to theta · (factor · L / original - (factor - 1))^(dim / (dim - 2))
 * once L passes the original length, and the caches cover positions 0..L-1. (HF also keeps a grown base across
 * calls while the length stays above the original; each run here starts from its own length.)
 */
export function dynamicRotaryCaches(g: GraphBuilder, rope: RopeSpec, positions: string, type: ElemTypeName): { cos: string; sin: string } {
  const f32 = (name: string, v: number | number[]): string =>
    g.initializer(name, 'float32', Array.isArray(v) ? [v.length] : [], new Uint8Array(Float32Array.from(Array.isArray(v) ? v : [v]).buffer));
  const half = rope.dim / 2;
  const factor = rope.factor!;
  const original = rope.originalMaxPositions!;
  const [maxPos] = g.op('ReduceMax', [positions], ['rope_max_position'], { keepdims: 0 });
  const [maxPosF] = g.op('Cast', [maxPos!], ['rope_max_position_f'], { to: ElemType.float32 });
  const [length] = g.op('Add', [maxPosF!, f32('rope_one', 1)], ['rope_length']);
  const [seqLen] = g.op('Max', [length!, f32('rope_original', original)], ['rope_seq_len']);
  // factor · L / original - (factor - 1)
  const [scaled] = g.op('Div', [g.op('Mul', [seqLen!, f32('rope_factor', factor)], ['rope_factor_len'])[0]!, f32('rope_original_div', original)], ['rope_scaled_len']);
  const [ratio] = g.op('Sub', [scaled!, f32('rope_factor_minus_one', factor - 1)], ['rope_ratio']);
  const [growth] = g.op('Pow', [ratio!, f32('rope_exponent', rope.dim / (rope.dim - 2))], ['rope_growth']);
  const [base] = g.op('Mul', [growth!, f32('rope_theta', rope.theta)], ['rope_base']);
  const exponents = Array.from({ length: half }, (_, i) => f(f(2 * i) / rope.dim));
  const [power] = g.op('Pow', [base!, f32('rope_exponents', exponents)], ['rope_power']);
  const [inv] = g.op('Reciprocal', [power!], ['rope_inv_freq']);
  const [range] = g.op('Range', [f32('rope_zero', 0), length!, f32('rope_step', 1)], ['rope_positions']);
  const [col] = g.op('Unsqueeze', [range!, g.int64s('rope_col_axis', [1])], ['rope_positions_col']);
  const [freqs] = g.op('Mul', [col!, inv!], ['rope_freqs']);
  const cast = (x: string, name: string): string => (type === 'float32' ? g.op('Identity', [x], [name])[0]! : g.op('Cast', [x], [name], { to: ElemType.float16 })[0]!);
  return {
    cos: cast(g.op('Cos', [freqs!], ['rope_cos_f32'])[0]!, 'rope_cos_cache'),
    sin: cast(g.op('Sin', [freqs!], ['rope_sin_f32'])[0]!, 'rope_sin_cache'),
  };
}
