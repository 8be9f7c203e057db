import { randomUUID } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { type JobsOptions, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { type JobData, parseJob } from './job-schema.js';
import { JsonlLines } from './jsonl-lines.js';
import { queueNameFor } from './queue-names.js';
import { reportErrors } from './redis-connection.js';

export interface RefusedLine {
  readonly line: number;
  readonly error: string;
}

export interface EnqueueReport {
  /** Jobs added now. */
  readonly enqueued: number;
  /** Jobs whose id was already in the queue (or earlier in the same file): left as they were. */
  readonly duplicates: number;
  readonly refused: RefusedLine[];
  /** Every valid line's job (new or duplicate), in file order. */
  readonly jobs: EnqueuedJob[];
}

export interface EnqueueFileOptions {
  /** Jobs per addBulk call. */
  readonly chunkSize?: number;
  /** Enqueue the valid lines and report the refused ones, instead of refusing the whole file. */
  readonly skipInvalid?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
  /** Writes {"id","line","queue"} per enqueued job, for `genqueue results --ids-from`. */
  readonly idsOut?: string;
}

/** Thrown when a file has invalid lines and skipInvalid is off: nothing was enqueued. */
export class InvalidJobsError extends Error {
  constructor(
    readonly path: string,
    readonly refused: RefusedLine[],
  ) {
    const shown = refused.slice(0, 50).map((r) => `  line ${r.line}: ${r.error}`);
    if (refused.length > 50) shown.push(`  … and ${refused.length - 50} more`);
    super(`${path}: ${refused.length} invalid line(s), nothing enqueued:\n${shown.join('\n')}`);
    this.name = 'InvalidJobsError';
  }
}

export interface EnqueuedJob {
  readonly id: string;
  readonly queue: string;
}

export interface JobProducerOptions {
  readonly connection: Redis;
  /** BullMQ key prefix (default "bull"). */
  readonly prefix?: string;
  readonly jobOptions?: JobsOptions;
}

const WEEK_SECONDS = 7 * 24 * 3600;

/**
 * Validates and enqueues generation jobs. Invalid jobs never reach Redis. Job ids become BullMQ job ids, so
 * enqueueing the same id twice leaves one job; jobs without an id get a random UUID (returned and stored).
 */
export class JobProducer {
  private readonly queues = new Map<string, Queue>();
  private readonly prefix: string;
  private readonly jobOptions: JobsOptions;

  constructor(private readonly options: JobProducerOptions) {
    this.prefix = options.prefix ?? 'bull';
    this.jobOptions = {
      removeOnComplete: { age: WEEK_SECONDS },
      removeOnFail: { age: WEEK_SECONDS },
      attempts: 1,
      ...options.jobOptions,
    };
  }

  /**
   * Streams a .jsonl file. A first pass validates every line (and counts them for progress); unless
   * skipInvalid, any invalid line refuses the whole file. The second pass adds jobs with addBulk in chunks.
   */
  async enqueueFile(path: string, options: EnqueueFileOptions = {}): Promise<EnqueueReport> {
    const refused: RefusedLine[] = [];
    let valid = 0;
    for await (const { lineNumber, job } of this.parsedLines(path)) {
      if ('error' in job) refused.push({ line: lineNumber, error: job.error });
      else valid++;
    }
    if (refused.length && !options.skipInvalid) throw new InvalidJobsError(path, refused);

    const chunkSize = options.chunkSize ?? 1000;
    const idsOut: WriteStream | undefined = options.idsOut ? createWriteStream(options.idsOut) : undefined;
    let enqueued = 0;
    let duplicates = 0;
    const jobs: EnqueuedJob[] = [];
    let chunk: { job: JobData; line: number }[] = [];
    const flush = async (): Promise<void> => {
      const added = await this.addChunk(chunk.map((c) => c.job));
      enqueued += added.added;
      duplicates += added.duplicates;
      jobs.push(...added.jobs);
      if (idsOut) {
        const text = added.jobs.map((j, i) => JSON.stringify({ id: j.id, line: chunk[i]!.line, queue: j.queue })).join('\n');
        if (text) idsOut.write(`${text}\n`);
      }
      options.onProgress?.(enqueued + duplicates, valid);
      chunk = [];
    };
    try {
      for await (const { lineNumber, job } of this.parsedLines(path)) {
        if ('error' in job) continue;
        chunk.push({ job, line: lineNumber });
        if (chunk.length >= chunkSize) await flush();
      }
      if (chunk.length) await flush();
    } finally {
      if (idsOut) await new Promise<void>((resolve) => idsOut.end(() => resolve()));
    }
    return { enqueued, duplicates, refused, jobs };
  }

  /**
   * Enqueues already-validated jobs (programmatic producers, the demo); returns where each went. Chunks of
   * chunkSize (default 256) keep each Redis transaction short, so workers start on the first jobs while the
   * rest are still being added.
   */
  async enqueueJobs(jobs: readonly JobData[], chunkSize = 256): Promise<EnqueuedJob[]> {
    const placed: EnqueuedJob[] = [];
    for (let i = 0; i < jobs.length; i += chunkSize) placed.push(...(await this.addChunk(jobs.slice(i, i + chunkSize))).jobs);
    return placed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }

  private async *parsedLines(path: string): AsyncGenerator<{ lineNumber: number; job: JobData | { error: string } }> {
    for await (const { lineNumber, value } of new JsonlLines(path)) {
      if (!value.ok) {
        yield { lineNumber, job: { error: value.error } };
        continue;
      }
      const parsed = parseJob(value.raw);
      yield { lineNumber, job: parsed.ok ? parsed.job : { error: parsed.error } };
    }
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.options.connection, prefix: this.prefix });
      reportErrors(q, this.options.connection, `queue ${name}`);
      this.queues.set(name, q);
    }
    return q;
  }

  private async addChunk(jobs: readonly JobData[]): Promise<{ jobs: EnqueuedJob[]; added: number; duplicates: number }> {
    const withIds = jobs.map((job) => (job.id ? job : { ...job, id: randomUUID() }));
    const placed: EnqueuedJob[] = withIds.map((j) => ({ id: j.id!, queue: queueNameFor(j.model) }));
    // BullMQ silently keeps the existing job when an id is re-added; look first so the report can say so.
    const pipeline = this.options.connection.pipeline();
    for (const p of placed) pipeline.exists(`${this.prefix}:${p.queue}:${p.id}`);
    const exists = ((await pipeline.exec()) ?? []).map(([, n]) => n === 1);
    const seen = new Set<string>();
    const fresh = new Map<string, { name: string; data: JobData; opts: JobsOptions }[]>();
    let duplicates = 0;
    withIds.forEach((job, i) => {
      const p = placed[i]!;
      const key = `${p.queue}\u0000${p.id}`;
      if (exists[i] || seen.has(key)) {
        duplicates++;
        return;
      }
      seen.add(key);
      const list = fresh.get(p.queue) ?? [];
      list.push({ name: 'generate', data: job, opts: { ...this.jobOptions, jobId: p.id } });
      fresh.set(p.queue, list);
    });
    let added = 0;
    for (const [name, list] of fresh) {
      await this.queue(name).addBulk(list);
      added += list.length;
    }
    return { jobs: placed, added, duplicates };
  }
}
