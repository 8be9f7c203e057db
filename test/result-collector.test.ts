import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { JobProducer } from '../src/queue/job-producer.js';
import { type JobData, jobFromFields } from '../src/queue/job-schema.js';
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
    usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
  };
}

/** Jobs as the producer stores them (defaults filled in). */
function jobs(prefix: string, n: number): JobData[] {
  return Array.from({ length: n }, (_, i) => jobFromFields({ id: `${prefix}-${i}`, prompt: `p${i}`, max_new_tokens: 4 }));
}

/**
 * Resolves once the collector's one QueueEvents connection (the tests use one queue) is blocked in XREAD again: it
 * blocks only on an XREAD whose id is past every event already in the stream, so everything added before this call
 * (a job's "completed") has been read and handed to its listeners. A reader of an earlier collector that the server
 * has not yet seen go makes two, and the wait goes on.
 */
async function collectorCaughtUp(connection: Redis): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const clients = ((await connection.client('LIST')) as string).split('\n').filter((l) => / name=\S+:qe /.test(l));
    if (clients.length === 1 && / flags=\S*b/.test(clients[0]!) && / cmd=xread/.test(clients[0]!)) return;
    if (Date.now() > deadline) throw new Error(`collector's event readers never blocked again: ${clients.join(' | ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
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
    // One attempt: this test's worker fails "fail me" with a plain Error, which would otherwise be tried again.
    const producer = new JobProducer({ connection, attempts: 1 });
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
    const placed = await producer.enqueueJobs(jobs('late', 50));
    await producer.close();
    const collector = new ResultCollector({ connection });
    const pending = all(collector.collect(placed, { wait: true, timeoutMs: 20_000 }));
    await collectorCaughtUp(connection);
    const workerConnection = connection.duplicate();
    const worker = new Worker('genqueue', async (job: Job) => fakeResult(job), { connection: workerConnection, concurrency: 8 });
    const got = await pending;
    await worker.close();
    workerConnection.disconnect();
    assert.equal(got.size, 50);
    for (const r of got.values()) assert.equal(r.status, 'completed');
  });

  it('a slow consumer loses no result: jobs finishing while it is busy with one are still reported', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('slow', 3));
    await producer.close();
    // slow-0 finishes before the collector starts (its sweep reports it); slow-1 and slow-2 only when let go.
    const release = new Map<string, () => void>();
    const released = new Map(['slow-1', 'slow-2'].map((id) => [id, new Promise<void>((resolve) => release.set(id, resolve))]));
    const workerConnection = connection.duplicate();
    const worker = new Worker(
      'genqueue',
      async (job: Job) => {
        await released.get(job.id!);
        return fakeResult(job);
      },
      { connection: workerConnection, concurrency: 3 },
    );
    const completed = (id: string): Promise<void> =>
      new Promise((resolve) => {
        const on = (job: Job): void => {
          if (job.id !== id) return;
          worker.off('completed', on);
          resolve();
        };
        worker.on('completed', on);
      });
    await completed('slow-0');
    const got: string[] = [];
    try {
      for await (const r of new ResultCollector({ connection }).collect(placed, { wait: true, timeoutMs: 60_000 })) {
        got.push(r.id);
        assert.equal(r.status, 'completed', JSON.stringify(r));
        if (r.id === 'slow-0') {
          // The collector is past its sweep and will wait for events once this consumer asks for more.
          release.get('slow-1')!();
        } else if (r.id === 'slow-1') {
          // The consumer is busy (as with a full output file) while the last job finishes and its event arrives.
          const done = completed('slow-2');
          release.get('slow-2')!();
          await done;
          await collectorCaughtUp(connection);
        }
      }
    } finally {
      await worker.close();
      workerConnection.disconnect();
    }
    assert.deepEqual(got, ['slow-0', 'slow-1', 'slow-2']);
  });

  it('reports jobs that vanish while it waits (Redis flushed or restarted empty) as missing, instead of waiting forever', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('gone', 4));
    await producer.close();
    const collector = new ResultCollector({ connection });
    const results = all(collector.collect(placed, { wait: true, timeoutMs: 60_000, recheckMs: 200 }));
    await collectorCaughtUp(connection);
    await connection.flushall(); // no worker runs: without a state re-check nothing would ever arrive
    const got = await results;
    assert.deepEqual([...got.keys()].sort(), placed.map((p) => p.id).sort());
    for (const r of got.values()) {
      assert.equal(r.status, 'missing');
      assert.match(r.status === 'missing' ? r.error : '', /not in Redis/);
    }
  });

  it('reports a job removed while it waits at once, from the removed event', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('rm', 2));
    await producer.close();
    const collector = new ResultCollector({ connection });
    // A re-check far beyond the test's own timeout: only the event can report it.
    const results = all(collector.collect(placed.slice(0, 1), { wait: true, timeoutMs: 60_000, recheckMs: 3_600_000 }));
    await collectorCaughtUp(connection);
    const queue = new Queue('genqueue', { connection });
    await queue.remove('rm-0');
    await queue.close();
    const got = await results;
    assert.equal(got.get('rm-0')?.status, 'missing');
    assert.match((got.get('rm-0') as { error: string }).error, /removed/);
  });

  it('finds a job that finished without an event reaching it (the events stream is trimmed) by re-checking states', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('quiet', 2));
    await producer.close();
    const collector = new ResultCollector({ connection });
    const results = all(collector.collect(placed, { wait: true, timeoutMs: 60_000, recheckMs: 200 }));
    await collectorCaughtUp(connection);
    // What a collector that lags behind a trimmed stream sees: the jobs' hashes say finished, no event comes.
    const now = String(Date.now());
    await connection.hset('bull:genqueue:quiet-0', 'finishedOn', now, 'returnvalue', JSON.stringify(fakeResult({ data: { id: 'quiet-0', prompt: 'p0' } } as Job)));
    await connection.hset('bull:genqueue:quiet-1', 'finishedOn', now, 'failedReason', 'boom', 'returnvalue', 'null');
    const got = await results;
    assert.equal(got.get('quiet-0')?.status, 'completed');
    assert.deepEqual(got.get('quiet-1'), { id: 'quiet-1', status: 'failed', error: 'boom' });
  });

  it('turns a return value that is not a result into a failed line, from events and from stored state alike', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('odd', 3));
    await producer.close();
    // Stored before the collector starts, as a foreign writer might: not JSON at all.
    await connection.hset('bull:genqueue:odd-2', 'finishedOn', String(Date.now()), 'returnvalue', '{not json');
    const collector = new ResultCollector({ connection });
    const results = all(collector.collect(placed, { wait: true, timeoutMs: 60_000 }));
    await collectorCaughtUp(connection);
    const workerConnection = connection.duplicate();
    const worker = new Worker('genqueue', async (job: Job) => (job.id === 'odd-0' ? 'just text' : { text: 5 }), { connection: workerConnection });
    try {
      const got = await results;
      for (const id of ['odd-0', 'odd-1', 'odd-2']) {
        const r = got.get(id);
        assert.equal(r?.status, 'failed', `${id}: ${JSON.stringify(r)}`);
      }
      assert.match((got.get('odd-0') as { error: string }).error, /result does not match the result schema/);
      assert.match((got.get('odd-2') as { error: string }).error, /result is not valid JSON/);
    } finally {
      await worker.close();
      workerConnection.disconnect();
    }
  });

  it('reports each distinct job once, however often the refs name it', async () => {
    await connection.flushall();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs('twice', 2));
    await producer.close();
    const progress: [number, number][] = [];
    const refs = [...placed, placed[0]!, { id: 'twice-unknown', queue: 'genqueue' }];
    const got: CollectedResult[] = [];
    for await (const r of new ResultCollector({ connection }).collect(refs, { wait: false, onProgress: (d, t) => progress.push([d, t]) })) got.push(r);
    assert.deepEqual(got.map((r) => `${r.id}:${r.status}`).sort(), ['twice-0:pending', 'twice-1:pending', 'twice-unknown:missing']);
    assert.deepEqual(progress.at(-1), [3, 3]);
  });

  it('names the line of an ids file without an id', async () => {
    const path = join(dir, 'noid.jsonl');
    writeFileSync(path, '{"id":"x-1"}\n{"prompt":"no id"}\n');
    await assert.rejects(readJobRefs(path), /noid.jsonl:2: needs an "id"/);
  });
});
