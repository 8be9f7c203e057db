import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { InvalidJobsError, JobProducer } from '../src/queue/job-producer.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

describe('JobProducer against a real redis-server', () => {
  let redis: TestRedis;
  let connection: Redis;
  let dir: string;
  const file = (name: string, lines: string[]): string => {
    const p = join(dir, name);
    writeFileSync(p, `${lines.join('\n')}\n`);
    return p;
  };
  const count = async (queue: string): Promise<number> => {
    const q = new Queue(queue, { connection });
    const n = await q.count();
    await q.close();
    return n;
  };

  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    dir = mkdtempSync(join(tmpdir(), 'genqueue-producer-'));
  });
  after(async () => {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a file with invalid lines, naming each line and reason, and enqueues nothing', async () => {
    await connection.flushall();
    const path = file('bad.jsonl', [
      '{"prompt": "fine"}',
      '{"prompt": ""}',
      '',
      'not json',
      '{"prompt": "x", "max_new_tokens": -3}',
      '{"prompt": "x", "max_tokens": 5}',
      '{"prompt": "x", "decoding": "nucleus"}',
      '{"prompt": "x", "id": "a:b"}',
    ]);
    const producer = new JobProducer({ connection });
    await assert.rejects(producer.enqueueFile(path), (e: unknown) => {
      assert.ok(e instanceof InvalidJobsError);
      assert.deepEqual(
        e.refused.map((r) => r.line),
        [2, 4, 5, 6, 7, 8],
      );
      assert.match(e.refused[0]!.error, /prompt: must not be empty/);
      assert.match(e.refused[1]!.error, /not valid JSON/);
      assert.match(e.refused[2]!.error, /max_new_tokens/);
      assert.match(e.refused[3]!.error, /unknown field\(s\) "max_tokens"/);
      assert.match(e.refused[4]!.error, /decoding/);
      assert.match(e.refused[5]!.error, /id: must not contain ":"/);
      assert.match(e.message, /line 2: prompt: must not be empty/);
      return true;
    });
    await producer.close();
    assert.equal(await count('genqueue'), 0);
  });

  it('with skipInvalid enqueues the valid lines and reports the rest', async () => {
    await connection.flushall();
    const path = file('mixed.jsonl', ['{"prompt": "a"}', '{"prompt": 5}', '{"prompt": "b"}']);
    const producer = new JobProducer({ connection });
    const report = await producer.enqueueFile(path, { skipInvalid: true });
    await producer.close();
    assert.equal(report.enqueued, 2);
    assert.deepEqual(report.refused.map((r) => r.line), [2]);
    assert.equal(await count('genqueue'), 2);
  });

  it('uses ids as BullMQ job ids: enqueueing the same file twice adds nothing the second time', async () => {
    await connection.flushall();
    const path = file('ids.jsonl', ['{"id": "j-1", "prompt": "a"}', '{"id": "j-2", "prompt": "b"}', '{"id": "j-1", "prompt": "again"}']);
    const producer = new JobProducer({ connection });
    const first = await producer.enqueueFile(path);
    const second = await producer.enqueueFile(path);
    await producer.close();
    assert.deepEqual([first.enqueued, first.duplicates], [2, 1]);
    assert.deepEqual([second.enqueued, second.duplicates], [0, 3]);
    const q = new Queue('genqueue', { connection });
    const job = await q.getJob('j-1');
    await q.close();
    assert.equal(job?.data.prompt, 'a');
    assert.equal(job?.data.max_new_tokens, 64, 'defaults are filled in before the job is stored');
  });

  it('routes jobs naming a model to that model\'s queue, and gives id-less jobs a UUID it reports', async () => {
    await connection.flushall();
    const path = file('models.jsonl', ['{"prompt": "a", "model": "gpt2-large"}', '{"prompt": "b"}']);
    const idsOut = join(dir, 'ids.jsonl');
    const producer = new JobProducer({ connection });
    await producer.enqueueFile(path, { idsOut });
    await producer.close();
    assert.equal(await count('genqueue.gpt2-large'), 1);
    assert.equal(await count('genqueue'), 1);
    const ids = readFileSync(idsOut, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; line: number; queue: string });
    assert.deepEqual(ids.map((i) => [i.line, i.queue]), [[1, 'genqueue.gpt2-large'], [2, 'genqueue']]);
    for (const i of ids) assert.match(i.id, /^[0-9a-f-]{36}$/);
    const q = new Queue('genqueue', { connection });
    assert.equal((await q.getJob(ids[1]!.id))?.data.id, ids[1]!.id);
    await q.close();
  });

  it('streams a large file in chunks with progress', async () => {
    await connection.flushall();
    const lines = Array.from({ length: 2500 }, (_, i) => JSON.stringify({ id: `big-${i}`, prompt: `prompt ${i}` }));
    const path = file('big.jsonl', lines);
    const progress: [number, number][] = [];
    const producer = new JobProducer({ connection });
    const report = await producer.enqueueFile(path, { chunkSize: 1000, onProgress: (d, t) => progress.push([d, t]) });
    await producer.close();
    assert.equal(report.enqueued, 2500);
    assert.deepEqual(progress, [[1000, 2500], [2000, 2500], [2500, 2500]]);
    assert.equal(await count('genqueue'), 2500);
  });
});
