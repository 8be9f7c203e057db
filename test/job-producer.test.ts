import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { type ConflictingLine, InvalidJobsError, JobProducer, type RefusedLine, describeConflict } from '../src/queue/job-producer.js';
import { loadConfig } from '../src/config/load-config.js';
import { DEFAULT_MAX_PROMPT_CHARS } from '../src/queue/job-schema.js';
import { DEFAULT_PREFIX, enqueueLinesKey } from '../src/queue/queue-names.js';
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
    const refused: RefusedLine[] = [];
    const report = await producer.enqueueFile(path, { skipInvalid: true, onRefused: (r) => refused.push(r) });
    await producer.close();
    assert.equal(report.enqueued, 2);
    assert.equal(report.refused, 1);
    assert.deepEqual(refused.map((r) => r.line), [2]);
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
    // Constant memory: the report holds no per-line data unless the caller asks for the jobs (to wait for them).
    assert.equal(report.jobs, undefined);
    assert.deepEqual(Object.keys(report).sort(), ['conflicts', 'duplicates', 'enqueued', 'refused']);
    const kept = await new JobProducer({ connection }).enqueueFile(path, { keepJobs: true });
    assert.equal(kept.jobs?.length, 2500);
    assert.deepEqual(kept.jobs?.[7], { id: 'big-7', queue: 'genqueue' });
  });

  it('refuses a prompt over the length limit before anything is tokenized, naming the field and both numbers', async () => {
    await connection.flushall();
    const messages = [{ role: 'system', content: 'x'.repeat(60) }, { role: 'user', content: 'y'.repeat(41) }];
    const path = file('long.jsonl', [JSON.stringify({ prompt: 'x'.repeat(101) }), JSON.stringify({ prompt: 'x'.repeat(100) }), JSON.stringify({ messages })]);
    const producer = new JobProducer({ connection, maxPromptChars: 100 });
    await assert.rejects(producer.enqueueFile(path), (e: unknown) => {
      assert.ok(e instanceof InvalidJobsError);
      assert.deepEqual(e.refused, [
        { line: 1, error: 'prompt: 101 characters exceeds the limit of 100 (limits.maxPromptChars)' },
        { line: 3, error: 'messages: 101 characters exceeds the limit of 100 (limits.maxPromptChars)' },
      ]);
      return true;
    });
    await producer.close();
    // Producers and workers built without a config use the same limit as the embedded config.
    assert.equal(loadConfig({ env: {} }).limits.maxPromptChars, DEFAULT_MAX_PROMPT_CHARS);
    const huge = file('huge.jsonl', [JSON.stringify({ prompt: 'word '.repeat(30_000) })]);
    await assert.rejects(new JobProducer({ connection }).enqueueFile(huge), /150000 characters exceeds the limit of 100000/);
    assert.equal(await count('genqueue'), 0);
  });

  it('refuses float parameters that float32 cannot carry, naming the field', async () => {
    await connection.flushall();
    const path = file('floats.jsonl', [
      '{"prompt": "x", "decoding": "sample", "temperature": 1e-300}',
      '{"prompt": "x", "repetition_penalty": 1e300}',
      '{"prompt": "x", "decoding": "sample", "top_p": 1e-300}',
      '{"prompt": "x", "decoding": "beam", "length_penalty": 1e300}',
      '{"prompt": "x", "decoding": "sample", "temperature": 0.001, "top_p": 0.001, "top_k": 50, "repetition_penalty": 100}',
      '{"prompt": "x", "decoding": "beam", "length_penalty": -5}',
    ]);
    const producer = new JobProducer({ connection });
    await assert.rejects(producer.enqueueFile(path), (e: unknown) => {
      assert.ok(e instanceof InvalidJobsError);
      assert.deepEqual(
        e.refused.map((r) => r.error),
        [
          'temperature: must be at least 0.001',
          'repetition_penalty: must be at most 100',
          'top_p: must be at least 0.001',
          'length_penalty: must be at most 5',
        ],
      );
      return true;
    });
    await producer.close();
  });

  it('warns about a reused id with different content, naming both lines, and keeps the first job', async () => {
    await connection.flushall();
    const before = file('before.jsonl', ['{"id": "d-old", "prompt": "old prompt"}']);
    const path = file('dups.jsonl', [
      '{"id": "d-1", "prompt": "first"}',
      '{"id": "d-1", "prompt": "first"}',
      '{"id": "d-1", "prompt": "second"}',
      '{"id": "d-2", "prompt": "a", "max_new_tokens": 8}',
      '{"id": "d-3", "prompt": "b"}',
      '{"id": "d-2", "prompt": "a", "max_new_tokens": 9}',
      '{"id": "d-old", "prompt": "new prompt"}',
      '{"id": "d-1", "prompt": "third"}',
    ]);
    const producer = new JobProducer({ connection });
    await producer.enqueueFile(before);
    const conflicts: ConflictingLine[] = [];
    // Chunks of 2: line 3 meets line 1 across chunks, line 6 meets line 4 across chunks, line 8 meets line 1 again.
    const report = await producer.enqueueFile(path, { chunkSize: 2, onConflict: (c) => conflicts.push(c) });
    await producer.close();
    assert.deepEqual([report.enqueued, report.duplicates, report.conflicts], [3, 5, 4]);
    assert.deepEqual(
      conflicts.map((c) => `line ${c.line}: ${describeConflict(c)}`),
      [
        'line 3: id d-1 already enqueued from line 1 with a different prompt; this line was not enqueued',
        'line 6: id d-2 already enqueued from line 4 with a different max_new_tokens; this line was not enqueued',
        'line 7: id d-old already queued (before this run) with a different prompt; this line was not enqueued',
        'line 8: id d-1 already enqueued from line 1 with a different prompt; this line was not enqueued',
      ],
    );
    const q = new Queue('genqueue', { connection });
    assert.equal((await q.getJob('d-1'))?.data.prompt, 'first');
    await q.close();
    const same = await new JobProducer({ connection }).enqueueFile(file('dups-1.jsonl', ['{"id": "d-1", "prompt": "first"}', '{"id": "d-1", "prompt": "first"}']), { chunkSize: 1 });
    assert.deepEqual([same.enqueued, same.duplicates, same.conflicts], [0, 2, 0], 'identical lines are plain duplicates');
    assert.deepEqual(await connection.keys(enqueueLinesKey(DEFAULT_PREFIX, '*')), [], "the run's line index is deleted at the end");
  });

  it('fails on an unwritable --ids-out before enqueueing anything', async () => {
    await connection.flushall();
    const path = file('ids-target.jsonl', ['{"prompt": "a"}']);
    const producer = new JobProducer({ connection });
    await assert.rejects(producer.enqueueFile(path, { idsOut: join(dir, 'no-such-dir', 'ids.jsonl') }), /ENOENT/);
    await producer.close();
    assert.equal(await count('genqueue'), 0);
  });
});
