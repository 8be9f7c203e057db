import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { JsonlLines } from './jsonl-lines.js';
import { JobId } from './job-schema.js';
import { queueNameFor } from './queue-names.js';
import { reportErrors } from './redis-connection.js';
import { JobResult } from './result-schema.js';

export interface JobRef {
  readonly id: string;
  readonly queue: string;
}

export type CollectedResult =
  | { readonly id: string; readonly status: 'completed'; readonly result: JobResult }
  | { readonly id: string; readonly status: 'failed'; readonly error: string }
  | { readonly id: string; readonly status: 'pending' | 'missing' };

export interface CollectOptions {
  /** Wait until every job has finished (or timeoutMs passes; the rest are then reported as pending). */
  readonly wait: boolean;
  readonly timeoutMs?: number;
  readonly onProgress?: (done: number, total: number) => void;
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

const STATE_CHUNK = 500;

function toResult(id: string, raw: unknown): CollectedResult {
  const value = typeof raw === 'string' ? (JSON.parse(raw) as unknown) : raw;
  const parsed = JobResult.safeParse(value);
  return parsed.success
    ? { id, status: 'completed', result: parsed.data }
    : { id, status: 'failed', error: `result does not match the result schema: ${parsed.error.issues[0]?.message}` };
}

/**
 * Collects results of earlier jobs. With wait, it subscribes to the queues' events before it reads job states,
 * so a job finishing in between is never missed; states are read in parallel chunks so 100k ids stay quick.
 */
export class ResultCollector {
  private readonly prefix: string;

  constructor(private readonly options: { connection: Redis; prefix?: string }) {
    this.prefix = options.prefix ?? 'bull';
  }

  async *collect(refs: readonly JobRef[], options: CollectOptions): AsyncGenerator<CollectedResult> {
    const total = refs.length;
    let done = 0;
    const queueNames = [...new Set(refs.map((r) => r.queue))];
    const remaining = new Map<string, JobRef>(); // key: queue + id
    const keyOf = (queue: string, id: string): string => `${queue}\u0000${id}`;
    for (const r of refs) remaining.set(keyOf(r.queue, r.id), r);

    const finished: CollectedResult[] = [];
    // Taking the whole backlog at once (splice) keeps 100k completions linear; shift() per item would not be.
    function* report(batch: CollectedResult[]): Generator<CollectedResult> {
      for (const r of batch) {
        done++;
        options.onProgress?.(done, total);
        yield r;
      }
    }
    let wake: (() => void) | undefined;
    const events: QueueEvents[] = [];
    const eventConnections: Redis[] = [];
    if (options.wait) {
      for (const name of queueNames) {
        // QueueEvents blocks on XREAD, so each needs a connection of its own.
        const connection = this.options.connection.duplicate();
        eventConnections.push(connection);
        // Read from the stream's position now, not from wherever its first XREAD lands ('$'): a job finishing
        // in between would otherwise be neither in the state sweep below nor in the events.
        const [newest] = await this.options.connection.xrevrange(`${this.prefix}:${name}:events`, '+', '-', 'COUNT', 1);
        const qe = new QueueEvents(name, { connection, prefix: this.prefix, lastEventId: newest?.[0] ?? '0-0' });
        reportErrors(qe, connection, `queue events ${name}`);
        qe.on('completed', ({ jobId, returnvalue }) => {
          if (remaining.delete(keyOf(name, jobId))) {
            finished.push(toResult(jobId, returnvalue));
            wake?.();
          }
        });
        qe.on('failed', ({ jobId, failedReason }) => {
          if (remaining.delete(keyOf(name, jobId))) {
            finished.push({ id: jobId, status: 'failed', error: failedReason });
            wake?.();
          }
        });
        events.push(qe);
      }
      await Promise.all(events.map((e) => e.waitUntilReady()));
    }
    try {
      const all = [...remaining.values()];
      for (let i = 0; i < all.length; i += STATE_CHUNK) {
        const slice = all.slice(i, i + STATE_CHUNK);
        const states = await this.states(slice);
        const known: CollectedResult[] = [];
        for (const [k, s] of states.entries()) {
          if (s.status === 'pending' && options.wait) continue;
          const ref = slice[k]!;
          if (remaining.delete(keyOf(ref.queue, ref.id))) known.push(s); // else already reported by an event
        }
        yield* report(known);
        yield* report(finished.splice(0));
      }
      if (!options.wait) return;
      const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
      while (remaining.size > 0 || finished.length > 0) {
        yield* report(finished.splice(0));
        if (remaining.size === 0) break;
        const left = deadline - Date.now();
        if (left <= 0) break;
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, Math.min(left, 1000));
        });
        wake = undefined;
      }
      for (const r of remaining.values()) yield { id: r.id, status: 'pending' };
    } finally {
      await Promise.all(events.map(async (e) => e.close()));
      eventConnections.forEach((c) => c.disconnect());
    }
  }

  /**
   * Where each job stands, from the few fields of its BullMQ hash that say so, in one pipelined round trip: the
   * collector often runs beside a busy worker (the benchmarks run both in one process), and reading whole jobs
   * (Job.fromId: every field, data and options parsed) for thousands of ids took the worker's event loop and
   * Redis time just when the first batch was being fetched.
   */
  private async states(refs: readonly JobRef[]): Promise<CollectedResult[]> {
    const pipeline = this.options.connection.pipeline();
    for (const r of refs) pipeline.hmget(`${this.prefix}:${r.queue}:${r.id}`, 'timestamp', 'finishedOn', 'returnvalue', 'failedReason');
    const replies = (await pipeline.exec()) ?? [];
    return refs.map((ref, k): CollectedResult => {
      const [error, fields] = replies[k] ?? [new Error('no reply'), null];
      if (error) throw error;
      const [timestamp, finishedOn, stored, failedReason] = (fields ?? []) as (string | null)[];
      const returnvalue = stored === 'null' ? null : stored; // BullMQ stores a failed job's as JSON null
      if (timestamp == null) return { id: ref.id, status: 'missing' };
      if (finishedOn && failedReason && returnvalue == null) return { id: ref.id, status: 'failed', error: failedReason };
      if (finishedOn && returnvalue != null) return toResult(ref.id, returnvalue);
      return { id: ref.id, status: 'pending' };
    });
  }
}
