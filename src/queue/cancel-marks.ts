import { cancelMarksKey, keyPrefix } from './queue-names.js';
import type { RedisConnection } from './redis-connection.js';
import type { JobRef } from './result-collector.js';

/** The reason a cancelled job fails with (a worker's UnrecoverableError), and how the collector recognises it. */
export const CANCELLED_REASON = 'cancelled';

/*
 * A queue's cancellations (cancelMarksKey) are a sorted set of job ids scored by when they were cancelled. A worker
 * reads it when a job's batch ends; the collector when a job is gone (a cancelled waiting job is removed, not failed).
 */

/** Forgets cancellations of these ids, in one call per queue: enqueueing an id anew starts a new job. */
export function clearCancelMarks(connection: RedisConnection, prefix: string, refs: readonly JobRef[]): Promise<unknown> {
  const byQueue = groupByQueue(refs);
  if (byQueue.size === 0) return Promise.resolve();
  const pipeline = connection.pipeline();
  for (const [queue, ids] of byQueue) pipeline.zrem(cancelMarksKey(prefix, queue), ...ids);
  return execOrThrow(pipeline);
}

export function groupByQueue(refs: readonly JobRef[]): Map<string, string[]> {
  const byQueue = new Map<string, string[]>();
  for (const r of refs) {
    const ids = byQueue.get(r.queue) ?? [];
    ids.push(r.id);
    byQueue.set(r.queue, ids);
  }
  return byQueue;
}

export async function execOrThrow(pipeline: ReturnType<RedisConnection['pipeline']>): Promise<unknown[]> {
  const replies = (await pipeline.exec()) ?? [];
  return replies.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}

/**
 * Answers "is this job cancelled?" for a worker, with one pipelined round trip for all questions asked in the same
 * turn of the event loop (a batch's jobs all end at once).
 */
export class CancelMarks {
  private asked: { key: string; id: string; resolve: (marked: boolean) => void; reject: (e: Error) => void }[] = [];

  private readonly prefix: string;

  constructor(
    private readonly connection: RedisConnection,
    prefix?: string,
  ) {
    this.prefix = keyPrefix(connection, prefix);
  }

  isMarked(ref: JobRef): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.asked.push({ key: cancelMarksKey(this.prefix, ref.queue), id: ref.id, resolve, reject });
      if (this.asked.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const asked = this.asked;
    this.asked = [];
    const pipeline = this.connection.pipeline();
    for (const a of asked) pipeline.zscore(a.key, a.id);
    execOrThrow(pipeline).then(
      (scores) => asked.forEach((a, k) => a.resolve(scores[k] != null)),
      (e: unknown) => asked.forEach((a) => a.reject(e instanceof Error ? e : new Error(String(e)))),
    );
  }
}
