import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import type { GenerationBatchResult, GenerationRequest } from '../src/engine/generation-types.js';
import type { TextGenerationEngine } from '../src/engine/text-generation-engine.js';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { buildModel } from '../src/model/model-builder.js';
import { JobCanceller } from '../src/queue/job-canceller.js';
import { InvalidJobsError, JobProducer, type JobProducerOptions } from '../src/queue/job-producer.js';
import { MAX_METADATA_BYTES, jobFromFields, parseJob, parseJobLine } from '../src/queue/job-schema.js';
import { type CollectedResult, type JobRef, ResultCollector } from '../src/queue/result-collector.js';
import { resultLine, summaryLine, writeResults } from '../src/cli/result-lines.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { GenerationWorker, type GenerationWorkerOptions } from '../src/worker/generation-worker.js';
import { generationRequestFor } from '../src/worker/job-request.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';
import { testDevice } from './harness/test-device.js';

const job = jobFromFields;
const OOM = "Non-zero status code returned while running GreedySearch node. Name:'GreedySearch' Status Message: CUDA failure 2: out of memory ; GPU=0";

/** The real engine underneath, with a hook before each batch (to fail it, hold it, or count it). */
class HookedEngine implements TextGenerationEngine {
  readonly calls: number[] = [];
  constructor(
    private readonly inner: TextGenerationEngine,
    private readonly before: (requests: readonly GenerationRequest[]) => Promise<void> | void = () => undefined,
  ) {}
  get manifest() {
    return this.inner.manifest;
  }
  get device() {
    return this.inner.device;
  }
  async generate(requests: readonly GenerationRequest[]): Promise<GenerationBatchResult> {
    this.calls.push(requests.length);
    await this.before(requests);
    return this.inner.generate(requests);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function collectAll(collector: ResultCollector, refs: readonly JobRef[]): Promise<Map<string, CollectedResult>> {
  const out = new Map<string, CollectedResult>();
  for await (const r of collector.collect(refs, { wait: true, timeoutMs: 120_000 })) out.set(r.id, r);
  return out;
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('job fields: metadata, usage, controls', () => {
  it('refuses metadata that is not a JSON object, too large or too deep, naming the field; accepts the rest', () => {
    const error = (fields: Record<string, unknown>): string => {
      const p = parseJob({ prompt: 'p', ...fields });
      return p.ok ? 'accepted' : p.error;
    };
    assert.equal(error({ metadata: { custom_id: 'r-1', tags: ['a', { b: null }], n: 1.5 } }), 'accepted');
    assert.equal(error({ metadata: 'text' }), 'metadata: must be a JSON object');
    assert.equal(error({ metadata: [1, 2] }), 'metadata: must be a JSON object');
    assert.match(error({ metadata: { blob: 'x'.repeat(MAX_METADATA_BYTES) } }), /^metadata: \d+ bytes of JSON exceeds the limit of 16384$/);
    // JSON.parse takes this line; a recursive check would overflow the stack instead of refusing it.
    const deep = parseJobLine(`{"prompt":"p","metadata":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`);
    assert.deepEqual(deep, { ok: false, error: 'metadata: must not be nested deeper than 32 levels' });
    assert.match(error({ priority: 0 }), /^priority: /);
    assert.match(error({ priority: 2 ** 21 }), /^priority: must be at most 2097151/);
    assert.match(error({ delay_ms: -1 }), /^delay_ms: /);
    assert.match(error({ attempts: 0 }), /^attempts: /);
    assert.equal(error({ priority: 1, delay_ms: 0, attempts: 5 }), 'accepted');
  });
});

describe('job controls, cancel, transient failures and OOM splits against a real redis-server and engine', () => {
  let redis: TestRedis;
  let connection: Redis;
  let dir: string;
  let engine: ThreadedGenerator;
  let tokenizer: TextTokenizer;
  let prefixes = 0;

  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    dir = mkdtempSync(join(tmpdir(), 'genqueue-controls-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    engine = await ThreadedGenerator.open(dir, { device: testDevice() });
    tokenizer = TextTokenizer.fromFile(join(dir, 'tokenizer.json'));
  });
  after(async () => {
    await engine.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A worker, producer and collector of their own key prefix, so tests do not take each other's jobs. */
  function setup(options: Partial<GenerationWorkerOptions> = {}, producerOptions: Partial<JobProducerOptions> = {}) {
    const prefix = `t${++prefixes}`;
    const worker = new GenerationWorker({
      connection,
      engine,
      tokenizer,
      modelName: 'tiny',
      maxBatch: 8,
      maxWaitMs: 100,
      logger: pino({ level: 'silent' }),
      prefix,
      ...options,
    });
    const producer = new JobProducer({ connection, prefix, ...producerOptions });
    const collector = new ResultCollector({ connection, prefix });
    const canceller = new JobCanceller({ connection, prefix });
    const queue = new Queue('genqueue', { connection, prefix });
    return {
      prefix,
      worker,
      producer,
      collector,
      canceller,
      queue,
      close: async () => {
        await worker.close();
        await producer.close();
        await canceller.close();
        await queue.close();
      },
    };
  }

  it('keeps model, usage and metadata in the result and the output line', async () => {
    const t = setup();
    t.worker.start();
    try {
      const metadata = { custom_id: 'request-1', nested: { n: 1 } };
      const placed = await t.producer.enqueueJobs([job({ id: 'm-1', prompt: 'Hello world', max_new_tokens: 4, metadata }), job({ id: 'm-2', prompt: 'Hi', max_new_tokens: 3 })]);
      const got = await collectAll(t.collector, placed);
      const r = got.get('m-1');
      assert.equal(r?.status, 'completed');
      if (r?.status !== 'completed') return;
      assert.equal(r.result.model, 'tiny');
      const n = r.result.tokenIds.length;
      assert.deepEqual(r.result.usage, { prompt_tokens: 2, completion_tokens: n, total_tokens: 2 + n });
      assert.deepEqual(r.result.metadata, metadata);
      const line = JSON.parse(resultLine(r)) as Record<string, unknown>;
      assert.deepEqual(Object.keys(line).sort(), ['finishReason', 'id', 'metadata', 'model', 'prompt', 'text', 'timings', 'tokenIds', 'usage']);
      assert.deepEqual(line.metadata, metadata);
      const plain = got.get('m-2');
      assert.equal(plain?.status === 'completed' && 'metadata' in plain.result, false, 'no metadata, no field');
    } finally {
      await t.close();
    }
  });

  it('reads results stored before usage existed, and gives failed lines their job\'s metadata', async () => {
    const t = setup();
    try {
      const placed = await t.producer.enqueueJobs([job({ id: 'u-old', prompt: 'p' }), job({ id: 'u-fail', prompt: 'p', metadata: { custom_id: 'x' } })]);
      const now = String(Date.now());
      const timings = { queuedAt: 1, startedAt: 2, finishedAt: 3, tokenizeMs: 0, generateMs: 1, batchSize: 1, tokensPerSecond: 1, workerId: 'w', device: 'cpu' };
      const old = { id: 'u-old', model: 'tiny', prompt: 'p', promptTokenIds: [1, 2, 3], tokenIds: [4, 5], text: 'ab', finishReason: 'length', timings };
      await connection.hset(`${t.prefix}:genqueue:u-old`, 'finishedOn', now, 'returnvalue', JSON.stringify(old));
      await connection.hset(`${t.prefix}:genqueue:u-fail`, 'finishedOn', now, 'failedReason', 'boom', 'returnvalue', 'null');
      const got = new Map<string, CollectedResult>();
      for await (const r of t.collector.collect(placed, { wait: false })) got.set(r.id, r);
      const r = got.get('u-old');
      assert.deepEqual(r?.status === 'completed' && r.result.usage, { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 });
      assert.deepEqual(got.get('u-fail'), { id: 'u-fail', status: 'failed', error: 'boom', metadata: { custom_id: 'x' } });
      assert.equal(resultLine(got.get('u-fail')!), '{"id":"u-fail","error":"boom","metadata":{"custom_id":"x"}}');
    } finally {
      await t.close();
    }
  });

  it('puts producer controls and each line\'s own priority, delay_ms and attempts on the BullMQ job', async () => {
    const t = setup({}, { priority: 7, delayMs: 60_000, attempts: 5, backoffMs: 250, keepCompleted: { age: 3600, count: 10 }, keepFailed: { count: 5 } });
    try {
      const path = join(dir, 'controls.jsonl');
      writeFileSync(path, ['{"id":"o-1","prompt":"a"}', '{"id":"o-2","prompt":"b","priority":2,"delay_ms":0,"attempts":1}'].join('\n'));
      await t.producer.enqueueFile(path);
      const [a, b] = await Promise.all([Job.fromId(t.queue, 'o-1'), Job.fromId(t.queue, 'o-2')]);
      assert.deepEqual(
        [a!.opts.priority, a!.opts.delay, a!.opts.attempts, a!.opts.backoff, a!.opts.removeOnComplete, a!.opts.removeOnFail],
        [7, 60_000, 5, { type: 'exponential', delay: 250 }, { age: 3600, count: 10 }, { count: 5 }],
      );
      assert.deepEqual([b!.opts.priority, b!.opts.delay, b!.opts.attempts], [2, 0, 1]);
      assert.equal(await a!.getState(), 'delayed');
      assert.equal(await b!.getState(), 'prioritized');
      const defaults = new JobProducer({ connection, prefix: t.prefix });
      await defaults.enqueueJobs([job({ id: 'o-3', prompt: 'c' })]);
      await defaults.close();
      const c = await Job.fromId(t.queue, 'o-3');
      assert.deepEqual(
        [c!.opts.attempts, c!.opts.backoff, c!.opts.removeOnComplete, c!.opts.removeOnFail],
        [3, { type: 'exponential', delay: 1000 }, { age: 604_800 }, { age: 604_800 }],
      );
      assert.throws(() => new JobProducer({ connection, priority: 2 ** 21 }), /job controls: priority: must be at most 2097151/);
      // A line's controls are checked like its other fields.
      writeFileSync(path, '{"prompt":"a","priority":-1}\n');
      await assert.rejects(t.producer.enqueueFile(path), (e: unknown) => e instanceof InvalidJobsError && /line 1: priority: /.test(e.message));
    } finally {
      await t.close();
    }
  });

  it('cancel: waiting, delayed and prioritized jobs are removed, active ones end as cancelled, never with text', { timeout: 180_000 }, async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let entered!: () => void;
    const held = new Promise<void>((resolve) => (entered = resolve));
    const hooked = new HookedEngine(engine, async (requests) => {
      if (requests.some((r) => r.maxNewTokens === 5)) {
        entered();
        await gate;
      }
    });
    const t = setup({ engine: hooked, maxWaitMs: 0 });
    t.worker.start();
    try {
      const done = await t.producer.enqueueJobs([job({ id: 'c-done', prompt: 'Hello', max_new_tokens: 3 })]);
      assert.equal((await collectAll(t.collector, done)).get('c-done')?.status, 'completed');
      // c-active's batch holds the engine; c-collecting is taken by the worker meanwhile and waits for the next batch.
      const active = await t.producer.enqueueJobs([job({ id: 'c-active', prompt: 'Hello world', max_new_tokens: 5, metadata: { n: 1 } })]);
      await held;
      const collecting = await t.producer.enqueueJobs([job({ id: 'c-collecting', prompt: 'Hi', max_new_tokens: 3 })]);
      await until('c-collecting is active', async () => (await t.queue.getJobState('c-collecting')) === 'active');
      const rest = await t.producer.enqueueJobs([
        job({ id: 'c-delayed', prompt: 'Later', delay_ms: 600_000 }),
        job({ id: 'c-waiting', prompt: 'Nobody serves this', model: 'nobody' }),
        job({ id: 'c-prio', prompt: 'Nobody serves this', model: 'nobody', priority: 3 }),
      ]);
      const refs = [...done, ...active, ...collecting, ...rest, { id: 'c-unknown', queue: 'genqueue' }];
      const report = await t.canceller.cancel([...refs, refs[1]!]);
      assert.deepEqual(report, { removed: 3, marked: 2, finished: 1, missing: 1 });
      open();

      const lines: string[] = [];
      const out = new Writable({
        write: (chunk: Buffer, _encoding, callback) => {
          lines.push(chunk.toString());
          callback();
        },
      });
      const summary = await writeResults(t.collector.collect(refs, { wait: true, timeoutMs: 120_000, recheckMs: 200 }), { out }, refs.length);
      assert.equal(summaryLine(summary), 'jobs 7: completed 1, failed 0, pending 0, missing 1, cancelled 5');
      const byId = new Map(lines.map((l) => JSON.parse(l) as { id: string; status?: string; metadata?: unknown }).map((l) => [l.id, l]));
      for (const id of ['c-active', 'c-collecting', 'c-delayed', 'c-waiting', 'c-prio']) assert.equal(byId.get(id)?.status, 'cancelled', id);
      assert.deepEqual(byId.get('c-active'), { id: 'c-active', status: 'cancelled', metadata: { n: 1 } });

      const cancelled = await Job.fromId(t.queue, 'c-active');
      assert.equal(cancelled?.failedReason, 'cancelled');
      assert.equal(cancelled?.returnvalue, null, 'a cancelled job never completes with text');
      assert.equal(cancelled?.attemptsMade, 1, 'a cancelled job is not tried again');
      // The id of a cancelled job may be enqueued again: that is a new job, which the old cancellation does not reach.
      const again = await t.producer.enqueueJobs([job({ id: 'c-delayed', prompt: 'Now' })]);
      assert.equal((await collectAll(t.collector, again)).get('c-delayed')?.status, 'completed');
    } finally {
      open();
      await t.close();
    }
  });

  it('splits a batch that runs out of device memory and retries the halves before any job fails', async () => {
    const poison = await tokenizer.encode('This prompt does not fit even alone');
    const hooked = new HookedEngine(engine, (requests) => {
      if (requests.length > 2) throw new Error(OOM);
      if (requests.some((r) => r.promptIds.join() === poison.join())) throw new Error('Failed to allocate memory for requested buffer of size 1073741824');
    });
    const t = setup({ engine: hooked, maxWaitMs: 2_000 }, { attempts: 1 });
    t.worker.start();
    try {
      const prompts = ['Hello world', 'Once upon a time', 'import numpy as np', 'The quick brown fox', '1, 2, 3,', 'Ça va?', 'This prompt does not fit even alone'];
      const jobs = prompts.map((prompt, i) => job({ id: `oom-${i}`, prompt, max_new_tokens: 4 }));
      const got = await collectAll(t.collector, await t.producer.enqueueJobs(jobs));
      assert.ok(Math.max(...hooked.calls) > 2, `the batch was never too large: ${hooked.calls.join(',')}`);
      for (const j of jobs.slice(0, -1)) {
        const r = got.get(j.id!);
        assert.equal(r?.status, 'completed', JSON.stringify(r));
        if (r?.status !== 'completed') continue;
        const direct = (await engine.generate([generationRequestFor(j, r.result.promptTokenIds)])).results[0] as { tokenIds: number[] };
        assert.deepEqual(r.result.tokenIds, direct.tokenIds, j.id);
        assert.ok(r.result.timings.batchSize <= 2, `batch ${r.result.timings.batchSize}`);
      }
      const failed = got.get('oom-6');
      assert.equal(failed?.status === 'failed' && failed.error, 'generation failed: Failed to allocate memory for requested buffer of size 1073741824');
      assert.equal(failed?.status === 'failed' && failed.content, undefined, 'an engine failure is not the content\'s fault');
    } finally {
      await t.close();
    }
  });

  it('tries a job again after a transient engine error; a job whose content is wrong fails at once', async () => {
    let failures = 1;
    const hooked = new HookedEngine(engine, () => {
      if (failures-- > 0) throw new Error('generator thread exited with code 1');
    });
    const t = setup({ engine: hooked }, { attempts: 3, backoffMs: 10 });
    t.worker.start();
    try {
      const placed = await t.producer.enqueueJobs([job({ id: 'tr-1', prompt: 'Hello world', max_new_tokens: 3 })]);
      assert.equal((await collectAll(t.collector, placed)).get('tr-1')?.status, 'completed');
      assert.equal((await Job.fromId(t.queue, 'tr-1'))?.attemptsStarted, 2);
      const wrong = await t.producer.enqueueJobs([job({ id: 'tr-long', prompt: 'word '.repeat(100), max_new_tokens: 100 })]);
      const r = (await collectAll(t.collector, wrong)).get('tr-long');
      assert.match(r?.status === 'failed' ? r.error : '', /exceeds the model's context length 128/);
      assert.equal((await Job.fromId(t.queue, 'tr-long'))?.attemptsStarted, 1, 'content errors are not retried');
    } finally {
      await t.close();
    }
  });
});
