import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { DEVICE_LOOP_ADDON } from '../src/engine/device-loop-runner.js';
import { SlotCapacityError } from '../src/engine/slot-errors.js';
import { Generator } from '../src/engine/generator.js';
import { ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { ThreadedSlotEngine } from '../src/engine/threaded-slot-engine.js';
import { writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { type ModelManifest, readManifest } from '../src/model/manifest.js';
import { resolveModelArg } from '../src/model/model-reference.js';
import { buildModel } from '../src/model/model-builder.js';
import { JobCanceller } from '../src/queue/job-canceller.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { type JobInput, jobFromFields, parseJob } from '../src/queue/job-schema.js';
import { type CollectedResult, type JobRef, ResultCollector } from '../src/queue/result-collector.js';
import type { JobResult } from '../src/queue/result-schema.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { readFleet } from '../src/worker/fleet-heartbeat.js';
import { GenerationWorker, type GenerationWorkerOptions } from '../src/worker/generation-worker.js';
import { generationRequestFor } from '../src/worker/job-request.js';
import { slotEngineOptions } from '../src/worker/engine-choice.js';
import { LazyEngine } from '../src/worker/lazy-engine.js';
import { slotRefusal } from '../src/worker/slot-scheduler.js';
import { startWorker } from '../src/worker/worker-process.js';
import { eventually } from './harness/eventually.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

// The worker on the slot engine (continuous batching) on the CPU provider: the same native loop and scheduler as on
// CUDA, through a real redis-server. Skipped without the addon unless GENQUEUE_REQUIRE_NATIVE=1.
const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;

const CPU = { kind: 'cpu' } as const;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SLOTS = 4;
const job = (fields: JobInput) => jobFromFields(fields as Record<string, unknown>);
type Completed = Extract<CollectedResult, { status: 'completed' }>;

describe('worker on the slot engine (continuous batching, CPU provider, real Redis)', { skip }, () => {
  let redis: TestRedis;
  let connection: Redis;
  let dir: string;
  let slotEngine: ThreadedSlotEngine;
  let searchOps: LazyEngine;
  let tokenizer: TextTokenizer;
  let prefixes = 0;

  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slot-worker-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    slotEngine = await ThreadedSlotEngine.open(dir, { device: CPU, slots: SLOTS, chunkSteps: 4, prefillChunk: 16, intraOpThreads: 1 });
    searchOps = new LazyEngine(() => ThreadedGenerator.open(dir, { device: CPU }), readManifest(dir), 'cpu');
    tokenizer = TextTokenizer.fromFile(join(dir, 'tokenizer.json'));
  });
  after(async () => {
    await slotEngine.close();
    await searchOps.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A worker on the slot engine with its own key prefix (none: BullMQ's default, for the CLI), and its clients. */
  function setup(options: Partial<Omit<GenerationWorkerOptions, 'prefix'>> & { prefix?: string | null } = {}) {
    const { prefix: wanted, ...rest } = options;
    const prefix = wanted === null ? undefined : (wanted ?? `s${++prefixes}`);
    const worker = new GenerationWorker({
      connection,
      engine: searchOps,
      slotEngine,
      tokenizer,
      modelName: 'tiny',
      maxBatch: 4,
      maxWaitMs: 20,
      streamEveryTokens: 4,
      logger: pino({ level: 'silent' }),
      ...(prefix === undefined ? {} : { prefix }),
      ...rest,
    });
    const producer = new JobProducer({ connection, ...(prefix === undefined ? {} : { prefix }) });
    const collector = new ResultCollector({ connection, ...(prefix === undefined ? {} : { prefix }) });
    return {
      prefix: prefix ?? 'bull',
      worker,
      producer,
      collector,
      async results(refs: readonly JobRef[]): Promise<Map<string, CollectedResult>> {
        const out = new Map<string, CollectedResult>();
        for await (const r of collector.collect(refs, { wait: true, timeoutMs: 120_000 })) out.set(r.id, r);
        return out;
      },
      async run(jobs: ReturnType<typeof job>[]): Promise<Map<string, CollectedResult>> {
        return this.results(await producer.enqueueJobs(jobs));
      },
      close: async () => {
        await worker.close();
        await producer.close();
      },
    };
  }

  const completed = (r: CollectedResult | undefined, what: string): JobResult => {
    assert.equal(r?.status, 'completed', `${what}: ${JSON.stringify(r)}`);
    return (r as Completed).result;
  };

  it('a job\'s tokens are the same alone as when it joins a running batch mid-way; each job completes when it ends', async () => {
    const t = setup();
    t.worker.start();
    try {
      const fields = { prompt: 'Once upon a time', max_new_tokens: 40, min_new_tokens: 40 };
      const alone = completed((await t.run([job({ id: 'alone', ...fields })])).get('alone'), 'alone');
      assert.equal(alone.tokenIds.length, 40);
      // GreedySearch gives the same tokens (fp32 on the CPU: exactly).
      const direct = await Generator.open(dir, { device: CPU });
      try {
        const expected = (await direct.generate([generationRequestFor(job({ ...fields }), alone.promptTokenIds)])).results[0] as { tokenIds: number[] };
        assert.deepEqual(alone.tokenIds, expected.tokenIds);
      } finally {
        await direct.close();
      }
      // Four long jobs fill the slots; once the longest has streamed its first chunk, the same job joins mid-way.
      const eventsConnection = connection.duplicate();
      const events = new QueueEvents('genqueue', { connection: eventsConnection, prefix: t.prefix });
      await events.waitUntilReady();
      const firstChunk = new Promise<void>((resolve) => events.on('progress', ({ jobId }) => jobId === 'mate-3' && resolve()));
      const mates = await t.producer.enqueueJobs(
        [30, 60, 90, 110].map((n, i) => job({ id: `mate-${i}`, prompt: `Mate number ${i} says`, max_new_tokens: n, min_new_tokens: n, stream: i === 3 })),
      );
      await firstChunk;
      await events.close();
      eventsConnection.disconnect();
      const late = await t.producer.enqueueJobs([job({ id: 'joined', ...fields }), job({ id: 'after', prompt: 'Later still', max_new_tokens: 5 })]);
      const results = await t.results([...mates, ...late]);
      const joined = completed(results.get('joined'), 'joined');
      assert.deepEqual(joined.tokenIds, alone.tokenIds);
      assert.equal(joined.text, alone.text);
      const longest = completed(results.get('mate-3'), 'mate-3');
      const shortest = completed(results.get('mate-0'), 'mate-0');
      const t3 = longest.timings;
      assert.ok(t3.firstTokenAt! < joined.timings.startedAt && joined.timings.finishedAt < t3.finishedAt, 'joined while mate-3 ran, and ended first');
      // Per job, not per batch: the 30-token mate completed long before the 110-token one.
      assert.ok(shortest.timings.finishedAt < t3.finishedAt);
      for (const r of [joined, longest]) {
        assert.equal(r.timings.batchSize, SLOTS);
        assert.ok(r.timings.firstTokenAt! >= r.timings.startedAt && r.timings.firstTokenAt! <= r.timings.finishedAt, JSON.stringify(r.timings));
      }
      assert.deepEqual(longest.tokenIds.length, 110);
    } finally {
      await t.close();
    }
  });

  it('a seed gives the same tokens whatever the batch mates; other seeds differ; top_k 1 is greedy; a drawn seed is reported', async () => {
    const t = setup();
    t.worker.start();
    try {
      const mine = { prompt: 'The weather today', max_new_tokens: 30, min_new_tokens: 30, decoding: 'sample', temperature: 1.3, top_k: 100, top_p: 0.95, seed: 424242 } as const;
      const alone = completed((await t.run([job({ id: 'seed-alone', ...mine })])).get('seed-alone'), 'alone');
      assert.equal(alone.seed, 424242);
      const mates = (round: number) => [
        job({ id: `m-${round}-a`, prompt: 'Another prompt entirely', max_new_tokens: 17 + round, decoding: 'sample', seed: round }),
        job({ id: `m-${round}-b`, prompt: 'Greedy mate', max_new_tokens: 45 }),
        job({ id: `m-${round}-c`, prompt: 'x y z', max_new_tokens: 9, decoding: 'sample', temperature: 0.7, top_k: 5 }),
      ];
      for (let round = 0; round < 2; round++) {
        // Mates before or after: another slot, other rows beside it.
        const jobs = round === 0 ? [...mates(round), job({ id: `seed-${round}`, ...mine })] : [job({ id: `seed-${round}`, ...mine }), ...mates(round)];
        const r = completed((await t.run(jobs)).get(`seed-${round}`), `round ${round}`);
        assert.deepEqual(r.tokenIds, alone.tokenIds, `round ${round}`);
      }
      const other = completed((await t.run([job({ id: 'seed-other', ...mine, seed: 424243 })])).get('seed-other'), 'other');
      assert.notDeepEqual(other.tokenIds, alone.tokenIds);
      // A seed above 2^53 travels as a decimal string, and comes back as one.
      const big = completed((await t.run([job({ id: 'seed-big', ...mine, seed: '9223372036854775807' })])).get('seed-big'), 'big');
      assert.equal(big.seed, '9223372036854775807');
      const results = await t.run([
        job({ id: 'topk1', prompt: 'The weather today', max_new_tokens: 20, decoding: 'sample', top_k: 1, temperature: 0.5, seed: 7 }),
        job({ id: 'greedy', prompt: 'The weather today', max_new_tokens: 20 }),
        job({ id: 'unseeded', ...mine, seed: undefined }),
      ]);
      assert.deepEqual(completed(results.get('topk1'), 'topk1').tokenIds, completed(results.get('greedy'), 'greedy').tokenIds);
      assert.equal(completed(results.get('greedy'), 'greedy').seed, undefined, 'greedy jobs draw no seed');
      const unseeded = completed(results.get('unseeded'), 'unseeded');
      assert.ok(unseeded.seed !== undefined, 'an unseeded sampling job reports the seed it drew');
      const replay = completed((await t.run([job({ id: 'replay', ...mine, seed: unseeded.seed })])).get('replay'), 'replay');
      assert.deepEqual(replay.tokenIds, unseeded.tokenIds, 'the reported seed reproduces the job');
    } finally {
      await t.close();
    }
  });

  it('1,000 short jobs through 4 slots: every one completes and no slot leaks', { timeout: 300_000 }, async () => {
    const t = setup();
    t.worker.start();
    try {
      const before = await slotEngine.stats();
      const jobs = Array.from({ length: 1000 }, (_, i) => job({ id: `many-${i}`, prompt: `Job ${i}`, max_new_tokens: 1 + (i % 3), min_new_tokens: 1 + (i % 3) }));
      const results = await t.run(jobs);
      assert.equal([...results.values()].filter((r) => r.status === 'completed').length, 1000);
      jobs.forEach((j, i) => assert.equal(completed(results.get(j.id!), j.id!).tokenIds.length, 1 + (i % 3)));
      const after = await slotEngine.stats();
      assert.equal(after.completed - before.completed, 1000);
      assert.deepEqual([after.busy, after.waiting, after.deviceRunning], [0, 0, 0], JSON.stringify(after));
      assert.equal(t.worker.stats.snapshot().jobsCompleted, 1000);
    } finally {
      await t.close();
    }
  });

  it('a job that fails validation or does not fit a slot fails alone, naming the field or both numbers, and takes no slot', async () => {
    const t = setup();
    t.worker.start();
    try {
      const queue = new Queue('genqueue', { connection, prefix: t.prefix });
      // Written straight to Redis, past the producer's checks, as a foreign producer might.
      const base = { prompt: 'Hello', max_new_tokens: 5 };
      await queue.add('generate', { ...base, decoding: 'sample', seed: -1 }, { jobId: 'bad-seed' });
      await queue.add('generate', { ...base, decoding: 'sample', top_p: 0 }, { jobId: 'bad-top-p' });
      await queue.add('generate', { ...base, decoding: 'sample', temperature: 0 }, { jobId: 'bad-temperature' });
      await queue.add('generate', { ...base, stop: ['ok', ''] }, { jobId: 'bad-stop' });
      await queue.close();
      const submitted = (await slotEngine.stats()).submitted;
      const placed = await t.producer.enqueueJobs([
        job({ id: 'too-long', prompt: 'word '.repeat(100), max_new_tokens: 100 }),
        job({ id: 'fine', prompt: 'Hello', max_new_tokens: 3 }),
      ]);
      const results = await t.results([...['bad-seed', 'bad-top-p', 'bad-temperature', 'bad-stop'].map((id) => ({ id, queue: 'genqueue' })), ...placed]);
      const error = (id: string) => {
        const r = results.get(id);
        return r?.status === 'failed' ? r.error : `not failed: ${JSON.stringify(r)}`;
      };
      assert.match(error('bad-seed'), /^invalid job data: seed: /);
      assert.match(error('bad-top-p'), /^invalid job data: top_p: /);
      assert.match(error('bad-temperature'), /^invalid job data: temperature: /);
      assert.match(error('bad-stop'), /^invalid job data: stop\.1: must not be empty/);
      const n = (await tokenizer.encode('word '.repeat(100))).length;
      assert.equal(error('too-long'), `prompt (${n} tokens) + max_new_tokens (100) = ${n + 100} exceeds the model's context length 128`);
      completed(results.get('fine'), 'fine');
      // Only the job that fits reached the engine.
      assert.equal((await slotEngine.stats()).submitted, submitted + 1);
      const tooLong = await Job.fromId(new Queue('genqueue', { connection, prefix: t.prefix }), 'too-long');
      assert.equal(tooLong?.attemptsMade, 1, 'a job that cannot fit is not tried again');
    } finally {
      await t.close();
    }
  });

  it('stop strings: the text ends before the first one, the tokens before it, finishReason "stop" (slots and beam alike)', async () => {
    const t = setup();
    t.worker.start();
    try {
      const fields = { prompt: 'In the beginning', max_new_tokens: 60, min_new_tokens: 60 };
      const plain = completed((await t.run([job({ id: 'plain', ...fields })])).get('plain'), 'plain');
      // A stop string from the middle of the output, whose first occurrence is there.
      const from = Math.floor(plain.text.length / 2);
      const stop = plain.text.slice(from, from + 3);
      const at = plain.text.indexOf(stop);
      assert.ok(at > 0 && stop.length === 3, JSON.stringify(plain.text));
      const beam = { ...fields, min_new_tokens: 0, decoding: 'beam', num_beams: 2 } as const;
      const beamPlain = completed((await t.run([job({ id: 'beam-plain', ...beam })])).get('beam-plain'), 'beam-plain');
      const beamStop = beamPlain.text.slice(5, 8);
      const results = await t.run([
        job({ id: 'stopped', ...fields, min_new_tokens: 0, stop: ['never appears here', stop], stream: true }),
        job({ id: 'beam-stopped', ...beam, stop: [beamStop] }),
      ]);
      const stopped = completed(results.get("stopped"), "stopped");
      assert.equal(stopped.finishReason, 'stop');
      assert.equal(stopped.text, plain.text.slice(0, at));
      assert.ok(stopped.tokenIds.length < plain.tokenIds.length);
      assert.deepEqual(stopped.tokenIds, plain.tokenIds.slice(0, stopped.tokenIds.length));
      // The tokens kept are those whose text lies wholly before the stop string: one more would reach into it.
      assert.ok((await tokenizer.decode(stopped.tokenIds)).length <= at);
      assert.ok((await tokenizer.decode(plain.tokenIds.slice(0, stopped.tokenIds.length + 1))).length > at);
      assert.equal(stopped.usage.completion_tokens, stopped.tokenIds.length);
      const beamStopped = completed(results.get('beam-stopped'), 'beam-stopped');
      assert.equal(beamStopped.finishReason, 'stop');
      assert.equal(beamStopped.text, beamPlain.text.slice(0, beamPlain.text.indexOf(beamStop)));
      // min_new_tokens: a stop string inside the first min_new_tokens tokens' text does not count.
      const held = completed((await t.run([job({ id: 'held', ...fields, stop: [stop] })])).get('held'), 'held');
      assert.equal(held.finishReason, 'length');
      assert.equal(held.text, plain.text);
    } finally {
      await t.close();
    }
  });

  it('streaming: `enqueue --wait --stream` prints the text as it grows, never the results file', { timeout: 180_000 }, async () => {
    // The CLI uses BullMQ's default key prefix.
    const t = setup({ prefix: null });
    t.worker.start();
    const queue = new Queue('genqueue', { connection });
    const work = mkdtempSync(join(tmpdir(), 'genqueue-stream-'));
    try {
      // The queue is paused until the CLI listens for events, so that every update reaches it as an event.
      await queue.pause();
      const file = join(work, 'jobs.jsonl');
      const lines = [
        { id: 'stream-1', prompt: 'A long story begins', max_new_tokens: 64, min_new_tokens: 64, stream: true, stop: ['\u0000never'] },
        { id: 'quiet-1', prompt: 'No streaming here', max_new_tokens: 8, decoding: 'sample', seed: '9007199254740993' },
      ];
      writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n'));
      const out = join(work, 'results.jsonl');
      const cli = new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile(process.execPath, [CLI, 'enqueue', file, '--wait', '--stream', '--out', out, '--timeout-ms', '120000'], { env: { ...process.env, REDIS_URL: redis.url } }, (e, _stdout, stderr) =>
          resolve({ code: e ? Number(e.code ?? 1) : 0, stderr }),
        );
      });
      // The collector's QueueEvents blocks on XREAD once it listens.
      await eventually('the CLI listening for events', async () => ((await connection.client('LIST')) as string).includes('cmd=xread') || undefined);
      await queue.resume();
      const { code, stderr } = await cli;
      assert.equal(code, 0, stderr);
      const streamed = stderr.split('\n').filter((l) => l.startsWith('stream-1: ')).map((l) => JSON.parse(l.slice('stream-1: '.length)) as string);
      assert.ok(streamed.length >= 2, `several updates, got ${streamed.length}:\n${stderr}`);
      assert.ok(!stderr.includes('quiet-1: '), 'a job without stream publishes nothing');
      const results = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; text: string; tokenIds: number[]; seed?: string });
      assert.deepEqual(results.map((r) => r.id).sort(), ['quiet-1', 'stream-1']);
      assert.equal(results.find((r) => r.id === 'quiet-1')!.seed, '9007199254740993', 'the output line carries the seed');
      const final = results.find((r) => r.id === 'stream-1')!;
      assert.ok(final.text.startsWith(streamed.join('')), 'the updates add up to the start of the final text');
      assert.equal(final.tokenIds.length, 64);
    } finally {
      await queue.resume().catch(() => undefined);
      await queue.close();
      await t.close();
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('cancel: an active slot job ends as cancelled at a chunk boundary, its slot freed; the heartbeat shows slots in use', async () => {
    // A context of 1,024 positions: the job runs for seconds on this CPU, far longer than a cancel takes to arrive.
    const long = join(dir, 'long-context');
    writeRandomGpt2Checkpoint(join(long, 'checkpoint'), { layers: 2, heads: 4, embd: 32, positions: 1024, vocab: 50257, seed: 5, init: 0.2 });
    mkdirSync(join(long, 'built'));
    buildModel(join(long, 'checkpoint'), join(long, 'built'), { precision: 'fp32' });
    const longEngine = await ThreadedSlotEngine.open(join(long, 'built'), { device: CPU, slots: SLOTS, chunkSteps: 4, intraOpThreads: 1 });
    const t = setup({ slotEngine: longEngine });
    t.worker.start();
    const canceller = new JobCanceller({ connection, prefix: t.prefix });
    const eventsConnection = connection.duplicate();
    const events = new QueueEvents('genqueue', { connection: eventsConnection, prefix: t.prefix });
    try {
      await events.waitUntilReady();
      const streaming = new Promise<void>((resolve) => events.on('progress', ({ jobId }) => jobId === 'long' && resolve()));
      const placed = await t.producer.enqueueJobs([job({ id: 'long', prompt: 'Go on and on', max_new_tokens: 1000, min_new_tokens: 1000, stream: true })]);
      await streaming;
      const fleet = await readFleet(connection, t.prefix);
      const me = fleet.find((m) => m.workerId === t.worker.workerId);
      assert.equal(me?.slots, SLOTS);
      assert.equal(typeof me?.slotsInUse, 'number');
      assert.deepEqual(await canceller.cancel(placed), { removed: 0, marked: 1, finished: 0, missing: 0 });
      const results = await t.results(placed);
      assert.deepEqual(results.get('long'), { id: 'long', status: 'cancelled' });
      const failed = await Job.fromId(new Queue('genqueue', { connection, prefix: t.prefix }), 'long');
      assert.equal(failed?.failedReason, 'cancelled');
      assert.equal(failed?.attemptsMade, 1, 'a cancelled job is not tried again');
      // The engine ended it (the cancel reached it before its 1,000 tokens), freeing the slot.
      const stats = await longEngine.stats();
      assert.deepEqual([stats.cancelled, stats.completed, stats.busy, stats.deviceRunning], [1, 0, 0, 0], JSON.stringify(stats));
    } finally {
      await events.close();
      eventsConnection.disconnect();
      await canceller.close();
      await t.close();
      await longEngine.close();
    }
  });

  it('beam jobs are answered by the search ops, opened on the first one', async () => {
    const t = setup();
    t.worker.start();
    try {
      const beam = job({ id: 'beam', prompt: 'Hello world', max_new_tokens: 8, decoding: 'beam', num_beams: 3 });
      const r = completed((await t.run([beam])).get('beam'), 'beam');
      assert.ok(searchOps.isOpen);
      const direct = await Generator.open(dir, { device: CPU });
      try {
        const expected = (await direct.generate([generationRequestFor(beam, r.promptTokenIds)])).results[0] as { tokenIds: number[] };
        assert.deepEqual(r.tokenIds, expected.tokenIds);
      } finally {
        await direct.close();
      }
    } finally {
      await t.close();
    }
  });
});

describe('the worker process and the CLI on the slot engine (CPU provider)', { skip }, () => {
  let redis: TestRedis;
  let work: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    redis = await startTestRedis();
    work = mkdtempSync(join(tmpdir(), 'genqueue-slot-cli-'));
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(work, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'warn' };
  });
  after(async () => {
    await redis.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('startWorker on slots: every slot warmed through the graph capture and per warm-up length; slot metrics with real first tokens', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const config = loadConfig({ env: { REDIS_URL: redis.url, GENQUEUE_CACHE_DIR: join(work, 'cache') } });
    const model = await resolveModelArg(fixturePath('gpt2-tiny'), config);
    const started = await startWorker(config, { ...model, name: 'tiny' }, { device: 'cpu', engine: 'slots', slots: 3, warmupLengths: [12], prefix: 'warm' }, logger);
    try {
      assert.equal(started.slotEngine?.limits.slots, 3);
      const warmed = lines.map((l) => JSON.parse(l) as { msg: string; promptTokens: number; newTokens: number; slots: number }).filter((l) => l.msg === 'warmed up');
      assert.deepEqual(warmed.map((l) => [l.promptTokens, l.newTokens, l.slots]), [[1, 33, 3], [6, 6, 3]]);
      const producer = new JobProducer({ connection: redis.connection, prefix: 'warm' });
      const placed = await producer.enqueueJobs([job({ id: 'w-1', prompt: 'Hello', max_new_tokens: 40 }), job({ id: 'w-2', prompt: 'Hi', max_new_tokens: 3 })]);
      await producer.close();
      for await (const r of new ResultCollector({ connection: redis.connection, prefix: 'warm' }).collect(placed, { wait: true, timeoutMs: 60_000 })) {
        assert.equal(r.status, 'completed');
      }
      const metrics = await started.worker.metrics.registry.metrics();
      assert.match(metrics, /genqueue_slots\{[^}]*\} 3/);
      assert.match(metrics, /genqueue_slots_in_use\{[^}]*\} 0/);
      assert.match(metrics, /genqueue_time_to_first_token_seconds_count\{[^}]*\} 2/);
      assert.match(metrics, /genqueue_generated_tokens_total\{[^}]*\} 43/);
    } finally {
      await started.close();
    }
  });

  it('generate --seed: the same seed gives the same tokens in any company; --stop cuts the text; a prompt beyond a slot says both numbers', async () => {
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [CLI, 'generate', '--model', fixturePath('gpt2-tiny'), '--device', 'cpu', '--engine', 'slots', ...args], { env }, (e, stdout, stderr) =>
          resolve({ code: e ? Number(e.code ?? 1) : 0, stdout, stderr }),
        ),
      );
    const sample = ['--decoding', 'sample', '--temperature', '1.2', '--max-new-tokens', '24', '--json'];
    const alone = await cli(['--prompt', 'The weather today', '--seed', '12345', ...sample]);
    assert.equal(alone.code, 0, alone.stderr);
    const line = JSON.parse(alone.stdout) as { tokenIds: number[]; seed: number; text: string };
    assert.equal(line.seed, 12345);
    const prompts = join(work, 'prompts.jsonl');
    writeFileSync(prompts, ['{"prompt": "Other company first", "seed": 1}', '{"prompt": "The weather today"}', '{"prompt": "And a greedy one", "decoding": "greedy"}'].join('\n'));
    const together = await cli(['--prompts-file', prompts, '--seed', '12345', '--slots', '2', ...sample]);
    assert.equal(together.code, 0, together.stderr);
    const lines = together.stdout.trim().split('\n').map((l) => JSON.parse(l) as { prompt: string; tokenIds: number[]; seed?: number });
    assert.deepEqual(lines.map((l) => l.prompt), ['Other company first', 'The weather today', 'And a greedy one'], 'printed in input order');
    assert.deepEqual(lines[1]!.tokenIds, line.tokenIds);
    assert.equal(lines[0]!.seed, 1);
    assert.equal(lines[2]!.seed, undefined);
    const other = JSON.parse((await cli(['--prompt', 'The weather today', '--seed', '12346', ...sample])).stdout) as { tokenIds: number[] };
    assert.notDeepEqual(other.tokenIds, line.tokenIds);
    const stop = line.text.slice(6, 9);
    const cut = JSON.parse((await cli(['--prompt', 'The weather today', '--seed', '12345', '--stop', stop, ...sample])).stdout) as { text: string; finishReason: string };
    assert.deepEqual([cut.text, cut.finishReason], [line.text.slice(0, line.text.indexOf(stop)), 'stop']);
    const tooLong = await cli(['--prompt', 'Hello world', '--max-new-tokens', '200']);
    assert.equal(tooLong.code, 1);
    assert.match(tooLong.stderr, /prompt \(2 tokens\) \+ max_new_tokens \(200\) = 202 exceeds the model's context length 128/);
    const refused = await cli(['--prompt', 'x', '--decoding', 'sample', '--seed', '-1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--prompt: seed: /);
  });
});

describe('job fields for the slot engine, refused at enqueue naming the field', () => {
  it('a slot holds the model\'s context by default, at most 4,096 positions; worker.slotCapacity and --slots win', () => {
    const config = loadConfig({ env: {} });
    const manifest = (contextLength: number) => ({ spec: { contextLength } }) as unknown as ModelManifest;
    const warn = () => {};
    assert.equal(slotEngineOptions(config.worker, manifest(1024), CPU, undefined, warn).capacity, 1024);
    assert.equal(slotEngineOptions(config.worker, manifest(131_072), CPU, undefined, warn).capacity, 4096);
    const set = slotEngineOptions({ ...config.worker, slotCapacity: 20_000, slots: 64, chunkSteps: 8 }, manifest(131_072), CPU, 32, warn);
    assert.deepEqual([set.capacity, set.slots, set.chunkSteps, set.prefillChunk], [20_000, 32, 8, undefined]);
  });

  it('a prompt beyond a slot smaller than the context names the slot capacity and the context length', () => {
    assert.equal(
      slotRefusal(new SlotCapacityError(100, 50, 96), 128),
      'prompt (100 tokens) + max_new_tokens (50) = 150 exceeds the slot capacity 96 (worker.slotCapacity; the model\'s context length is 128)',
    );
    assert.equal(slotRefusal(new SlotCapacityError(100, 50, 128), 128), "prompt (100 tokens) + max_new_tokens (50) = 150 exceeds the model's context length 128");
  });

  it('seed, top_p, temperature with sampling, stop', () => {
    const error = (fields: Record<string, unknown>): string => {
      const p = parseJob({ prompt: 'p', ...fields });
      return p.ok ? 'accepted' : p.error;
    };
    assert.equal(error({ decoding: 'sample', seed: 0, top_p: 1, temperature: 0.5, stop: ['\n\n'], stream: true }), 'accepted');
    assert.equal(error({ seed: '9223372036854775807' }), 'accepted');
    assert.match(error({ seed: -1 }), /^seed: /);
    assert.match(error({ seed: '9223372036854775808' }), /^seed: must be at most 2\^63 - 1/);
    assert.match(error({ seed: 2 ** 60 }), /^seed: .*decimal string/);
    assert.match(error({ decoding: 'sample', top_p: 0 }), /^top_p: /);
    assert.match(error({ decoding: 'sample', top_p: 1.5 }), /^top_p: /);
    assert.match(error({ decoding: 'sample', temperature: 0 }), /^temperature: /);
    assert.match(error({ decoding: 'sample', temperature: -1 }), /^temperature: /);
    assert.match(error({ stop: ['a', ''] }), /^stop\.1: must not be empty/);
  });
});
