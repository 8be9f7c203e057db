import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { DEVICE_LOOP_ADDON } from '../src/engine/device-loop-runner.js';
import { Generator } from '../src/engine/generator.js';
import { readManifest } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { startWorker } from '../src/worker/worker-process.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;
const CPU = { kind: 'cpu' } as const;

describe('warm-up covers both greedy paths (device loop on, CPU provider)', { skip }, () => {
  let dir: string;
  let redis: TestRedis;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-warmup-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('Generator.open has run GreedySearch and the device loop once each', async () => {
    const withLoop = await Generator.open(dir, { device: CPU, deviceLoopMaxBatch: 2 });
    const without = await Generator.open(dir, { device: CPU });
    try {
      assert.deepEqual(withLoop.runCounts, { deviceLoop: 1, searchOps: 1 });
      assert.deepEqual(without.runCounts, { deviceLoop: 0, searchOps: 1 });
    } finally {
      await withLoop.close();
      await without.close();
    }
  });

  it("a worker's warmupLengths run at max batch and at the device loop's largest batch", async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const started = await startWorker(
      loadConfig({ env: {} }),
      { dir, manifest: readManifest(dir), built: false, name: 'warmup' },
      { device: 'cpu', engine: 'batches', maxBatch: 4, deviceLoopMaxBatch: 2, warmupLengths: [12], redisUrl: redis.url, prefix: 'warmup-test' },
      logger,
    );
    await started.close();
    const warmed = lines.map((l) => JSON.parse(l) as { msg: string; batch: number; length: number }).filter((l) => l.msg === 'warmed up');
    assert.deepEqual(warmed.map((l) => [l.length, l.batch]), [[12, 4], [12, 2]]);
  });
});
