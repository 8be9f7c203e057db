import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { DEVICE_LOOP_ADDON, DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import type { GenerationRequest } from '../src/engine/generation-types.js';
import { Generator } from '../src/engine/generator.js';
import { readManifest } from '../src/model/manifest.js';
import { DEMO_SHAPE, writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { buildModel } from '../src/model/model-builder.js';
import { writeEosCheckpoint } from './harness/eos-checkpoint.js';
import { HfReference, fixturePath } from './harness/fixtures.js';
import { onnxCensus } from './harness/onnx-census.js';
import { greedyRequest as greedy } from './harness/requests.js';
import { testDevice } from './harness/test-device.js';

// The addon is built by `npm run build:native` (CI does); without it these tests skip, unless
// GENQUEUE_REQUIRE_NATIVE=1 says it must be there. They run on the CPU provider: the same step graph, IO
// binding and ping-pong state as on CUDA, without the graph capture (measured on the H100 in bench/results).
const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;

const CPU = { kind: 'cpu' } as const;

/** The loop's tokens equal HF transformers' greedy tokens (fp32, CPU) up to the first step whose top-2 margin is below `tie`. */
function assertHfParity(loop: DeviceLoopRunner, tie: number, minCompared: number): void {
  const ref = HfReference.parse(JSON.parse(readFileSync(join(fixturePath('gpt2-tiny'), 'reference.json'), 'utf8')));
  const out = loop.run(ref.cases.map((c) => greedy(c.ids, c.greedy.length)));
  let compared = 0;
  ref.cases.forEach((c, i) => {
    const near = c.greedy_margins.findIndex((m) => m < tie);
    const n = near === -1 ? c.greedy.length : near;
    assert.deepEqual(out[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
    compared += n;
  });
  assert.ok(compared >= minCompared, `only ${compared} tokens compared`);
}


describe('native device loop on the tiny GPT-2 fixture (CPU provider)', { skip }, () => {
  let dir: string;
  let loop: DeviceLoopRunner;
  let searchOp: Generator;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-loop-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    loop = DeviceLoopRunner.open(dir, readManifest(dir), { device: CPU });
    searchOp = await Generator.open(dir, { device: CPU });
  });
  after(async () => {
    loop?.close();
    await searchOp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives GreedySearch\'s tokens for a ragged batch in one run (prompts fed one token per step, no padding)', async () => {
    const requests = [greedy([15496, 995], 20), greedy([7454, 2402, 257, 640, 11, 612], 7), greedy([464], 33), greedy([50256, 464, 886], 12)];
    const expected = (await searchOp.generate(requests)).results;
    assert.deepEqual(loop.run(requests), expected);
  });

  it('matches Hugging Face greedy tokens up to the first near-tie', () => {
    assertHfParity(loop, 1e-3, 12 * 8);
  });

  it('reuses its buffers across calls, and past 8 shapes releases the oldest without changing answers', () => {
    const a = loop.run([greedy([15496, 995], 10)]);
    loop.run([greedy([464, 2068], 70), greedy([7454], 3), greedy([818], 5)]);
    assert.deepEqual(loop.run([greedy([15496, 995], 10)]), a);
    // 5 batch buckets × 2 capacity buckets = 10 shapes: the first ones are evicted, then rebuilt on demand.
    for (const rows of [1, 2, 3, 5, 9]) for (const n of [20, 100]) loop.run(Array.from({ length: rows }, () => greedy([464], n)));
    assert.deepEqual(loop.run([greedy([15496, 995], 10)]), a);
  });

  it('a Generator with deviceLoopMaxBatch sends small greedy batches through the loop and the rest to the search ops', async () => {
    const gen = await Generator.open(dir, { device: CPU, deviceLoopMaxBatch: 2 });
    try {
      assert.match(gen.device, /device loop/);
      const small = [greedy([15496, 995], 9), greedy([464], 4)];
      assert.deepEqual((await gen.generate(small)).results, (await searchOp.generate(small)).results);
      const beam: GenerationRequest = { ...greedy([15496, 995], 6), search: { kind: 'beam', numBeams: 2, lengthPenalty: 1 } };
      assert.deepEqual((await gen.generate([beam])).results, (await searchOp.generate([beam])).results);
    } finally {
      await gen.close();
    }
  });

  it('refuses a closed handle with an error instead of crashing', () => {
    const closed = DeviceLoopRunner.open(dir, readManifest(dir), { device: CPU });
    closed.close();
    assert.throws(() => closed.run([greedy([15496, 995], 4)]), /not an open device loop/);
    closed.close(); // closing again does nothing
    assert.throws(() => closed.run([greedy([15496, 995], 4)]), /not an open device loop/);
  });

  it('releases every loop: failed opens, closed twice, dropped without close (finalizer), held by an ending worker thread', async () => {
    const child = fileURLToPath(new URL('./harness/device-loop-lifetime.js', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', child, dir]);
    assert.deepEqual(JSON.parse(stdout), {
      afterFailedOpens: 0,
      afterDoubleClose: 0,
      droppedBeforeGc: 1,
      droppedAfterGc: 0,
      afterWorkerExit: 0,
      afterWorkerTerminate: 0,
    });
  });
});

describe('native device loop stop handling (a model that always predicts EOS)', { skip }, () => {
  let dir: string;
  let loop: DeviceLoopRunner;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-loop-eos-'));
    writeEosCheckpoint(join(dir, 'ckpt'));
    mkdirSync(join(dir, 'built'));
    buildModel(join(dir, 'ckpt'), join(dir, 'built'), { precision: 'fp32' });
    loop = DeviceLoopRunner.open(join(dir, 'built'), readManifest(join(dir, 'built')), { device: CPU });
  });
  after(() => {
    loop?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops at EOS ("stop", EOS not included) and min_new_tokens holds it back per row', () => {
    const out = loop.run([greedy([15496, 995], 10), greedy([15496, 995], 10, 4), greedy([7454, 2402, 257, 640, 11, 612], 10, 7)]);
    assert.deepEqual(out[0], { tokenIds: [], finishReason: 'stop' });
    assert.equal(out[1]!.tokenIds.length, 4);
    assert.equal(out[1]!.finishReason, 'stop');
    assert.equal(out[2]!.tokenIds.length, 7);
    assert.ok(!out[2]!.tokenIds.includes(50256));
  });

  it('ends the run early once every row has ended with EOS (checked every 16 steps), not at max_new_tokens', () => {
    assert.deepEqual(loop.run([greedy([15496, 995], 60), greedy([464], 60)]), [
      { tokenIds: [], finishReason: 'stop' },
      { tokenIds: [], finishReason: 'stop' },
    ]);
    assert.equal(loop.lastSteps, 16);
    // One row held to 40 new tokens: EOS at position 42, seen at the check after step 48.
    const held = loop.run([greedy([15496, 995], 60), greedy([15496, 995], 60, 40)]);
    assert.equal(held[1]!.tokenIds.length, 40);
    assert.equal(loop.lastSteps, 48);
    // min_new_tokens = max_new_tokens (the benchmarks): EOS cannot end a row, so every step runs.
    loop.run([greedy([15496, 995], 30, 30)]);
    assert.equal(loop.lastSteps, 31);
  });
});

// On the GPU machine (GENQUEUE_TEST_DEVICE=cuda:N): the CUDA path, fp16, with and without CUDA graph capture.
const gpu = testDevice();
const gpuSkip = skip || (gpu.kind === 'cpu' ? 'CUDA only (GENQUEUE_TEST_DEVICE=cuda:N)' : false);

describe('native device loop on CUDA', { skip: gpuSkip }, () => {
  let dir: string;
  // demo: head size 64, the DecoderMaskedMultiHeadAttention step; tiny (head size 8): the GroupQueryAttention step.
  const model = (sub: string) => ({ dir: join(dir, sub), manifest: readManifest(join(dir, sub)) });
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-loop-cuda-'));
    for (const sub of ['tiny', 'demo16', 'demo32', 'eos']) mkdirSync(join(dir, sub));
    buildModel(fixturePath('gpt2-tiny'), join(dir, 'tiny'), { precision: 'fp16' });
    writeRandomGpt2Checkpoint(join(dir, 'demo-ckpt'), DEMO_SHAPE);
    buildModel(join(dir, 'demo-ckpt'), join(dir, 'demo16'), { precision: 'fp16' });
    buildModel(join(dir, 'demo-ckpt'), join(dir, 'demo32'), { precision: 'fp32' });
    writeEosCheckpoint(join(dir, 'eos-ckpt'));
    buildModel(join(dir, 'eos-ckpt'), join(dir, 'eos'), { precision: 'fp16' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replaying the captured CUDA graphs gives the tokens of running the steps plainly, call after call', () => {
    const requests = [greedy([15496, 995], 40), greedy([7454, 2402, 257, 640, 11, 612], 25), greedy([464], 60)];
    for (const sub of ['tiny', 'demo16']) {
      const { dir: d, manifest } = model(sub);
      const plain = DeviceLoopRunner.open(d, manifest, { device: gpu, cudaGraph: false });
      const graph = DeviceLoopRunner.open(d, manifest, { device: gpu, cudaGraph: true });
      try {
        const expected = plain.run(requests);
        // Every call of the graph runner replays graphs (the first one captures them first).
        for (let call = 0; call < 4; call++) assert.deepEqual(graph.run(requests), expected, `${sub} call ${call}`);
      } finally {
        plain.close();
        graph.close();
      }
    }
  });

  it('gives GreedySearch\'s tokens: fp32 on DecoderMaskedMultiHeadAttention, fp16 up to Hugging Face\'s near-ties', async () => {
    const requests = [greedy([15496, 995], 50), greedy([7454, 2402, 257, 640, 11, 612], 30), greedy([464], 70)];
    const { dir: d, manifest } = model('demo32');
    const cpu = await Generator.open(d, { device: CPU });
    const loop = DeviceLoopRunner.open(d, manifest, { device: gpu });
    try {
      const expected = (await cpu.generate(requests)).results;
      for (let call = 0; call < 3; call++) assert.deepEqual(loop.run(requests), expected, `call ${call}`);
    } finally {
      loop.close();
      await cpu.close();
    }
    const tiny = DeviceLoopRunner.open(model('tiny').dir, model('tiny').manifest, { device: gpu });
    try {
      // fp16 against fp32 logits: only steps with a clear margin are comparable (35 of them in this fixture).
      for (let call = 0; call < 3; call++) assertHfParity(tiny, 0.05, 24);
    } finally {
      tiny.close();
    }
  });

  it('runs batches of 1-2 on the small-batch step (genqueue operators only): the regular step\'s tokens up to fp16 near-ties', () => {
    const { dir: d, manifest } = model('demo16');
    assert.ok(manifest.files.deviceLoopSmallBatch, 'fp16 builds with a fused-attention head size have a small-batch step');
    const small = DeviceLoopRunner.open(d, manifest, { device: gpu });
    const plain = DeviceLoopRunner.open(d, manifest, { device: gpu, cudaGraph: false });
    const regular = DeviceLoopRunner.open(d, manifest, { device: gpu, smallBatchRows: 0 });
    try {
      for (const requests of [[greedy([15496, 995], 60)], [greedy([7454, 2402, 257, 640, 11, 612], 45), greedy([464], 70)]]) {
        // Same kernels, captured or not: the same tokens, call after call.
        const expected = plain.run(requests);
        for (let call = 0; call < 3; call++) assert.deepEqual(small.run(requests), expected, `batch ${requests.length} call ${call}`);
        // Other kernels (fp32 normalization feeding the projection, other summation order) on random weights: the
        // same tokens until a near-tie flips one (measured: 38 of 60 at batch 1).
        regular.run(requests).forEach((r, i) => {
          const mine = expected[i]!.tokenIds;
          const agreed = r.tokenIds.findIndex((t, j) => t !== mine[j]);
          assert.ok(agreed === -1 || agreed >= 24, `row ${i}: the steps differ from token ${agreed}`);
        });
      }
    } finally {
      small.close();
      plain.close();
      regular.close();
    }
  });

  it('releases the oldest of more than 8 shapes (buffers and graphs) without changing answers', () => {
    const { dir: d, manifest } = model('demo16');
    const loop = DeviceLoopRunner.open(d, manifest, { device: gpu });
    try {
      const first = [greedy([15496, 995], 30)];
      const a = loop.run(first);
      assert.deepEqual(loop.run(first), a);
      for (const rows of [1, 2, 3, 5, 9]) for (const n of [20, 100]) for (let call = 0; call < 2; call++) loop.run(Array.from({ length: rows }, () => greedy([464], n)));
      assert.deepEqual(loop.run(first), a);
      assert.deepEqual(loop.run(first), a);
    } finally {
      loop.close();
    }
  });

  it('stops at EOS and holds it back for min_new_tokens', () => {
    const loop = DeviceLoopRunner.open(join(dir, 'eos'), readManifest(join(dir, 'eos')), { device: gpu });
    try {
      for (let call = 0; call < 3; call++) {
        const out = loop.run([greedy([15496, 995], 40), greedy([7454, 2402, 257], 40, 5)]);
        assert.deepEqual(out[0], { tokenIds: [], finishReason: 'stop' });
        assert.equal(out[1]!.tokenIds.length, 5);
        assert.equal(loop.lastSteps, 16, 'both rows ended by the first EOS check');
      }
    } finally {
      loop.close();
    }
  });
});

describe('device-loop step files the builder writes', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-loop-files-'));
    writeRandomGpt2Checkpoint(join(dir, 'ckpt'), { ...DEMO_SHAPE, layers: 2 });
    for (const precision of ['fp16', 'fp32'] as const) {
      mkdirSync(join(dir, precision));
      buildModel(join(dir, 'ckpt'), join(dir, precision), { precision });
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const census = onnxCensus;

  it('fp16: the small-batch step is one SmallBatchMatMul per projection (normalizations folded in) and one GreedyNextToken', () => {
    const manifest = readManifest(join(dir, 'fp16'));
    assert.ok(manifest.files.deviceLoopSmallBatch);
    const small = census(join(dir, 'fp16', manifest.files.deviceLoopSmallBatch));
    assert.equal(small.ops['genqueue.SmallBatchMatMul'], 2 * 4 + 1, '4 per layer + the vocabulary projection');
    assert.equal(small.ops['com.microsoft.DecoderMaskedMultiHeadAttention'], 2);
    assert.equal(small.ops['genqueue.GreedyNextToken'], 1);
    assert.equal(small.ops['com.microsoft.SkipLayerNormalization'], undefined);
    assert.ok(small.domains.includes('genqueue'));
    // The regular CUDA step keeps ONNX Runtime's MatMul (cuBLAS) for large batches, with the same one-node tail.
    const regular = census(join(dir, 'fp16', manifest.files.deviceLoop!));
    assert.equal(regular.ops['genqueue.SmallBatchMatMul'], undefined);
    assert.equal(regular.ops['.MatMul'], 2 * 4);
    assert.equal(regular.ops['genqueue.GreedyNextToken'], 1);
    // The CPU step uses standard and com.microsoft operators only.
    assert.ok(!census(join(dir, 'fp16', manifest.files.deviceLoopCpu!)).domains.includes('genqueue'));
  });

  it('GPT-2\'s step files stay byte for byte what they were before the Llama small-batch step (update these hashes only for an intended change)', () => {
    const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
    const manifest = readManifest(join(dir, 'fp16'));
    assert.deepEqual(
      {
        regular: sha256(join(dir, 'fp16', manifest.files.deviceLoop!)),
        smallBatch: sha256(join(dir, 'fp16', manifest.files.deviceLoopSmallBatch!)),
        cpu: sha256(join(dir, 'fp16', manifest.files.deviceLoopCpu!)),
      },
      {
        regular: 'fec01269bb45b2b02beab65e3d0fb901608026bf481fae5d84661d0e0264dfc7',
        smallBatch: 'ce458b12b62913664c6c1100272194423d0cf9fa9c86e44e8ac903c9f0331994',
        cpu: '92cbf7e88d419cba6424d41bf3adf2ae4fd82c9f9e5b932b1a20e9b1a6dc1cd8',
      },
    );
    const tiny = join(dir, 'tiny-fp16');
    mkdirSync(tiny);
    buildModel(fixturePath('gpt2-tiny'), tiny, { precision: 'fp16' });
    assert.equal(sha256(join(tiny, readManifest(tiny).files.deviceLoop!)), '220cfc303940ef7666464f693f47249d17651c3dba37f2e2f34eec951cb717fe');
  });

  it('fp32: no small-batch step and no genqueue operators (its kernels read fp16)', () => {
    const manifest = readManifest(join(dir, 'fp32'));
    assert.equal(manifest.files.deviceLoopSmallBatch, undefined);
    assert.ok(!census(join(dir, 'fp32', manifest.files.deviceLoop!)).domains.includes('genqueue'));
  });
});
