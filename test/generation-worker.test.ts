import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { Generator } from '../src/engine/generator.js';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { buildModel } from '../src/model/model-builder.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { type CollectedResult, ResultCollector } from '../src/queue/result-collector.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { GenerationWorker } from '../src/worker/generation-worker.js';
import { readFleet } from '../src/worker/fleet-heartbeat.js';
import { generationRequestFor } from '../src/worker/job-request.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';
import { testDevice } from './harness/test-device.js';

const job = jobFromFields;

async function collect(collector: ResultCollector, refs: { id: string; queue: string }[]): Promise<Map<string, CollectedResult>> {
  const out = new Map<string, CollectedResult>();
  for await (const r of collector.collect(refs, { wait: true, timeoutMs: 60_000 })) out.set(r.id, r);
  return out;
}

describe('GenerationWorker: Redis → batch → graph run → results', () => {
  let redis: TestRedis;
  let connection: Redis;
  let dir: string;
  let engine: ThreadedGenerator;
  let worker: GenerationWorker;
  let tokenizer: TextTokenizer;

  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    dir = mkdtempSync(join(tmpdir(), 'genqueue-worker-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    engine = await ThreadedGenerator.open(dir, { device: testDevice() });
    tokenizer = TextTokenizer.fromFile(join(dir, 'tokenizer.json'));
    worker = new GenerationWorker({
      connection,
      engine,
      tokenizer,
      modelName: 'tiny',
      maxBatch: 8,
      maxWaitMs: 200,
      workerId: 'test-worker',
      maxPromptChars: 1000,
      logger: pino({ level: 'silent' }),
    });
    worker.start();
  });
  after(async () => {
    await worker.close();
    await engine.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a burst of jobs from batched runs with the same tokens as direct generation', async () => {
    const prompts = ['Hello world', 'Once upon a time', 'import numpy as np', 'Ça va?', 'The quick brown fox', '1, 2, 3,'];
    const jobs = prompts.map((prompt, i) => job({ id: `w-${i}`, prompt, max_new_tokens: 6 + i }));
    jobs.push(job({ id: 'w-beam', prompt: 'Hello world', max_new_tokens: 8, decoding: 'beam', num_beams: 4 }));
    jobs.push(job({ id: 'w-named', prompt: 'Hello world', max_new_tokens: 5, model: 'tiny' }));
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs(jobs);
    await producer.close();
    const results = await collect(new ResultCollector({ connection }), placed);

    const direct = await Generator.open(dir, { device: testDevice() });
    try {
      for (const j of jobs) {
        const r = results.get(j.id!);
        assert.equal(r?.status, 'completed', JSON.stringify(r));
        if (r?.status !== 'completed') continue;
        const ids = await tokenizer.encode(j.prompt!);
        const expected = (await direct.generate([generationRequestFor(j, ids)])).results[0] as { tokenIds: number[]; finishReason: string };
        assert.deepEqual(r.result.promptTokenIds, ids);
        assert.deepEqual(r.result.tokenIds, expected.tokenIds, j.id);
        assert.equal(r.result.finishReason, expected.finishReason);
        assert.equal(r.result.text, await tokenizer.decode(expected.tokenIds));
        assert.equal(r.result.model, 'tiny');
        const t = r.result.timings;
        assert.equal(t.workerId, 'test-worker');
        assert.ok(t.queuedAt <= t.startedAt && t.startedAt <= t.finishedAt, JSON.stringify(t));
        assert.ok(t.generateMs > 0 && t.batchSize >= 1 && t.tokensPerSecond > 0);
      }
    } finally {
      await direct.close();
    }
    const greedyBatch = Math.max(...jobs.filter((j) => j.decoding === 'greedy').map((j) => (results.get(j.id!) as { result: { timings: { batchSize: number } } }).result.timings.batchSize));
    assert.ok(greedyBatch > 1, 'greedy jobs of the burst should share a batch');
  });

  it('fails bad jobs with a clear reason and keeps serving the others', async () => {
    const queue = new Queue('genqueue', { connection });
    // Written straight to Redis, past the producer's validation, as a foreign producer might.
    await queue.add('generate', { prompt: 42 }, { jobId: 'bad-data' });
    await queue.close();
    const producer = new JobProducer({ connection });
    const placed = await producer.enqueueJobs([
      job({ id: 'too-long', prompt: 'word '.repeat(100), max_new_tokens: 100 }),
      job({ id: 'fine-after', prompt: 'Hello world', max_new_tokens: 3 }),
    ]);
    await producer.close();
    const results = await collect(new ResultCollector({ connection }), [{ id: 'bad-data', queue: 'genqueue' }, ...placed]);
    const bad = results.get('bad-data');
    assert.equal(bad?.status, 'failed');
    assert.match(bad?.status === 'failed' ? bad.error : '', /invalid job data: prompt: /);
    const long = results.get('too-long');
    assert.match(long?.status === 'failed' ? long.error : '', /exceeds the model's context length 128/);
    assert.equal(results.get('fine-after')?.status, 'completed');
  });

  it('fails jobs that lie about their model or carry an over-long prompt, and answers under the BullMQ id', async () => {
    const shared = new Queue('genqueue', { connection });
    const own = new Queue('genqueue.tiny', { connection });
    const base = job({ prompt: 'Hello world', max_new_tokens: 3 });
    // Written straight to Redis, past the producer's routing and checks, as a foreign producer might.
    await shared.add('generate', { ...base, id: 'lie-shared', model: 'gpt2-large' }, { jobId: 'lie-shared' });
    await own.add('generate', { ...base, id: 'lie-own', model: 'other' }, { jobId: 'lie-own' });
    await shared.add('generate', { ...base, prompt: 'x'.repeat(1001) }, { jobId: 'lie-long' });
    await shared.add('generate', { ...base, prompt: 'y'.repeat(1000), max_new_tokens: 1 }, { jobId: 'lie-long-ok' });
    await shared.add('generate', { ...base, id: 'someone-else' }, { jobId: 'lie-id' });
    await shared.add('generate', { ...base, decoding: 'sample', temperature: 1e-300 }, { jobId: 'lie-float' });
    await shared.close();
    await own.close();
    const results = await collect(
      new ResultCollector({ connection }),
      ['lie-shared', 'lie-long', 'lie-long-ok', 'lie-id', 'lie-float'].map((id) => ({ id, queue: 'genqueue' })).concat({ id: 'lie-own', queue: 'genqueue.tiny' }),
    );
    const error = (id: string): string => {
      const r = results.get(id);
      return r?.status === 'failed' ? r.error : `not failed: ${JSON.stringify(r)}`;
    };
    assert.equal(error('lie-shared'), 'job asks for model "gpt2-large" but this worker serves "tiny"');
    assert.equal(error('lie-own'), 'job asks for model "other" but this worker serves "tiny"');
    assert.equal(error('lie-long'), 'prompt: 1001 characters exceeds the limit of 1000 (limits.maxPromptChars)');
    // At the limit it is tokenized, and then too long for the tiny model's 128-token context.
    assert.match(error('lie-long-ok'), /prompt \(\d+ tokens\) \+ max_new_tokens \(1\) = \d+ exceeds the model's context length 128/);
    assert.equal(error('lie-float'), 'invalid job data: temperature: must be at least 0.001');
    // Each is the content's fault, which the failed reason in Redis says (OpenAI lines: status 400); results read as before.
    for (const id of ['lie-shared', 'lie-own', 'lie-long', 'lie-long-ok', 'lie-float']) {
      const r = results.get(id);
      assert.equal(r?.status === 'failed' && r.content, true, id);
    }
    const stored = await connection.hget('bull:genqueue:lie-long', 'failedReason');
    assert.equal(stored, 'refused: prompt: 1001 characters exceeds the limit of 1000 (limits.maxPromptChars)');
    const answered = results.get('lie-id');
    assert.equal(answered?.status === 'completed' && answered.result.id, 'lie-id');
  });

  it('publishes itself to the fleet view', async () => {
    const fleet = await readFleet(connection);
    const me = fleet.find((m) => m.workerId === 'test-worker');
    assert.ok(me, 'worker heartbeat missing');
    assert.deepEqual(me.queues, ['genqueue', 'genqueue.tiny']);
    assert.equal(me.model, 'tiny');
  });
});
