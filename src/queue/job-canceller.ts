import { Queue } from 'bullmq';
import { clearCancelMarks, execOrThrow, groupByQueue } from './cancel-marks.js';
import { cancelMarksKey, jobKey, keyPrefix } from './queue-names.js';
import type { RedisConnection } from './redis-connection.js';
import { type JobRef, distinctRefs } from './result-collector.js';

/** What `cancel` did with each kind of job; the four add up to the distinct jobs asked for. */
export interface CancelReport {
  /** Waiting, delayed or prioritized jobs: removed from the queue (the collector reports them as cancelled). */
  readonly removed: number;
  /** Active jobs: the worker fails each as cancelled when its batch ends, and never completes it. */
  readonly marked: number;
  /** Already completed or failed: left as they are. */
  readonly finished: number;
  /** Not in Redis. */
  readonly missing: number;
}

const CHUNK = 500;
/** How long a cancellation is remembered: the default retention of failed jobs. */
const CANCEL_MARK_MS = 7 * 24 * 3600 * 1000;

/**
 * Cancels jobs. Each job is marked first and its state read after, so a worker that takes a waiting job in between
 * sees the mark; then unfinished jobs are removed, which BullMQ refuses for an active (locked) job: that one keeps
 * its mark, and its worker fails it as cancelled when its batch ends (GenerationWorker.isCancelled). Marks of jobs
 * that were already finished or missing are taken back, so a later removal of such a job is not called a cancel.
 */
export class JobCanceller {
  private readonly prefix: string;
  private readonly queues = new Map<string, Queue>();

  constructor(private readonly options: { connection: RedisConnection; prefix?: string }) {
    this.prefix = keyPrefix(options.connection, options.prefix);
  }

  async cancel(refs: readonly JobRef[], onProgress?: (done: number, total: number) => void): Promise<CancelReport> {
    const distinct = distinctRefs(refs);
    const report = { removed: 0, marked: 0, finished: 0, missing: 0 };
    for (let i = 0; i < distinct.length; i += CHUNK) {
      const chunk = distinct.slice(i, i + CHUNK);
      const outcomes = await this.cancelChunk(chunk);
      for (const o of outcomes) report[o]++;
      onProgress?.(Math.min(i + CHUNK, distinct.length), distinct.length);
    }
    return report;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }

  private async cancelChunk(refs: readonly JobRef[]): Promise<(keyof CancelReport)[]> {
    const { connection } = this.options;
    const now = Date.now();
    const mark = connection.pipeline();
    for (const [queue, ids] of groupByQueue(refs)) {
      const key = cancelMarksKey(this.prefix, queue);
      mark.zadd(key, ...ids.flatMap((id) => [now, id]));
      // Old marks go: their jobs have long ended (or were removed), and the set must not grow without bound.
      mark.zremrangebyscore(key, '-inf', now - CANCEL_MARK_MS);
      mark.pexpire(key, CANCEL_MARK_MS);
    }
    await execOrThrow(mark);
    const read = connection.pipeline();
    for (const r of refs) read.hmget(jobKey(this.prefix, r.queue, r.id), 'timestamp', 'finishedOn');
    const states = (await execOrThrow(read)) as [string | null, string | null][];
    const outcomes = await Promise.all(
      refs.map(async (r, k): Promise<keyof CancelReport> => {
        const [timestamp, finishedOn] = states[k]!;
        if (timestamp == null) return 'missing';
        if (finishedOn) return 'finished';
        // 0: locked by a worker, i.e. active; its mark stays.
        return (await this.queue(r.queue).remove(r.id)) === 1 ? 'removed' : 'marked';
      }),
    );
    await clearCancelMarks(
      connection,
      this.prefix,
      refs.filter((_, k) => outcomes[k] === 'missing' || outcomes[k] === 'finished'),
    );
    return outcomes;
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.options.connection, prefix: this.prefix });
      this.queues.set(name, q);
    }
    return q;
  }
}

