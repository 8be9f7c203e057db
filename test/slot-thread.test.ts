import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { DEVICE_LOOP_ADDON } from '../src/engine/device-loop-runner.js';
import { SlotEngine } from '../src/engine/slot-engine.js';
import { SlotEngineClosedError, SlotLoopError, SlotRequestError } from '../src/engine/slot-errors.js';
import type { SlotRequest, SlotResult } from '../src/engine/slot-types.js';
import { ThreadedSlotEngine } from '../src/engine/threaded-slot-engine.js';
import { buildModel } from '../src/model/model-builder.js';
import { fixturePath } from './harness/fixtures.js';

const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;

const CPU = { kind: 'cpu' } as const;
const OPTIONS = { device: CPU, intraOpThreads: 1, slots: 3, capacity: 96, chunkSteps: 4, prefillChunk: 8 };

const REQUESTS: SlotRequest[] = [
  { promptIds: [15496, 995], maxNewTokens: 20 },
  { promptIds: [7454, 2402, 257, 640, 11, 612], maxNewTokens: 9, sampling: { kind: 'sample', temperature: 1.2, topK: 40, topP: 0.9, seed: 77 } },
  { promptIds: [464], maxNewTokens: 30, repetitionPenalty: 1.2 },
  { promptIds: [50256, 464, 886], maxNewTokens: 14, minNewTokens: 3 },
];

describe('slot engine in a worker thread (CPU provider)', { skip }, () => {
  let dir: string;
  let expected: number[][];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slot-thread-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    const local = SlotEngine.open(dir, OPTIONS);
    expected = (await Promise.all(REQUESTS.map((r) => local.generate(r)))).map((r) => r.tokenIds);
    await local.close();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the in-thread engine\'s tokens, streamed per chunk boundary; finish() and stats() cross the thread', async () => {
    const engine = await ThreadedSlotEngine.open(dir, OPTIONS);
    try {
      assert.equal(engine.device, 'cpu (slots)');
      assert.equal(engine.limits.capacity, 96);
      const streamed: number[][] = REQUESTS.map(() => []);
      const results = await Promise.all(REQUESTS.map((r, i) => engine.generate(r, (t) => streamed[i]!.push(...t))));
      assert.deepEqual(results.map((r) => r.tokenIds), expected);
      assert.deepEqual(streamed, expected);
      assert.equal(results[1]!.seed, 77n);
      assert.ok(results.every((r) => r.timings.timeToFirstTokenMs !== undefined && r.timings.timeToFirstTokenMs <= r.timings.totalMs));
      const delivered: number[] = [];
      const stopped = await new Promise<SlotResult>((resolve, reject) => {
        const h = engine.submit({ promptIds: [464], maxNewTokens: 60 }, {
          onTokens: (t) => {
            delivered.push(...t);
            h.finish();
          },
          onDone: resolve,
          onError: reject,
        });
      });
      assert.equal(stopped.finishReason, 'stop');
      assert.deepEqual(stopped.tokenIds, delivered);
      const stats = await engine.stats();
      assert.deepEqual([stats.busy, stats.deviceRunning, stats.completed, stats.failed], [0, 0, 5, 0]);
    } finally {
      await engine.close();
    }
  });

  it('refuses a bad request at submit(), before the thread; closing fails what is left', async () => {
    const engine = await ThreadedSlotEngine.open(dir, OPTIONS);
    assert.throws(
      () => engine.submit({ promptIds: [1], maxNewTokens: 5, sampling: { kind: 'sample', temperature: 1, topK: 0, topP: 2 } }, { onDone: () => {}, onError: () => {} }),
      (e: unknown) => e instanceof SlotRequestError && e.field === 'sampling.topP',
    );
    const cancelled = await new Promise<SlotResult>((resolve, reject) => engine.submit({ promptIds: [1], maxNewTokens: 5 }, { onDone: resolve, onError: reject }).cancel());
    assert.equal(cancelled.finishReason, 'cancelled');
    const pending = [1, 2, 3, 4, 5].map((t) => engine.generate({ promptIds: [t], maxNewTokens: 90 }));
    // Handlers attach before close(), which may reject them at any point of its shutdown.
    const failed = Promise.all(pending.map((p) => assert.rejects(p, SlotEngineClosedError)));
    await engine.close();
    await failed;
    assert.throws(() => engine.submit({ promptIds: [1], maxNewTokens: 2 }, { onDone: () => {}, onError: () => {} }), SlotEngineClosedError);
  });

  it('a dead thread fails its requests with the reason; the next request starts a fresh one', async () => {
    const engine = await ThreadedSlotEngine.open(dir, OPTIONS);
    try {
      const lost = engine.generate({ promptIds: [464], maxNewTokens: 90 });
      await new Promise<void>((resolve) => engine.submit({ promptIds: [15496], maxNewTokens: 8 }, { onTokens: () => resolve(), onDone: () => {}, onError: () => {} }));
      await (engine as unknown as { thread: Worker }).thread.terminate();
      await assert.rejects(lost, (e: unknown) => e instanceof SlotLoopError && /slot thread exited/.test(e.message));
      assert.deepEqual((await engine.generate(REQUESTS[0]!)).tokenIds, expected[0]);
    } finally {
      await engine.close();
    }
  });
});
