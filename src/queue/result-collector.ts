import { QueueEvents } from 'bullmq';
import { z } from 'zod';
import { CANCELLED_REASON, execOrThrow } from './cancel-marks.js';
import { readFailureReason } from './failure-reasons.js';
import { JsonlLines } from './jsonl-lines.js';
import { JobId } from './job-schema.js';
import { cancelMarksKey, jobKey, keyPrefix, queueKey, queueNameFor } from './queue-names.js';
import { type RedisConnection, duplicateConnection, reportErrors } from './redis-connection.js';
import { JobResult } from './result-schema.js';

export interface JobRef {
  readonly id: string;
  readonly queue: string;
}

/** The job's `metadata` (failed and cancelled jobs still in Redis; a completed job's is in its result). */
type WithMetadata = { readonly metadata?: Record<string, unknown> };

export type CollectedResult =
  | { readonly id: string; readonly status: 'completed'; readonly result: JobResult }
  /** content: the worker refused the job for its content (invalid, too long, another model): retrying cannot help. */
  | ({ readonly id: string; readonly status: 'failed'; readonly error: string; readonly content?: true } & WithMetadata)
  /** Cancelled (JobCanceller): failed by its worker with the reason "cancelled", or removed while it waited. */
  | ({ readonly id: string; readonly status: 'cancelled' } & WithMetadata)
  | { readonly id: string; readonly status: 'pending' }
  /** Not in Redis: never enqueued, removed, or lost (evicted, flushed, Redis restarted without persistence). */
  | { readonly id: string; readonly status: 'missing'; readonly error: string };

export interface CollectOptions {
  /** Wait until every job has finished (or timeoutMs passes; the rest are then reported as pending). */
  readonly wait: boolean;
  readonly timeoutMs?: number;
  /**
   * While waiting, how often job states are read again (default 5 s, more for many outstanding jobs): events
   * can be missed (BullMQ trims the events stream; Redis may restart empty), and a job that vanishes sends none.
   */
  readonly recheckMs?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /**
   * With wait: a job's progress as its worker publishes it (a streaming job's text so far, StreamProgress), for the
   * jobs still outstanding. Progress events are not re-read: one trimmed from the events stream is not reported.
   */
  readonly onPartial?: (ref: JobRef, progress: unknown) => void;
}

const IdLine = z.object({ id: JobId, queue: z.string().optional(), model: z.string().optional() }).passthrough();

/** Job references from a JSONL file whose lines carry "id" (an enqueue input file, or --ids-out output). */
export async function readJobRefs(path: string): Promise<JobRef[]> {
  const refs: JobRef[] = [];
  for await (const { lineNumber, value } of new JsonlLines(path)) {
    if (!value.ok) throw new Error(`${path}:${lineNumber}: ${value.error}`);
    const parsed = IdLine.safeParse(value.raw);
    if (!parsed.success) throw new Error(`${path}:${lineNumber}: needs an "id" string (${parsed.error.issues[0]?.message})`);
    refs.push({ id: parsed.data.id, queue: parsed.data.queue ?? queueNameFor(parsed.data.model) });
  }
  return refs;
}

/** A failed job's result from its BullMQ failed reason. */
function failure(id: string, failedReason: string): CollectedResult {
  const { error, content } = readFailureReason(failedReason);
  return { id, status: 'failed', error, ...(content ? { content } : {}) };
}

const keyOf = (queue: string, id: string): string => `${queue}\u0000${id}`;

/** A job's result before annotate() has looked at it. */
interface Settled {
  readonly ref: JobRef;
  readonly result: CollectedResult;
}

/** The metadata in a job's stored data, if it has any (data a foreign producer wrote may be anything). */
function metadataOf(data: string | null | undefined): Record<string, unknown> | undefined {
  if (!data) return undefined;
  try {
    const parsed = z.object({ metadata: z.record(z.string(), z.unknown()).optional() }).safeParse(JSON.parse(data));
    return parsed.success ? parsed.data.metadata : undefined;
  } catch {
    return undefined;
  }
}

/** Each job once, in first-seen order: a file may name the same job on several lines. */
export function distinctRefs<R extends JobRef>(refs: Iterable<R>): R[] {
  const byKey = new Map<string, R>();
  for (const r of refs) if (!byKey.has(keyOf(r.queue, r.id))) byKey.set(keyOf(r.queue, r.id), r);
  return [...byKey.values()];
}

const STATE_CHUNK = 500;
export const RECHECK_MS = 5_000;
/** A state sweep reads one small hash per outstanding job; spacing sweeps by 0.1 ms per job bounds their Redis load. */
const RECHECK_MS_PER_JOB = 0.1;

const MISSING = 'not in Redis: never enqueued, removed, or lost (evicted, flushed, or Redis restarted without persistence)';
const REMOVED = 'removed from the queue while the collector waited for it';

/** A worker's return value as a result line: anything that is not a JobResult is a failure, never a throw. */
function toResult(id: string, value: unknown): CollectedResult {
  const parsed = JobResult.safeParse(value);
  return parsed.success
    ? { id, status: 'completed', result: parsed.data }
    : { id, status: 'failed', error: `result does not match the result schema: ${parsed.error.issues[0]?.message}` };
}

function storedResult(id: string, stored: string): CollectedResult {
  let value: unknown;
  try {
    value = JSON.parse(stored);
  } catch (e) {
    return { id, status: 'failed', error: `result is not valid JSON (${(e as Error).message})` };
  }
  return toResult(id, value);
}

/**
 * Collects results of earlier jobs: exactly one result per distinct job, however the job ends (completed, failed,
 * missing, or pending when not waiting / past the timeout).
 *
 * Every job leaves the outstanding set and enters the outbox in one step (settle), and the generator runs until
 * it has yielded as many results as there are jobs; so results that arrive while the consumer is busy (a slow
 * output file) wait in the outbox and are never dropped. With wait, it subscribes to the queues' events before it
 * reads job states, so a job finishing in between is never missed, and it reads the states again every few
 * seconds, which catches what events cannot report: a job that vanished, or an event trimmed away before it was
 * read. States are read in pipelined chunks, so 100k ids stay quick.
 */
export class ResultCollector {
  private readonly prefix: string;

  constructor(private readonly options: { connection: RedisConnection; prefix?: string }) {
    this.prefix = keyPrefix(options.connection, options.prefix);
  }

  async *collect(refs: readonly JobRef[], options: CollectOptions): AsyncGenerator<CollectedResult> {
    const outstanding = new Map<string, JobRef>();
    for (const r of refs) if (!outstanding.has(keyOf(r.queue, r.id))) outstanding.set(keyOf(r.queue, r.id), r);
    const total = outstanding.size;
    const outbox: Settled[] = [];
    let wake: (() => void) | undefined;
    const settle = (ref: JobRef, result: CollectedResult): void => {
      if (!outstanding.delete(keyOf(ref.queue, ref.id))) return; // already settled (an event and a sweep both saw it)
      outbox.push({ ref, result });
      wake?.();
    };
    const settleEvent = (queue: string, jobId: string, result: () => CollectedResult): void => {
      const ref = outstanding.get(keyOf(queue, jobId));
      if (!ref) return;
      let r: CollectedResult;
      try {
        r = result();
      } catch (e) {
        r = { id: jobId, status: 'failed', error: `unreadable result: ${(e as Error).message}` };
      }
      settle(ref, r);
    };

    const events: QueueEvents[] = [];
    const eventConnections: RedisConnection[] = [];
    try {
      if (options.wait) {
        for (const name of new Set([...outstanding.values()].map((r) => r.queue))) {
          // QueueEvents blocks on XREAD, so each needs a connection of its own.
          const connection = duplicateConnection(this.options.connection);
          eventConnections.push(connection);
          // Read from the stream's position now, not from wherever its first XREAD lands ('$'): a job finishing
          // in between would otherwise be neither in the state sweep below nor in the events.
          const [newest] = await this.options.connection.xrevrange(queueKey(this.prefix, name, 'events'), '+', '-', 'COUNT', 1);
          const qe = new QueueEvents(name, { connection, prefix: this.prefix, lastEventId: newest?.[0] ?? '0-0' });
          events.push(qe);
          qe.on('completed', ({ jobId, returnvalue }) => settleEvent(name, jobId, () => toResult(jobId, returnvalue)));
          qe.on('failed', ({ jobId, failedReason }) => settleEvent(name, jobId, () => failure(jobId, failedReason)));
          qe.on('removed', ({ jobId }) => settleEvent(name, jobId, () => ({ id: jobId, status: 'missing', error: REMOVED })));
          const { onPartial } = options;
          if (onPartial) {
            qe.on('progress', ({ jobId, data }) => {
              const ref = outstanding.get(keyOf(name, jobId));
              if (ref) onPartial(ref, data);
            });
          }
          // A reader that stops (an event it cannot parse, a lost connection) is logged, and the state sweeps report.
          reportErrors(qe, connection, `queue events ${name}`);
        }
        await Promise.all(events.map((e) => e.waitUntilReady()));
      }

      const deadline = !options.wait ? -Infinity : options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
      // A job missing in one sweep while waiting is reported when the next sweep agrees: its completed event
      // (a job removed on completion) may still be on its way.
      let suspects = new Set<string>();
      let nextSuspects = new Set<string>();
      let sweep: JobRef[] = [...outstanding.values()];
      let swept = 0;
      let sweepAt = 0;
      let reported = 0;
      while (reported < total) {
        if (outbox.length > 0) {
          // splice() takes a chunk of the backlog at once, which keeps 100k completions linear (shift() per item is not).
          for (const r of await this.annotate(outbox.splice(0, STATE_CHUNK))) {
            reported++;
            options.onProgress?.(reported, total);
            yield r;
          }
          continue;
        }
        if (swept < sweep.length) {
          const chunk = sweep.slice(swept, swept + STATE_CHUNK).filter((r) => outstanding.has(keyOf(r.queue, r.id)));
          swept += STATE_CHUNK;
          const states = await this.states(chunk);
          // Progress published before the events were subscribed to (a streaming job's latest holds all its text).
          if (options.onPartial) await this.partials(chunk.filter((_, k) => states[k]!.status === 'pending'), options.onPartial);
          chunk.forEach((ref, k) => {
            const s = states[k]!;
            const key = keyOf(ref.queue, ref.id);
            if (options.wait && s.status === 'pending') return;
            if (options.wait && s.status === 'missing' && !suspects.has(key)) nextSuspects.add(key);
            else settle(ref, s);
          });
          if (swept >= sweep.length) {
            [suspects, nextSuspects] = [nextSuspects, new Set()];
            sweepAt = Date.now() + Math.max(options.recheckMs ?? RECHECK_MS, outstanding.size * RECHECK_MS_PER_JOB);
          }
          continue;
        }
        const now = Date.now();
        if (now >= deadline) {
          for (const ref of [...outstanding.values()]) settle(ref, { id: ref.id, status: 'pending' });
          continue;
        }
        if (now >= sweepAt) {
          sweep = [...outstanding.values()];
          swept = 0;
          continue;
        }
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, Math.min(deadline, sweepAt) - now);
        });
        clearTimeout(timer);
        wake = undefined;
      }
    } finally {
      await Promise.all(events.map(async (e) => e.close()));
      eventConnections.forEach((c) => c.disconnect());
    }
  }

  /**
   * Results as they are reported: a job that failed with the cancel reason, or is gone while a cancellation of it
   * is recorded (a waiting job is removed when it is cancelled), is cancelled; a failed or cancelled job still in
   * Redis gets the metadata its data holds. One pipelined round trip, only when such jobs are among them.
   */
  private async annotate(settled: readonly Settled[]): Promise<CollectedResult[]> {
    const gone = settled.filter((s) => s.result.status === 'missing');
    const failed = settled.filter((s) => s.result.status === 'failed');
    if (gone.length === 0 && failed.length === 0) return settled.map((s) => s.result);
    const pipeline = this.options.connection.pipeline();
    for (const { ref } of gone) pipeline.zscore(cancelMarksKey(this.prefix, ref.queue), ref.id);
    for (const { ref } of failed) pipeline.hget(jobKey(this.prefix, ref.queue, ref.id), 'data');
    const replies = await execOrThrow(pipeline);
    const cancelled = new Set(gone.filter((_, k) => replies[k] != null));
    const data = new Map(failed.map((s, k) => [s, replies[gone.length + k] as string | null]));
    return settled.map((s): CollectedResult => {
      const { id } = s.ref;
      if (cancelled.has(s)) return { id, status: 'cancelled' };
      if (s.result.status !== 'failed') return s.result;
      const metadata = metadataOf(data.get(s));
      const extra = metadata ? { metadata } : {};
      return s.result.error === CANCELLED_REASON ? { id, status: 'cancelled', ...extra } : { ...s.result, ...extra };
    });
  }

  /** Each job's stored progress, if it has any, to onPartial: one pipelined round trip. */
  private async partials(refs: readonly JobRef[], onPartial: (ref: JobRef, progress: unknown) => void): Promise<void> {
    if (refs.length === 0) return;
    const pipeline = this.options.connection.pipeline();
    for (const r of refs) pipeline.hget(`${this.prefix}:${r.queue}:${r.id}`, 'progress');
    const replies = await execOrThrow(pipeline);
    refs.forEach((ref, k) => {
      const stored = replies[k];
      if (typeof stored !== 'string') return;
      let progress: unknown;
      try {
        progress = JSON.parse(stored);
      } catch {
        return; // not JSON: no progress this collector knows how to read
      }
      onPartial(ref, progress);
    });
  }

  /**
   * Where each job stands, from the few fields of its BullMQ hash that say so, in one pipelined round trip: the
   * collector often runs beside a busy worker (the benchmarks run both in one process), and reading whole jobs
   * (Job.fromId: every field, data and options parsed) for thousands of ids took the worker's event loop and
   * Redis time just when the first batch was being fetched.
   */
  private async states(refs: readonly JobRef[]): Promise<CollectedResult[]> {
    if (refs.length === 0) return [];
    const pipeline = this.options.connection.pipeline();
    for (const r of refs) pipeline.hmget(jobKey(this.prefix, r.queue, r.id), 'timestamp', 'finishedOn', 'returnvalue', 'failedReason');
    const replies = (await pipeline.exec()) ?? [];
    return refs.map((ref, k): CollectedResult => {
      const [error, fields] = replies[k] ?? [new Error('no reply'), null];
      if (error) throw error;
      const [timestamp, finishedOn, stored, failedReason] = (fields ?? []) as (string | null)[];
      const returnvalue = stored === 'null' ? null : stored; // BullMQ stores a failed job's as JSON null
      if (timestamp == null) return { id: ref.id, status: 'missing', error: MISSING };
      if (finishedOn && failedReason && returnvalue == null) return failure(ref.id, failedReason);
      if (finishedOn && returnvalue != null) return storedResult(ref.id, returnvalue);
      return { id: ref.id, status: 'pending' };
    });
  }
}
