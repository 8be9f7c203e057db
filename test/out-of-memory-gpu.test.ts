import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { warmupRequest } from '../src/engine/generation-types.js';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { GPT2_SMALL_SHAPE, writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { buildModel } from '../src/model/model-builder.js';
import { generateSplittingOnOom } from '../src/worker/out-of-memory.js';
import { testDevice } from './harness/test-device.js';

const device = testDevice();
const onGpu = device.kind !== 'cpu';

/**
 * On a GPU only (GENQUEUE_TEST_DEVICE=cuda:N): a real out-of-memory error, read as one, and the split that follows.
 * GPT-2 small in fp32 needs 75 MB of KV cache per row at 1,024 positions: 2,048 rows (154 GB) fit on no current GPU,
 * and the halves eventually do. The CPU variant of the split runs in job-controls.test.ts.
 */
describe('a batch too large for the GPU is split until it fits', { skip: !onGpu && 'needs GENQUEUE_TEST_DEVICE=cuda:N' }, () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-oom-'));
    writeRandomGpt2Checkpoint(join(dir, 'checkpoint'), GPT2_SMALL_SHAPE);
    mkdirSync(join(dir, 'model'));
    buildModel(join(dir, 'checkpoint'), join(dir, 'model'), { precision: 'fp32' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const deviceLoopMaxBatch of [0, 4096]) {
    it(`${deviceLoopMaxBatch ? 'device loop' : 'GreedySearch'}: the engine's error is an out-of-memory one, and the halves run`, async () => {
      const engine = await ThreadedGenerator.open(join(dir, 'model'), { device, deviceLoopMaxBatch });
      try {
        const requests = Array.from({ length: 2048 }, () => warmupRequest(GPT2_SMALL_SHAPE.vocab - 1, 1023));
        const errors: string[] = [];
        const parts = await generateSplittingOnOom((r) => engine.generate(r), requests, (_size, e) => errors.push(e.message));
        console.log(`splits: ${errors.length}; first error: ${errors[0]}`);
        // An error not read as out of memory is not split: it fails its part, and the assertion below shows it.
        assert.ok(errors.length > 0, 'the 2,048-row batch should not fit');
        for (const p of parts) assert.ok('batch' in p, `a part failed: ${'error' in p ? p.error.message : ''}`);
        assert.equal(parts.reduce((n, p) => n + p.size, 0), 2048);
      } finally {
        await engine.close();
      }
    });
  }
});
