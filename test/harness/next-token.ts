import { writeFileSync } from 'node:fs';
import { onnxRuntimeLibrary } from '../../src/engine/device-loop-runner.js';
import type { HostTensor, SlotLoopAddon } from '../../src/engine/slot-addon.js';
import { GraphBuilder, encodeModel } from '../../src/model/onnx/graph-builder.js';
import { float32ToFloat16Bits } from '../../src/model/onnx/tensor-types.js';
import { SLOT_PARAMS, SLOT_STATE_FIELDS, SLOT_STATUS, slotBindings } from '../../src/model/contract.js';
import { appendNextToken } from '../../src/model/slot-step-graph.js';
import type { DeviceSpec } from '../../src/engine/execution-provider.js';

/** A model holding genqueue.NextToken alone: logits [rows, 1, V] in, the operator's outputs out. */
export function writeNextTokenModel(path: string, logitsType: 'float32' | 'float16', eosTokenIds: readonly number[]): void {
  const g = new GraphBuilder('next_token_alone');
  g.input('logits', logitsType, ['batch', 1, 'vocab']);
  appendNextToken(g, 'logits', eosTokenIds);
  writeFileSync(path, encodeModel(g.build(), 'genqueue-test'));
}

/** One row of the state, with defaults: a running greedy row at `position` with room to spare. */
export interface RowSpec {
  readonly token?: number;
  readonly position: number;
  readonly end?: number;
  readonly min?: number;
  readonly seed?: bigint;
  readonly topK?: number;
  readonly status?: keyof typeof SLOT_STATUS;
  readonly sample?: boolean;
  readonly temperature?: number;
  readonly topP?: number;
  readonly repetitionPenalty?: number;
  /** Token ids the row has seen (the repetition penalty's set). */
  readonly seen?: readonly number[];
}

export interface NextTokenOutputs {
  /** The token each row emitted (ring row counter mod K), -1 where the row did not advance. */
  readonly emitted: number[];
  readonly status: number[];
  readonly positions: number[];
  readonly tokens: number[];
  readonly seqlens: number[];
  readonly counter: number;
  readonly ring: Int32Array;
  readonly history: Int32Array;
}

/** Runs the operator once over rows × vocab logits (row-major) through the addon's runGraph. */
export function runNextToken(
  addon: SlotLoopAddon,
  model: string,
  rows: readonly RowSpec[],
  logits: readonly number[] | Float32Array,
  options: { logitsType?: 'float32' | 'float16'; device?: DeviceSpec; counter?: number; ringRows?: number } = {},
): NextTokenOutputs {
  const R = rows.length;
  const V = logits.length / R;
  const W = Math.ceil(V / 32);
  const K = options.ringRows ?? 4;
  const counter = options.counter ?? 0;
  const field = (name: (typeof SLOT_STATE_FIELDS)[number]) => SLOT_STATE_FIELDS.indexOf(name);
  const state = new BigInt64Array(R * SLOT_STATE_FIELDS.length);
  const params = new Float32Array(R * SLOT_PARAMS.length);
  const history = new Int32Array(R * W);
  rows.forEach((r, b) => {
    const s = (name: (typeof SLOT_STATE_FIELDS)[number], v: bigint | number) => (state[b * SLOT_STATE_FIELDS.length + field(name)] = BigInt(v));
    s('token', r.token ?? 0);
    s('position', r.position);
    s('end', r.end ?? r.position + 100);
    s('min', r.min ?? 0);
    s('seed', BigInt.asIntN(64, r.seed ?? 0n));
    s('topK', r.topK ?? 0);
    s('status', SLOT_STATUS[r.status ?? 'running']);
    s('sample', r.sample ? 1 : 0);
    params[b * 3 + SLOT_PARAMS.indexOf('temperature')] = r.temperature ?? 1;
    params[b * 3 + SLOT_PARAMS.indexOf('topP')] = r.topP ?? 1;
    params[b * 3 + SLOT_PARAMS.indexOf('repetitionPenalty')] = r.repetitionPenalty ?? 1;
    for (const t of r.seen ?? []) history[b * W + (t >> 5)]! |= 1 << (t & 31);
  });
  const type = options.logitsType ?? 'float32';
  const logitsData = type === 'float32' ? Float32Array.from(logits) : Uint16Array.from(logits, (v) => float32ToFloat16Bits(v));
  const B = slotBindings();
  const feeds: Record<string, HostTensor> = {
    logits: { type, dims: [R, 1, V], data: logitsData },
    [B.state]: { type: 'int64', dims: [R, SLOT_STATE_FIELDS.length], data: state },
    [B.params]: { type: 'float32', dims: [R, SLOT_PARAMS.length], data: params },
    [B.history]: { type: 'int32', dims: [R, W], data: history },
    [B.ring]: { type: 'int32', dims: [K, R], data: new Int32Array(K * R).fill(-7) },
    [B.counter]: { type: 'int64', dims: [1], data: BigInt64Array.of(BigInt(counter)) },
  };
  const device = options.device ?? { kind: 'cpu' };
  const out = addon.runGraph(onnxRuntimeLibrary(), model, { cuda: device.kind !== 'cpu', deviceId: device.kind === 'cpu' ? 0 : device.deviceId }, feeds, [
    B.inputIdsNext,
    B.positionIdsNext,
    B.seqlensKNext,
    B.stateNext,
    B.historyNext,
    B.ringNext,
    B.counterNext,
  ]);
  const ring = out[B.ringNext]!.data as Int32Array;
  const stateOut = out[B.stateNext]!.data as BigInt64Array;
  const slot = counter % K;
  return {
    emitted: rows.map((_, b) => ring[slot * R + b]!),
    status: rows.map((_, b) => Number(stateOut[b * SLOT_STATE_FIELDS.length + field('status')])),
    positions: Array.from(out[B.positionIdsNext]!.data as BigInt64Array, Number),
    tokens: Array.from(out[B.inputIdsNext]!.data as BigInt64Array, Number),
    seqlens: Array.from(out[B.seqlensKNext]!.data as Int32Array),
    counter: Number((out[B.counterNext]!.data as BigInt64Array)[0]),
    ring,
    history: out[B.historyNext]!.data as Int32Array,
  };
}

// ---- the sampling rule in plain JS (native/next-token-rules.h, step by step), to check the operator exactly ----

const f = Math.fround;
const bits = new DataView(new ArrayBuffer(4));

function key(x: number): number {
  bits.setFloat32(0, x);
  const u = bits.getUint32(0);
  return (u & 0x80000000 ? ~u : u | 0x80000000) >>> 0;
}

function weight(d: number): number {
  if (!(d < 21.5)) return 0;
  const t = f(d * f(1.44269504088896341));
  const n = Math.trunc(t);
  const g = f(f(t - n) * f(-0.693147180559945309));
  let p = f(2.48015873015873016e-5);
  for (const c of [1.98412698412698413e-4, 1.38888888888888889e-3, 8.33333333333333333e-3, 4.16666666666666667e-2, 1.66666666666666667e-1, 0.5, 1, 1]) {
    p = f(f(p * g) + f(c));
  }
  return Math.trunc(f(p * 2 ** (31 - n)));
}

const M64 = (1n << 64n) - 1n;
const M32 = 0xffffffffn;

/** Philox4x32-10 (Random123): four counter words, two key words. */
export function philox4x32(counter: readonly bigint[], key: readonly bigint[]): bigint[] {
  let c = [...counter];
  let [k0, k1] = key as [bigint, bigint];
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * c[0]!;
    const p1 = 0xcd9e8d57n * c[2]!;
    c = [(p1 >> 32n) ^ c[1]! ^ k0, p1 & M32, (p0 >> 32n) ^ c[3]! ^ k1, p0 & M32];
    k0 = (k0 + 0x9e3779b9n) & M32;
    k1 = (k1 + 0xbb67ae85n) & M32;
  }
  return c;
}

/** A row's uniform 64-bit draw for the token at `position`: Philox keyed by the seed, counter (position, 0). */
export function philoxDraw(seed: bigint, position: bigint): bigint {
  const c = philox4x32([position & M32, (position >> 32n) & M32, 0n, 0n], [seed & M32, (seed >> 32n) & M32]);
  return ((c[0]! << 32n) | c[1]!) & M64;
}

/** The token a sampling row draws from float32 logits (penalty and EOS suppression already applied). */
export function referenceSample(logits: readonly number[], row: { temperature: number; topK: number; topP: number; seed: bigint; n: number }): number {
  const x = logits.map((v) => f(f(v) / f(row.temperature)));
  let best = 0;
  x.forEach((v, i) => {
    if (v > x[best]!) best = i;
  });
  const m = x[best]!;
  const V = x.length;
  let kth = 0;
  if (row.topK > 0 && row.topK < V) kth = [...x.map(key)].sort((a, b) => b - a)[row.topK - 1]!;
  const w = x.map((v) => (row.topK > 0 && row.topK < V && key(v) < kth ? 0 : weight(f(m - v))));
  const total = w.reduce((a, b) => a + b, 0);
  let tau = 1;
  if (row.topP < 1) {
    const target = f(row.topP) * total;
    let acc = 0;
    for (const v of [...w].sort((a, b) => b - a)) {
      acc += v;
      if (acc >= target) {
        tau = Math.max(1, v);
        break;
      }
    }
  }
  const kept = BigInt(w.reduce((a, v) => (v >= tau ? a + v : a), 0));
  const r = (philoxDraw(row.seed, BigInt(row.n)) * kept) >> 64n;
  let acc = 0n;
  for (let i = 0; i < V; i++) {
    if (w[i]! < tau) continue;
    acc += BigInt(w[i]!);
    if (acc > r) return i;
  }
  return best;
}
