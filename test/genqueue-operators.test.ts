import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import onnxProto from 'onnx-proto';
import { DEVICE_LOOP_ADDON, loadDeviceLoopAddon, onnxRuntimeLibrary } from '../src/engine/device-loop-runner.js';
import { smallBatchMatMul } from '../src/model/components/small-batch.js';
import { type DecodeAttentionCase, type DecodeAttentionInputs, decodeAttentionInputs, decodeAttentionMismatch } from './harness/decode-attention-reference.js';
import { GraphBuilder, encodeModel } from '../src/model/onnx/graph-builder.js';
import { type SmallBatchCase, type SmallBatchInputs, firstMismatch, randomInputs, smallBatchReference, weightRows } from './harness/small-batch-reference.js';
import { testDevice } from './harness/test-device.js';

// The addon's CUDA operators against references computed here from the same fp16 inputs, through the addon's
// runModel (one run of a one-node model on the CUDA provider): on the GPU machine only (GENQUEUE_TEST_DEVICE=cuda:N).

interface Tensor {
  readonly name: string;
  readonly type: 'float16' | 'float32' | 'int32' | 'int64';
  readonly dims: readonly number[];
  readonly data: Uint16Array | Float32Array | Int32Array | BigInt64Array;
}
/** native/run-model.h. */
interface RunModelAddon {
  runModel(ortLibrary: string, model: string, deviceId: number, feeds: readonly Tensor[], outputNames: readonly string[]): Tensor[];
}

const gpu = testDevice();
const addonBuilt = existsSync(DEVICE_LOOP_ADDON);
const skip = gpu.kind === 'cpu' ? 'set GENQUEUE_TEST_DEVICE=cuda:N' : !addonBuilt ? 'device-loop addon not built' : false;

const bytes = (v: Uint16Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/** A one-node model: A [rows, 1, K] and the residual are inputs, B and the rest initializers, as in the small-batch step. */
function smallBatchModel(c: SmallBatchCase, x: SmallBatchInputs): Uint8Array {
  const g = new GraphBuilder('small_batch_matmul');
  const a = g.input('a', 'float16', [c.rows, 1, c.k]);
  const residual = x.residual ? g.input('residual', 'float16', [c.rows, 1, c.n]) : undefined;
  const b = g.initializer('b', 'float16', [weightRows(c), c.k], bytes(x.b));
  const bias = x.bias ? g.initializer('bias', 'float16', [weightRows(c)], bytes(x.bias)) : undefined;
  const gamma = x.gamma ? g.initializer('gamma', 'float16', [c.k], bytes(x.gamma)) : undefined;
  const beta = x.beta ? g.initializer('beta', 'float16', [c.k], bytes(x.beta)) : undefined;
  const norm = gamma ? { kind: c.norm === 'rms' ? ('rmsnorm' as const) : ('layernorm' as const), gamma, beta, epsilon: { float: c.epsilon } } : undefined;
  const activation = c.activation === 'none' ? undefined : c.activation;
  smallBatchMatMul(g, { input: a, weight: b, bias, residual, norm, activation }, 'y');
  g.output('y', 'float16', [c.rows, 1, c.n]);
  const graph = g.build();
  // Kernel shape overrides, for shapes the operator would not choose for these sizes.
  const INT = onnxProto.onnx.AttributeProto.AttributeType.INT;
  const node = graph.node![0]!;
  if (c.split) node.attribute!.push({ name: 'split', type: INT, i: c.split });
  if (c.columns) node.attribute!.push({ name: 'columns', type: INT, i: c.columns });
  return encodeModel(graph, 'genqueue-test');
}

/** A one-node genqueue.DecodeAttention model: qkv, the caches and seqlens_k are inputs, the rotary tables initializers. */
function decodeAttentionModel(c: DecodeAttentionCase, x: DecodeAttentionInputs): Uint8Array {
  const B = c.positions.length;
  const g = new GraphBuilder('decode_attention');
  const cache = [B, c.kvHeads, c.capacity, c.headSize];
  const qkv = g.input('qkv', 'float16', [B, 1, (c.heads + 2 * c.kvHeads) * c.headSize]);
  const pastKey = g.input('past_key', 'float16', cache);
  const pastValue = g.input('past_value', 'float16', cache);
  const seqlens = g.input('seqlens_k', 'int32', [B]);
  const cos = g.initializer('cos', 'float16', [c.capacity, c.rotaryHalf], bytes(x.cos));
  const sin = g.initializer('sin', 'float16', [c.capacity, c.rotaryHalf], bytes(x.sin));
  const attrs = { num_heads: c.heads, kv_num_heads: c.kvHeads, scale: { float: 1 / Math.sqrt(c.headSize) }, ...(c.window ? { local_window_size: c.window } : {}) };
  g.genqueueOp('DecodeAttention', [qkv, pastKey, pastValue, seqlens, cos, sin], ['y', 'present_key', 'present_value'], attrs);
  g.output('y', 'float16', [B, 1, c.heads * c.headSize]);
  g.output('present_key', 'float16', cache);
  g.output('present_value', 'float16', cache);
  return encodeModel(g.build(), 'genqueue-test');
}

// Llama-3.2-1B (32 / 8 heads of 64) and Qwen2.5-0.5B (14 / 2) at one and several slices of the cache, a Mistral-like
// shape (head size 128) with a sliding window, plain multi-head attention, partial rotary, the first and last positions.
const ATTENTION_CASES: DecodeAttentionCase[] = [
  { heads: 32, kvHeads: 8, headSize: 64, rotaryHalf: 32, capacity: 64, positions: [5] },
  { heads: 32, kvHeads: 8, headSize: 64, rotaryHalf: 32, capacity: 264, positions: [0, 263] },
  { heads: 14, kvHeads: 2, headSize: 64, rotaryHalf: 32, capacity: 1000, positions: [777, 64] },
  { heads: 32, kvHeads: 8, headSize: 128, rotaryHalf: 64, capacity: 4096, positions: [3000], window: 512 },
  { heads: 4, kvHeads: 4, headSize: 32, rotaryHalf: 8, capacity: 130, positions: [129, 17] },
  { heads: 16, kvHeads: 4, headSize: 256, rotaryHalf: 128, capacity: 96, positions: [95] },
];

const base = { bias: false, residual: false, norm: 'none', activation: 'none', epsilon: 1e-5 } as const;
// The projections of Llama-3.2-1B (q/k/v, gate/up, down, the vocabulary projection at a smaller vocabulary),
// Qwen2.5-0.5B (q/k/v with bias, down) and GPT-2 (fc with layer normalization and FastGelu), the tiny fixtures'
// sizes, K at its longest, and shapes forced through the split/columns attributes.
const CASES: Omit<SmallBatchCase, 'rows'>[] = [
  { ...base, n: 3072, k: 2048, norm: 'rms' },
  { ...base, n: 2048, k: 2048, residual: true },
  { ...base, n: 8192, k: 2048, norm: 'rms', activation: 'swiglu' },
  { ...base, n: 2048, k: 8192, residual: true },
  { ...base, n: 5003, k: 2048, norm: 'rms' },
  { ...base, n: 1152, k: 896, norm: 'rms', bias: true },
  { ...base, n: 4864, k: 896, norm: 'rms', activation: 'swiglu' },
  { ...base, n: 896, k: 4864, residual: true },
  { ...base, n: 3072, k: 768, norm: 'layer', bias: true, activation: 'fast_gelu' },
  { ...base, n: 70, k: 16, norm: 'layer', bias: true, activation: 'fast_gelu' },
  { ...base, n: 48, k: 16, norm: 'rms', bias: true, activation: 'swiglu' },
  { ...base, n: 64, k: 16384, norm: 'rms', residual: true },
  { ...base, n: 1000, k: 1024, split: 4, columns: 8 },
  { ...base, n: 999, k: 2048, norm: 'rms', bias: true, activation: 'swiglu', split: 1, columns: 1 },
];

describe('genqueue operators on CUDA (against references from the same fp16 inputs)', { skip }, () => {
  let dir: string;
  let addon: RunModelAddon;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-ops-'));
    addon = loadDeviceLoopAddon() as unknown as RunModelAddon;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const deviceId = gpu.kind === 'cpu' ? 0 : gpu.deviceId;

  const run = (c: SmallBatchCase, seed: number): { output: Uint16Array; reference: Float64Array } => {
    const x = randomInputs(c, seed);
    const model = join(dir, `case-${seed}.onnx`);
    writeFileSync(model, smallBatchModel(c, x));
    const feeds: Tensor[] = [{ name: 'a', type: 'float16', dims: [c.rows, 1, c.k], data: x.a }];
    if (x.residual) feeds.push({ name: 'residual', type: 'float16', dims: [c.rows, 1, c.n], data: x.residual });
    const [y] = addon.runModel(onnxRuntimeLibrary(), model, deviceId, feeds, ['y']);
    assert.deepEqual(y!.dims, [c.rows, 1, c.n]);
    return { output: y!.data as Uint16Array, reference: smallBatchReference(c, x) };
  };

  it('SmallBatchMatMul: RMS/layer normalization, bias, SwiGLU, FastGelu and residual at the Llama, Qwen and GPT-2 shapes, 1 and 2 rows', { timeout: 600_000 }, () => {
    let seed = 1;
    for (const partial of CASES) {
      for (const rows of [1, 2]) {
        const c = { ...partial, rows };
        const { output, reference } = run(c, seed++);
        assert.equal(firstMismatch(c, output, reference), undefined, JSON.stringify(c));
      }
    }
  });

  it('DecodeAttention: rotary, the new key/value in the cache and attention over the row\'s positions, as the reference', { timeout: 600_000 }, () => {
    let seed = 500;
    for (const c of ATTENTION_CASES) {
      const x = decodeAttentionInputs(c, seed++);
      const model = join(dir, `attention-${seed}.onnx`);
      writeFileSync(model, decodeAttentionModel(c, x));
      const B = c.positions.length;
      const cache = [B, c.kvHeads, c.capacity, c.headSize];
      const feeds: Tensor[] = [
        { name: 'qkv', type: 'float16', dims: [B, 1, (c.heads + 2 * c.kvHeads) * c.headSize], data: x.qkv },
        { name: 'past_key', type: 'float16', dims: cache, data: x.pastKey },
        { name: 'past_value', type: 'float16', dims: cache, data: x.pastValue },
        { name: 'seqlens_k', type: 'int32', dims: [B], data: x.seqlens },
      ];
      const [y, keys, values] = addon.runModel(onnxRuntimeLibrary(), model, deviceId, feeds, ['y', 'present_key', 'present_value']);
      assert.equal(decodeAttentionMismatch(c, x, y!.data as Uint16Array, keys!.data as Uint16Array, values!.data as Uint16Array), undefined, JSON.stringify(c));
    }
  });

  it('SmallBatchMatMul refuses more than 2 rows with a clear error', () => {
    assert.throws(() => run({ ...base, rows: 3, n: 64, k: 64 }, 99), /3 rows: the small-batch step takes at most 2/);
  });
});
