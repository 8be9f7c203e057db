import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { resolveModelArg } from '../src/model/model-reference.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { type CollectedResult, ResultCollector } from '../src/queue/result-collector.js';
import { WorkerStats } from '../src/worker/worker-stats.js';
import { type StartedWorker, startWorker } from '../src/worker/worker-process.js';
import { eventually } from './harness/eventually.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

/** The value of one sample line of a Prometheus text exposition (labels matched as given, in order). */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  assert.ok(line, `no ${name} ${labels} in\n${text.slice(0, 3000)}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('WorkerStats', () => {
  it('tokens/s over the last minute falls to 0 once no batch ran for a minute', () => {
    mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    try {
      const stats = new WorkerStats();
      mock.timers.tick(30_000);
      stats.recordBatch(4, 600, 200);
      assert.equal(stats.snapshot().recentTokensPerSecond, 600 / 30);
      mock.timers.tick(30_000);
      assert.equal(stats.snapshot().recentTokensPerSecond, 600 / 60);
      mock.timers.tick(30_001);
      assert.equal(stats.snapshot().recentTokensPerSecond, 0);
      assert.equal(stats.snapshot().generatedTokens, 600);
    } finally {
      mock.timers.reset();
    }
  });
});

describe('worker /metrics and /healthz (--metrics-port)', () => {
  let redis: TestRedis;
  let dir: string;
  let started: StartedWorker;
  let base: string;

  before(async () => {
    redis = await startTestRedis();
    dir = mkdtempSync(join(tmpdir(), 'genqueue-metrics-'));
    const config = loadConfig({ env: { REDIS_URL: redis.url, GENQUEUE_CACHE_DIR: dir } });
    const model = await resolveModelArg(fixturePath('gpt2-tiny'), config);
    started = await startWorker(
      config,
      { ...model, name: 'tiny' },
      // Batches: the metrics of batch runs are the subject (the slot engine's are in slot-worker.test.ts).
      { device: process.env.GENQUEUE_TEST_DEVICE, engine: 'batches', maxBatch: 4, maxWaitMs: 50, workerId: 'metrics-worker', metricsPort: 0 },
      pino({ level: 'silent' }),
    );
    base = `http://127.0.0.1:${started.metrics!.port}`;
  });
  after(async () => {
    await started.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts jobs, tokens and batches, and times queue wait, latency, batches and first tokens', async () => {
    const producer = new JobProducer({ connection: redis.connection });
    const ok = Array.from({ length: 6 }, (_, i) => jobFromFields({ id: `m-${i}`, prompt: `Prompt ${i}`, max_new_tokens: 5 }));
    // Longer than the tiny model's context: the job fails on its content.
    const bad = jobFromFields({ id: 'm-bad', prompt: 'word '.repeat(200), max_new_tokens: 5 });
    const placed = await producer.enqueueJobs([...ok, bad]);
    await producer.close();
    const results: CollectedResult[] = [];
    for await (const r of new ResultCollector({ connection: redis.connection }).collect(placed, { wait: true, timeoutMs: 60_000 })) {
      results.push(r);
    }
    const tokens = results.reduce((a, r) => a + (r.status === 'completed' ? r.result.tokenIds.length : 0), 0);
    assert.equal(results.filter((r) => r.status === 'completed').length, 6);

    // The 'completed' event that feeds the counters follows the job's state change: poll until it has landed.
    const text = await eventually('6 completions counted', async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      return /^genqueue_jobs_completed_total\{[^}]*\} 6$/m.test(t) ? t : undefined;
    });
    const labels = `worker="metrics-worker",model="tiny",device="${started.engine.device}"`;
    assert.equal(sample(text, 'genqueue_jobs_completed_total', labels), 6);
    assert.equal(sample(text, 'genqueue_jobs_failed_total', labels), 1);
    assert.equal(sample(text, 'genqueue_generated_tokens_total', labels), tokens);
    const batches = sample(text, 'genqueue_batches_total', labels);
    assert.ok(batches >= 2, `6 jobs at max batch 4 take at least 2 batches, saw ${batches}`);
    assert.equal(sample(text, 'genqueue_batch_size_count', labels), batches);
    // The too-long job reaches the engine, which fails its row alone.
    assert.equal(sample(text, 'genqueue_batch_size_sum', labels), 7);
    assert.equal(sample(text, 'genqueue_batch_seconds_count', labels), batches);
    for (const h of ['genqueue_queue_wait_seconds', 'genqueue_job_latency_seconds', 'genqueue_time_to_first_token_seconds']) {
      assert.equal(sample(text, `${h}_count`, labels), 6, h);
      assert.equal(sample(text, `${h}_bucket`, `le="+Inf",${labels}`), 6, h);
    }
    assert.ok(sample(text, 'genqueue_job_latency_seconds_sum', labels) >= sample(text, 'genqueue_queue_wait_seconds_sum', labels));
    assert.match(text, /# TYPE genqueue_job_latency_seconds histogram/);
    assert.ok(sample(text, 'process_resident_memory_bytes', labels) > 0, 'process metrics');
  });

  it('/healthz is 200 while Redis answers and 503 naming Redis while it does not', async () => {
    const ok = await fetch(`${base}/healthz`);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { healthy: true, checks: { redis: 'ok', engine: 'ok' } });
    assert.equal((await fetch(`${base}/nope`)).status, 404);

    // An unresponsive Redis: every client's commands wait out the pause.
    await redis.connection.call('CLIENT', 'PAUSE', '3000', 'ALL');
    const down = await fetch(`${base}/healthz`);
    assert.equal(down.status, 503);
    const body = (await down.json()) as { healthy: boolean; checks: { redis: string; engine: string } };
    assert.equal(body.healthy, false);
    assert.match(body.checks.redis, /^PING: no reply within 1000 ms$/);
    assert.equal(body.checks.engine, 'ok');
  });
});
