import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { JobProducer } from '../src/queue/job-producer.js';
import { type CollectedResult, ResultCollector, readJobRefs } from '../src/queue/result-collector.js';
import type { JobResult } from '../src/queue/result-schema.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

/** What a worker would return; the collector only cares that it matches the result schema. */
function fakeResult(job: Job): JobResult {
  return {
    id: job.data.id,
    model: 'm',
    prompt: job.data.prompt,
    promptTokenIds: [1],
    tokenIds: [2, 3],
    text: ' done',
    finishReason: 'length',
    timings: { queuedAt: 1, startedAt: 2, finishedAt: 3, tokenizeMs: 0, generateMs: 1, batchSize: 1, tokensPerSecond: 2000, workerId: 'w', device: 'cpu' },
  };
}

async function all(it: AsyncIterable<CollectedResult>): Promise<Map<string, CollectedResult>> {
  const out = new Map<string, CollectedResult>();
  for await (const r of it) out.set(r.id, r);
  return out;
}

describe('ResultCollector against a real redis-server', () => {
  let redis: TestRedis;
  let connection: Redis;
  let dir: string;
  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    dir = mkdtempSync(join(tmpdir(), 'genqueue-results-'));
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports pending and missing ids without waiting, then everything once a worker ran', async () => {
    const path = join(dir, 'jobs.jsonl');
    writeFileSync(path, ['{"id":"r-1","prompt":"ok"}', '{"id":"r-2","prompt":"fail me"}'].join('\n'));
    const producer = new JobProducer({ connection });
    await producer.enqueueFile(path);
    await producer.close();
    const refs = [...(await readJobRefs(path)), { id: 'r-unknown', queue: 'genqueue' }];
    const collector = new ResultCollector({ connection });

    const before = await all(collector.collect(refs, { wait: false }));
    assert.equal(before.get('r-1')?.status, 'pending');
    assert.equal(before.get('r-unknown')?.status, 'missing');

    const workerConnection = connection.duplicate();
    const worker = new Worker(
      'genqueue',
      async (job: Job) => {
        if (job.data.prompt === 'fail me') throw new Error('boom: bad prompt');
        return fakeResult(job);
      },
      { connection: workerConnection },
    );
    const waited = await all(collector.collect(refs.slice(0, 2), { wait: true, timeoutMs: 20_000 }));
    await worker.close();
    workerConnection.disconnect();
    const ok = waited.get('r-1');
    assert.equal(ok?.status, 'completed');
    assert.equal(ok?.status === 'completed' && ok.result.text, ' done');
    assert.deepEqual(waited.get('r-2'), { id: 'r-2', status: 'failed', error: 'boom: bad prompt' });

    const after = await all(collector.collect(refs, { wait: false }));
    assert.equal(after.get('r-1')?.status, 'completed');
    assert.equal(after.get('r-2')?.status, 'failed');
  });

  it('waits for jobs that finish after it started waiting', async () => {
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(
      Array.from({ length: 50 }, (_, i) => ({
        id: `late-${i}`,
        prompt: `p${i}`,
        max_new_tokens: 4,
        min_new_tokens: 0,
        decoding: 'greedy' as const,
        num_beams: 4,
        length_penalty: 1,
        temperature: 1,
        top_k: 0,
        top_p: 1,
        repetition_penalty: 1,
      })),
    );
    await producer.close();
    const collector = new ResultCollector({ connection });
    const pending = all(collector.collect(placed, { wait: true, timeoutMs: 20_000 }));
    await new Promise((r) => setTimeout(r, 200));
    const workerConnection = connection.duplicate();
    const worker = new Worker('genqueue', async (job: Job) => fakeResult(job), { connection: workerConnection, concurrency: 8 });
    const got = await pending;
    await worker.close();
    workerConnection.disconnect();
    assert.equal(got.size, 50);
    for (const r of got.values()) assert.equal(r.status, 'completed');
  });

  it('names the line of an ids file without an id', async () => {
    const path = join(dir, 'noid.jsonl');
    writeFileSync(path, '{"id":"x-1"}\n{"prompt":"no id"}\n');
    await assert.rejects(readJobRefs(path), /noid.jsonl:2: needs an "id"/);
  });
});
