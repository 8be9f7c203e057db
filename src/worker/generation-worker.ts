import { hostname } from 'node:os';
import { type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Logger } from 'pino';
import { type GenerationBatchResult, type GenerationRequest, type GenerationResult, searchKey } from '../engine/generation-types.js';
import { SlotRequestError } from '../engine/slot-errors.js';
import type { SlotGenerationEngine } from '../engine/slot-types.js';
import type { TextGenerationEngine } from '../engine/text-generation-engine.js';
import { CANCELLED_REASON, CancelMarks } from '../queue/cancel-marks.js';
import { contentFailureReason } from '../queue/failure-reasons.js';
import { DEFAULT_MAX_PROMPT_CHARS, type JobData, JobInput, describeZodError, promptLengthError } from '../queue/job-schema.js';
import { queueNameFor, DEFAULT_QUEUE, keyPrefix } from '../queue/queue-names.js';
import { type RedisConnection, closeRedis, duplicateConnection, disconnectAll, reportErrors, settlesWithin } from '../queue/redis-connection.js';
import type { JobRef } from '../queue/result-collector.js';
import { type JobResult, usageOf } from '../queue/result-schema.js';
import { ChatTemplateError } from '../tokenizer/chat-template.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { BatchCollector } from './batch-collector.js';
import { FleetHeartbeat } from './fleet-heartbeat.js';
import { generationRequestFor, runsOnSlots, seedForResult } from './job-request.js';
import { generateSplittingOnOom } from './out-of-memory.js';
import { SlotScheduler, type SlotOutcome, slotRefusal } from './slot-scheduler.js';
import { StopSequences, applyStops } from './stop-sequences.js';
import { WorkerMetrics } from './worker-metrics.js';
import { WorkerStats } from './worker-stats.js';

export interface GenerationWorkerOptions {
  readonly connection: RedisConnection;
  /** The search ops (batches): every job without a slot engine, beam jobs with one. */
  readonly engine: TextGenerationEngine;
  /**
   * Continuous batching: greedy and sampling jobs run on this engine's slots (SlotScheduler), each completed the
   * moment it ends; BullMQ then holds up to slots + slotPrefetch jobs per queue, and maxBatch applies to beam jobs.
   */
  readonly slotEngine?: SlotGenerationEngine;
  /** Jobs per queue taken beyond the slots, ready to join at the next boundary (default max(4, ⌈slots / 4⌉)). */
  readonly slotPrefetch?: number;
  /** A streaming job (`stream: true`) publishes its text every this many tokens (default 16). */
  readonly streamEveryTokens?: number;
  /** Slot jobs' cancel marks are read at chunk boundaries at most this often (default CANCEL_POLL_MS). */
  readonly cancelPollMs?: number;
  readonly tokenizer: TextTokenizer;
  /** The name jobs use to ask for this model; the worker also serves jobs that name no model. */
  readonly modelName: string;
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  /**
   * Jobs BullMQ may hold active at once per queue (default 2 × maxBatch, so the next batch collects while one
   * runs; measured in bench/results; with a slot engine, slots + slotPrefetch), split evenly across that queue's
   * fetchers.
   */
  readonly concurrency?: number;
  /**
   * BullMQ Workers per queue (default max(2, ⌈maxBatch / 64⌉)), each with its own connection: a Worker takes jobs
   * one Redis round trip at a time, so several fill a large batch sooner (bench/results).
   */
  readonly fetchers?: number;
  readonly workerId?: string;
  /** Longer prompts fail before they are tokenized (config limits.maxPromptChars; default DEFAULT_MAX_PROMPT_CHARS). */
  readonly maxPromptChars?: number;
  readonly logger: Logger;
  /** BullMQ key prefix (tests isolate themselves with it); hash-tagged on a Cluster (keyPrefix). */
  readonly prefix?: string;
  /** A job's lock lasts this long unless renewed (every half of it); BullMQ's default (30 s) when unset. */
  readonly lockDurationMs?: number;
  /** How often this worker looks for jobs whose lock expired; BullMQ's default (30 s) when unset. */
  readonly stalledIntervalMs?: number;
}

export interface ShutdownReport {
  /** The deadline passed before BullMQ had recorded every job (Redis out of reach): the connections were cut. */
  readonly forced: boolean;
  /** Jobs this worker took whose outcome Redis never got: stalled-job recovery returns them to the queue. */
  readonly abandoned: number;
}

/** A partial batch waits for jobs still in Redis only if Redis says so this quickly (it answers in about 1 ms). */
const WAITING_PROBE_TIMEOUT_MS = 250;
/** How long the cancel check at a batch's end waits for Redis. */
const CANCEL_CHECK_TIMEOUT_MS = 1_000;
const DEFAULT_STREAM_EVERY_TOKENS = 16;

/**
 * Jobs a queue holds beyond the slot engine's slots: a chunk boundary frees about slots × chunkSteps / (mean job
 * length) slots at once (~32 of 256 for jobs of ~130 tokens), and jobs already taken and tokenized fill them without
 * waiting for Redis; more would only keep jobs from other workers.
 */
export function defaultSlotPrefetch(slots: number): number {
  return Math.max(4, Math.ceil(slots / 4));
}

interface BatchItem {
  readonly request: GenerationRequest;
}

interface BatchOutcome {
  readonly result: GenerationResult;
  readonly text: string;
  readonly generateMs: number;
  readonly batchSize: number;
}

/**
 * Jobs batch together when they may share a run (searchKey) and their max_new_tokens fall in the same
 * power-of-two bucket: a run lasts as long as its longest job, so mixing 32- and 256-token jobs wastes most
 * of the short ones' rows (bucketing doubled throughput on a mixed workload in bench/results).
 */
export function batchKey(request: GenerationRequest): string {
  return `${searchKey(request)}|${Math.ceil(Math.log2(request.maxNewTokens))}`;
}

/**
 * A job's content is wrong: retrying cannot help, so BullMQ fails it at once with this message, marked as a content
 * failure (contentFailureReason) for the collector.
 */
class JobContentError extends UnrecoverableError {
  constructor(message: string) {
    super(contentFailureReason(message));
  }
}

/** The job was cancelled (JobCanceller) while it ran: it fails at once, with the reason the collector looks for. */
export class JobCancelledError extends UnrecoverableError {
  constructor() {
    super(CANCELLED_REASON);
  }
}

/**
 * Takes jobs from the shared queue and this model's queue and tokenizes each. With a slot engine, greedy and sampling
 * jobs go to it (SlotScheduler: continuous batching, each job answered when it ends). Other jobs go to a
 * BatchCollector and are answered from one batched graph run; each queue may hold twice a batch of jobs active (by
 * default), so a full batch runs while the next one collects. The engines run in worker threads, so lock renewal
 * continues during a run.
 */
export class GenerationWorker {
  readonly workerId: string;
  readonly stats = new WorkerStats();
  /** Prometheus metrics, fed where `stats` is. */
  readonly metrics: WorkerMetrics;
  readonly queues: string[];
  private readonly workers: Worker[] = [];
  private readonly waitingProbes: Queue[] = [];
  /** Jobs between BullMQ handing them over and their result (waiting in the collector or running). */
  private inFlight = 0;
  private readonly concurrency: number;
  /** BullMQ Workers per queue. */
  readonly fetchers: number;
  private readonly connections: RedisConnection[] = [];
  private readonly prefix: string;
  private readonly collector: BatchCollector<BatchItem, BatchOutcome>;
  private readonly heartbeat: FleetHeartbeat;
  /** Jobs BullMQ took from Redis (some maybe not handed to process() yet) whose outcome Redis has not confirmed (queue + id). */
  private readonly held = new Set<string>();
  private stopping = false;
  private closing: Promise<ShutdownReport> | undefined;
  /** Resolves shutdown's wait for the jobs already taken. */
  private idleWaiter: (() => void) | undefined;
  private readonly cancelMarks: CancelMarks;
  /** Greedy and sampling jobs on the slot engine, when the worker has one. */
  private readonly slots: SlotScheduler | undefined;
  /** Tokens and busy time of slot jobs already added to stats. */
  private slotBusyRecorded = 0;

  constructor(private readonly options: GenerationWorkerOptions) {
    const device = options.slotEngine?.device ?? options.engine.device;
    this.workerId = options.workerId ?? `${hostname()}:${process.pid}:${device}`;
    this.queues = [DEFAULT_QUEUE, queueNameFor(options.modelName)];
    this.metrics = new WorkerMetrics({ worker: this.workerId, model: options.modelName, device });
    const slotCount = options.slotEngine?.limits.slots;
    const perQueue = slotCount === undefined ? 2 * options.maxBatch : slotCount + (options.slotPrefetch ?? defaultSlotPrefetch(slotCount));
    this.concurrency = (options.concurrency ?? perQueue) * this.queues.length;
    // More BullMQ Workers per queue take a big batch's jobs from Redis in parallel; past two, the measured gains
    // were inside the run-to-run spread (bench/results), so a mild rule: one per 64 of batch (or slots), at least 2.
    this.fetchers = options.fetchers ?? Math.max(2, Math.ceil((slotCount ?? options.maxBatch) / 64));
    if (options.slotEngine) {
      this.slots = new SlotScheduler({
        engine: options.slotEngine,
        tokenizer: options.tokenizer,
        streamEveryTokens: options.streamEveryTokens ?? DEFAULT_STREAM_EVERY_TOKENS,
        cancelled: (refs) => Promise.all(refs.map((r) => this.isCancelled(r))),
        ...(options.cancelPollMs === undefined ? {} : { cancelPollMs: options.cancelPollMs }),
        onWarning: (message) => options.logger.warn(message),
      });
      this.metrics.setSlots(options.slotEngine.limits.slots, () => this.slots?.slotsInUse ?? 0);
    }
    this.collector = new BatchCollector<BatchItem, BatchOutcome>({
      maxBatch: options.maxBatch,
      maxWaitMs: options.maxWaitMs,
      run: (items, release) => this.runBatch(items, release),
      moreComing: () => this.jobsWaiting(),
    });
    this.prefix = keyPrefix(options.connection, options.prefix);
    this.cancelMarks = new CancelMarks(options.connection, this.prefix);
    this.heartbeat = new FleetHeartbeat(
      options.connection,
      () => ({
        workerId: this.workerId,
        model: options.modelName,
        device,
        queues: this.queues,
        maxBatch: options.maxBatch,
        ...(this.slots && slotCount !== undefined ? { slots: slotCount, slotsInUse: this.slots.slotsInUse } : {}),
        pid: process.pid,
        host: hostname(),
      }),
      () => this.stats.snapshot(),
      undefined,
      this.prefix,
    );
  }

  start(): void {
    const fetchers = this.fetchers;
    const concurrency = this.concurrency / this.queues.length;
    for (const name of this.queues) {
      for (let f = 0; f < fetchers; f++) {
        const connection = duplicateConnection(this.options.connection);
        this.connections.push(connection);
        const { lockDurationMs, stalledIntervalMs } = this.options;
        const worker = new Worker(name, (job: Job) => this.process(job), {
          connection,
          concurrency: Math.ceil(concurrency / fetchers),
          prefix: this.prefix,
          // BullMQ merges these over its defaults, so an unset one must be absent rather than undefined.
          ...(lockDurationMs === undefined ? {} : { lockDuration: lockDurationMs }),
          ...(stalledIntervalMs === undefined ? {} : { stalledInterval: stalledIntervalMs }),
        });
        worker.on('active', (job) => this.held.add(`${name}:${job.id}`));
        worker.on('failed', (job, err) => {
          if (job) this.held.delete(`${name}:${job.id}`);
          // An attempt that BullMQ tries again (a transient error, attempts left) is not a failed job.
          const retried = job !== undefined && !(err instanceof UnrecoverableError) && job.attemptsMade < (job.opts.attempts ?? 1);
          if (!retried) {
            this.stats.recordJob(false);
            this.metrics.recordFailed();
          }
          this.options.logger.warn({ jobId: job?.id, err: err.message, attemptsMade: job?.attemptsMade }, retried ? 'job attempt failed, will retry' : 'job failed');
        });
        worker.on('completed', (job, result: JobResult | undefined) => {
          this.held.delete(`${name}:${job.id}`);
          this.stats.recordJob(true);
          if (result?.timings) this.metrics.recordCompleted(result.timings, result.timings.firstTokenAt);
        });
        reportErrors(worker, connection, `worker ${name}`);
        this.workers.push(worker);
      }
      const probe = new Queue(name, { connection: this.options.connection, prefix: this.prefix });
      reportErrors(probe, this.options.connection, `queue ${name}`);
      this.waitingProbes.push(probe);
    }
    this.heartbeat.start();
    this.options.logger.info(
      { workerId: this.workerId, queues: this.queues, device: this.options.slotEngine?.device ?? this.options.engine.device, slots: this.options.slotEngine?.limits.slots },
      'worker started',
    );
  }

  /**
   * Stops taking jobs and lets the jobs already taken run to the end of their batch (the engine needs no Redis).
   * BullMQ then has timeoutMs to record their outcomes and close; past that (Redis out of reach: BullMQ would
   * wait for it for ever), every connection is cut and the jobs not recorded are abandoned to stalled-job
   * recovery. The engine is the caller's to close.
   */
  close(timeoutMs = Infinity): Promise<ShutdownReport> {
    this.closing ??= this.shutdown(timeoutMs);
    return this.closing;
  }

  private async shutdown(timeoutMs: number): Promise<ShutdownReport> {
    this.stopping = true;
    const heartbeatStopped = this.heartbeat.stop();
    const workersClosed = Promise.allSettled(this.workers.map((w) => w.close()));
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idleWaiter = resolve));
    const released = (async () => {
      await workersClosed;
      this.collector.close();
      await Promise.allSettled(this.waitingProbes.map((q) => q.close()));
      await heartbeatStopped;
      await Promise.all(this.connections.map((c) => closeRedis(c)));
    })();
    if (await settlesWithin(released, timeoutMs)) return { forced: false, abandoned: 0 };
    const abandoned = this.held.size;
    // BullMQ's own duplicates of our connections are reachable only this way.
    disconnectAll(this.options.connection);
    this.collector.close();
    return { forced: true, abandoned };
  }

  private async process(job: Job): Promise<JobResult> {
    this.inFlight++;
    try {
      return await this.answer(job);
    } finally {
      if (--this.inFlight === 0) this.idleWaiter?.();
    }
  }

  /**
   * Whether the job was cancelled (JobCanceller marks an active job in Redis). Asked when a job's batch ends; a
   * scheduler that can drop a job between steps may ask it at each step. Questions asked together share one round
   * trip.
   */
  async isCancelled(job: JobRef): Promise<boolean> {
    // Unanswered (Redis out of reach) counts as not cancelled: a batch's end must not wait on Redis, least of all
    // at shutdown, whose deadline then decides what happens to the job.
    let marked = false;
    await settlesWithin(this.cancelMarks.isMarked(job).then((m) => (marked = m)), CANCEL_CHECK_TIMEOUT_MS);
    return marked;
  }

  private async answer(job: Job): Promise<JobResult> {
    const startedAt = Date.now();
    const ref = { id: String(job.id), queue: job.queueName };
    const parsed = JobInput.safeParse(job.data);
    if (!parsed.success) throw new JobContentError(`invalid job data: ${describeZodError(parsed.error)}`);
    const data = parsed.data;
    // A job put in this worker's queues by hand (or by a foreign producer) may still name another model.
    if (data.model !== undefined && data.model !== this.options.modelName) {
      throw new JobContentError(`job asks for model "${data.model}" but this worker serves "${this.options.modelName}"`);
    }
    const tooLong = promptLengthError(data, this.options.maxPromptChars ?? DEFAULT_MAX_PROMPT_CHARS);
    if (tooLong) throw new JobContentError(tooLong);
    const t0 = performance.now();
    let encoded;
    try {
      [encoded] = await this.options.tokenizer.encodeJobs([data]);
    } catch (e) {
      // A messages job for a model without a chat template (or one its template rejects): the job's content.
      if (e instanceof ChatTemplateError) throw new JobContentError(e.message);
      throw e;
    }
    const { text: prompt, ids: promptTokenIds } = encoded!;
    const tokenizeMs = performance.now() - t0;
    if (this.slots && runsOnSlots(data)) return this.answerOnSlots(job, data, { prompt, promptTokenIds, startedAt, tokenizeMs });
    const request = generationRequestFor(data, promptTokenIds);
    let outcome: BatchOutcome;
    try {
      outcome = await this.collector.submit(batchKey(request), { request });
    } catch (e) {
      // A cancelled job ends as cancelled even when its batch failed (it must not be retried).
      if (await this.isCancelled(ref)) throw new JobCancelledError();
      if (e instanceof JobContentError) throw e;
      throw new Error(`generation failed: ${(e as Error).message}`);
    }
    // A job cancelled while its batch ran never completes: its text is dropped.
    if (await this.isCancelled(ref)) throw new JobCancelledError();
    // The search ops know nothing of stop strings: the finished text is cut at the first one here.
    const { tokenIds, text, stopped } = data.stop?.length
      ? await applyStops(this.options.tokenizer, new StopSequences(data.stop), { tokenIds: outcome.result.tokenIds, text: outcome.text }, data.min_new_tokens)
      : { tokenIds: outcome.result.tokenIds, text: outcome.text, stopped: false };
    const finishedAt = Date.now();
    return {
      // The BullMQ id is the one results are looked up by; data.id could say anything.
      id: String(job.id),
      model: this.options.modelName,
      prompt,
      promptTokenIds,
      tokenIds,
      text,
      finishReason: stopped ? 'stop' : outcome.result.finishReason,
      timings: {
        queuedAt: job.timestamp,
        startedAt,
        finishedAt,
        tokenizeMs,
        generateMs: outcome.generateMs,
        batchSize: outcome.batchSize,
        tokensPerSecond: outcome.generateMs > 0 ? (tokenIds.length * 1000) / outcome.generateMs : 0,
        workerId: this.workerId,
        device: this.options.engine.device,
      },
      usage: usageOf(promptTokenIds.length, tokenIds.length),
      ...(data.metadata ? { metadata: data.metadata } : {}),
    };
  }

  /**
   * A greedy or sampling job on the slot engine: submitted now, completed as soon as it ends. A job the engine
   * refuses (its prompt does not fit a slot, a field out of range) fails alone, taking no slot.
   */
  private async answerOnSlots(
    job: Job,
    data: JobData,
    p: { prompt: string; promptTokenIds: number[]; startedAt: number; tokenizeMs: number },
  ): Promise<JobResult> {
    const ref = { id: String(job.id), queue: job.queueName };
    let outcome: SlotOutcome;
    try {
      outcome = await this.slots!.run({
        ref,
        data,
        promptTokenIds: p.promptTokenIds,
        ...(data.stream ? { publish: (progress) => job.updateProgress({ ...progress }) } : {}),
      });
    } catch (e) {
      if (e instanceof SlotRequestError) throw new JobContentError(slotRefusal(e, this.options.engine.manifest.spec.contextLength));
      if (await this.isCancelled(ref)) throw new JobCancelledError();
      throw new Error(`generation failed: ${(e as Error).message}`);
    }
    this.recordSlotJob(outcome.tokenIds.length);
    // Cancelled at a boundary, or marked after the last look: it never completes (as a batch job would not).
    if (outcome.finishReason === 'cancelled' || (await this.isCancelled(ref))) throw new JobCancelledError();
    const t = outcome.timings;
    const generateMs = t.totalMs - t.queueMs;
    return {
      id: ref.id,
      model: this.options.modelName,
      prompt: p.prompt,
      promptTokenIds: p.promptTokenIds,
      tokenIds: outcome.tokenIds,
      text: outcome.text,
      finishReason: outcome.finishReason,
      ...(outcome.seed === undefined ? {} : { seed: seedForResult(outcome.seed) }),
      timings: {
        queuedAt: job.timestamp,
        startedAt: p.startedAt,
        finishedAt: Date.now(),
        tokenizeMs: p.tokenizeMs,
        generateMs,
        batchSize: this.options.slotEngine!.limits.slots,
        tokensPerSecond: generateMs > 0 ? (outcome.tokenIds.length * 1000) / generateMs : 0,
        workerId: this.workerId,
        device: this.options.slotEngine!.device,
        ...(outcome.firstTokenAt === undefined ? {} : { firstTokenAt: outcome.firstTokenAt }),
      },
      usage: usageOf(p.promptTokenIds.length, outcome.tokenIds.length),
      ...(data.metadata ? { metadata: data.metadata } : {}),
    };
  }

  /** A slot job's tokens, with the engine's busy time since the last one, into stats and metrics. */
  private recordSlotJob(tokens: number): void {
    const busy = this.slots!.busyMilliseconds();
    const ms = busy - this.slotBusyRecorded;
    this.slotBusyRecorded = busy;
    this.stats.recordTokens(tokens, ms);
    this.metrics.recordTokens(tokens);
  }

  /**
   * Jobs still waiting in Redis that this worker can still take (it has free BullMQ slots): a partial batch
   * should wait for them. With every slot busy, nothing more can join, so it must not wait.
   */
  private async jobsWaiting(): Promise<boolean> {
    if (this.stopping || this.inFlight >= this.concurrency) return false;
    // Unanswered (Redis out of reach) counts as no: the batch must not wait on Redis, least of all at shutdown.
    // Jobs with a priority wait in their own set, which getWaitingCount() does not count.
    let waiting = false;
    const probe = Promise.all(this.waitingProbes.map((q) => q.getJobCountByTypes('waiting', 'prioritized'))).then(
      (counts) => (waiting = counts.some((n) => n > 0)),
    );
    await settlesWithin(probe, WAITING_PROBE_TIMEOUT_MS);
    return waiting;
  }

  private async runBatch(items: BatchItem[], release: () => void): Promise<(BatchOutcome | Error)[]> {
    const parts = await generateSplittingOnOom(
      (requests) => this.options.engine.generate(requests),
      items.map((i) => i.request),
      (size, e) => this.options.logger.warn({ batchSize: size, err: e.message }, 'out of device memory: running the batch in halves'),
    );
    // The GPU is free: let the next batch start while this one's text is decoded and its jobs completed.
    release();
    const outcomes: (BatchOutcome | Error)[] = [];
    for (const part of parts) {
      if ('error' in part) outcomes.push(...Array.from({ length: part.size }, () => part.error));
      else outcomes.push(...(await this.outcomesOf(part.batch)));
    }
    return outcomes;
  }

  /** One outcome per request of a batch that ran: its text, or the engine's reason for refusing the request. */
  private async outcomesOf({ results, timings }: GenerationBatchResult): Promise<(BatchOutcome | Error)[]> {
    const ok = results.flatMap((r) => ('error' in r ? [] : [r]));
    const texts = await this.options.tokenizer.decodeBatch(ok.map((r) => r.tokenIds));
    const tokens = ok.reduce((a, r) => a + r.tokenIds.length, 0);
    this.stats.recordBatch(results.length, tokens, timings.generateMs);
    this.metrics.recordBatch(results.length, tokens, timings.generateMs);
    let k = 0;
    return results.map((r) =>
      'error' in r
        ? new JobContentError(r.error)
        : { result: r, text: texts[k++]!, generateMs: timings.generateMs, batchSize: timings.batchSize },
    );
  }
}
