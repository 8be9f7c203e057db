import { mulberry32 } from '../../src/model/checkpoint/random-gpt2-checkpoint.js';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/model/onnx/tensor-types.js';

/** One genqueue.DecodeAttention case (native/decode-attention.h): rows, heads, cache capacity, each row's position. */
export interface DecodeAttentionCase {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headSize: number;
  /** Rotary dims / 2 (at most headSize / 2). */
  readonly rotaryHalf: number;
  readonly capacity: number;
  readonly positions: readonly number[];
  readonly window?: number;
}

export interface DecodeAttentionInputs {
  readonly qkv: Uint16Array;
  readonly pastKey: Uint16Array;
  readonly pastValue: Uint16Array;
  readonly seqlens: Int32Array;
  readonly cos: Uint16Array;
  readonly sin: Uint16Array;
}

const half = (bits: number): number => float16BitsToFloat32(bits);
const roundToHalf = (v: number): number => float16BitsToFloat32(float32ToFloat16Bits(v));

export function decodeAttentionInputs(c: DecodeAttentionCase, seed: number): DecodeAttentionInputs {
  const rand = mulberry32(seed);
  const fill = (n: number, scale: number) => Uint16Array.from({ length: n }, () => float32ToFloat16Bits((rand() * 2 - 1) * scale));
  const B = c.positions.length;
  const width = (c.heads + 2 * c.kvHeads) * c.headSize;
  const table = (fn: (x: number) => number) => {
    const out = new Uint16Array(c.capacity * c.rotaryHalf);
    for (let p = 0; p < c.capacity; p++) for (let i = 0; i < c.rotaryHalf; i++) out[p * c.rotaryHalf + i] = float32ToFloat16Bits(fn(p / 10000 ** ((2 * i) / (2 * c.rotaryHalf))));
    return out;
  };
  return {
    qkv: fill(B * width, 2),
    pastKey: fill(B * c.kvHeads * c.capacity * c.headSize, 2),
    pastValue: fill(B * c.kvHeads * c.capacity * c.headSize, 1),
    seqlens: Int32Array.from(c.positions),
    cos: table(Math.cos),
    sin: table(Math.sin),
  };
}

/** Rotate-half rotary of a head vector at a position, rounded to fp16 as the operator stores it. */
function rotate(c: DecodeAttentionCase, x: DecodeAttentionInputs, v: number[], pos: number): number[] {
  const R = c.rotaryHalf;
  return v.map((value, d) => {
    if (d >= 2 * R) return value;
    const i = d < R ? d : d - R;
    const cos = half(x.cos[pos * R + i]!), sin = half(x.sin[pos * R + i]!);
    return roundToHalf(d < R ? value * cos - v[d + R]! * sin : value * cos + v[d - R]! * sin);
  });
}

/** The attention output [B, heads · D] and the new keys/values each row writes at its position. */
export function decodeAttentionReference(c: DecodeAttentionCase, x: DecodeAttentionInputs) {
  const D = c.headSize, KVH = c.kvHeads, G = c.heads / c.kvHeads, C = c.capacity;
  const width = (c.heads + 2 * KVH) * D;
  const out = new Float64Array(c.positions.length * c.heads * D);
  const newKeys: number[][] = [];
  const newValues: number[][] = [];
  c.positions.forEach((pos, b) => {
    const vec = (offset: number) => Array.from(x.qkv.subarray(b * width + offset, b * width + offset + D), half);
    for (let kvh = 0; kvh < KVH; kvh++) {
      const k = rotate(c, x, vec((c.heads + kvh) * D), pos);
      const v = vec((c.heads + KVH + kvh) * D);
      newKeys.push(k);
      newValues.push(v);
      const cache = (b * KVH + kvh) * C * D;
      const keyAt = (t: number) => (t === pos ? k : Array.from(x.pastKey.subarray(cache + t * D, cache + (t + 1) * D), half));
      const valueAt = (t: number) => (t === pos ? v : Array.from(x.pastValue.subarray(cache + t * D, cache + (t + 1) * D), half));
      const first = c.window ? Math.max(0, pos + 1 - c.window) : 0;
      for (let g = 0; g < G; g++) {
        const h = kvh * G + g;
        const q = rotate(c, x, vec(h * D), pos);
        const scores: number[] = [];
        for (let t = first; t <= pos; t++) scores.push(q.reduce((a, qe, e) => a + qe * keyAt(t)[e]!, 0) / Math.sqrt(D));
        const top = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - top));
        const sum = weights.reduce((a, w) => a + w, 0);
        for (let e = 0; e < D; e++) {
          let acc = 0;
          for (let t = first; t <= pos; t++) acc += weights[t - first]! * valueAt(t)[e]!;
          out[(b * c.heads + h) * D + e] = acc / sum;
        }
      }
    }
  });
  return { out, newKeys, newValues };
}

/**
 * The first difference between the operator's outputs and the reference, or undefined: the attention output within
 * fp16 accuracy, each row's kv heads holding the rotated key and the value at the row's position, the rest of the
 * cache the past.
 */
export function decodeAttentionMismatch(c: DecodeAttentionCase, x: DecodeAttentionInputs, out: Uint16Array, keys: Uint16Array, values: Uint16Array): string | undefined {
  const ref = decodeAttentionReference(c, x);
  for (let i = 0; i < ref.out.length; i++) {
    const got = half(out[i]!);
    if (!(Math.abs(got - ref.out[i]!) <= 4e-3 + 8e-3 * Math.abs(ref.out[i]!))) return `output ${i}: ${got} vs ${ref.out[i]}`;
  }
  const D = c.headSize;
  for (let b = 0; b < c.positions.length; b++) {
    const pos = c.positions[b]!;
    for (let kvh = 0; kvh < c.kvHeads; kvh++) {
      const at = ((b * c.kvHeads + kvh) * c.capacity + pos) * D;
      const refKey = ref.newKeys[b * c.kvHeads + kvh]!, refValue = ref.newValues[b * c.kvHeads + kvh]!;
      for (let e = 0; e < D; e++) {
        if (!(Math.abs(half(keys[at + e]!) - refKey[e]!) <= 2e-3 * Math.max(1, Math.abs(refKey[e]!)))) return `key of row ${b}, kv head ${kvh}, dim ${e}`;
        if (half(values[at + e]!) !== refValue[e]) return `value of row ${b}, kv head ${kvh}, dim ${e}`;
      }
      const other = ((b * c.kvHeads + kvh) * c.capacity + (pos === 0 ? 1 : pos - 1)) * D;
      for (let e = 0; e < D; e++) if (keys[other + e] !== x.pastKey[other + e]) return `row ${b}, kv head ${kvh}: a past key changed`;
    }
  }
  return undefined;
}
