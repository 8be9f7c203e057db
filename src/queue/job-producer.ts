import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { type JobsOptions, Queue } from 'bullmq';
import { z } from 'zod';
import { clearCancelMarks } from './cancel-marks.js';
import {
  Attempts,
  BackoffMs,
  DEFAULT_MAX_PROMPT_CHARS,
  DelayMs,
  GENQUEUE_LINES,
  type JobData,
  KeepJobs,
  type LineFormat,
  type LineTags,
  type ParsedLine,
  Priority,
  describeZodError,
} from './job-schema.js';
import { JsonlLines } from './jsonl-lines.js';
import { enqueueLinesKey, jobKey, keyPrefix, queueNameFor } from './queue-names.js';
import { type RedisConnection, reportErrors } from './redis-connection.js';

export interface RefusedLine {
  readonly line: number;
  readonly error: string;
  /** What the line's format knows of it (an OpenAI request's custom_id). */
  readonly tags?: LineTags;
}

/** A line whose id is already queued with other content: BullMQ keeps the queued job, so this line is not enqueued. */
export interface ConflictingLine {
  readonly line: number;
  readonly id: string;
  /** The job fields whose values differ from the queued job's ("prompt", "max_new_tokens", …). */
  readonly fields: string[];
  /** The line of this file the queued job came from; undefined when it was queued before this run. */
  readonly firstLine?: number;
}

export function describeConflict(c: ConflictingLine): string {
  const what = `a different ${c.fields.join(', ')}`;
  return c.firstLine !== undefined
    ? `id ${c.id} already enqueued from line ${c.firstLine} with ${what}; this line was not enqueued`
    : `id ${c.id} already queued (before this run) with ${what}; this line was not enqueued`;
}

export interface EnqueueReport {
  /** Jobs added now. */
  readonly enqueued: number;
  /** Lines whose id was already in the queue (or earlier in the same file): left as they were. Includes conflicts. */
  readonly duplicates: number;
  /** Of the duplicates, those whose content differs from the queued job's (each passed to onConflict). */
  readonly conflicts: number;
  /** Invalid lines skipped (skipInvalid; each passed to onRefused). */
  readonly refused: number;
  /** Every valid line's job (new or duplicate), in file order, with its line's tags: only with keepJobs. */
  readonly jobs?: (EnqueuedJob & { readonly tags?: LineTags })[];
  /** The file the ids went to (the first of idsOut that could be opened). */
  readonly idsFile?: string;
}

export interface EnqueueFileOptions {
  /** Jobs per addBulk call. */
  readonly chunkSize?: number;
  /** Enqueue the valid lines and report the refused ones, instead of refusing the whole file. */
  readonly skipInvalid?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
  /**
   * Each invalid line, as the validation pass finds it (only with skipInvalid: otherwise InvalidJobsError says); a
   * promise returned (a write to an errors file) is awaited before the next line.
   */
  readonly onRefused?: (refused: RefusedLine) => unknown;
  /** Each line not enqueued because its id is already queued with other content. */
  readonly onConflict?: (conflict: ConflictingLine) => void;
  /**
   * Writes {"id","line","queue"} (plus the line's tags: an OpenAI request's custom_id and url) per valid line, for
   * `genqueue results --ids-from`. Several paths: the first that can be opened for writing (defaultIdsFiles).
   */
  readonly idsOut?: string | readonly string[];
  /** How lines become jobs (default: genqueue job lines; openAiLines() for OpenAI Batch requests). */
  readonly format?: LineFormat;
  /**
   * Return every valid line's job in the report, for a caller that waits for them. Off by default: the file is
   * streamed, and memory does not grow with its length.
   */
  readonly keepJobs?: boolean;
}

/** Thrown when a file has invalid lines and skipInvalid is off: nothing was enqueued. */
export class InvalidJobsError extends Error {
  /** The first invalid lines (up to 50); `count` has them all. */
  readonly refused: RefusedLine[];

  constructor(
    readonly path: string,
    refused: RefusedLine[],
    readonly count = refused.length,
  ) {
    const shown = refused.slice(0, InvalidJobsError.SHOWN).map((r) => `  line ${r.line}: ${r.error}`);
    if (count > shown.length) shown.push(`  … and ${count - shown.length} more`);
    super(`${path}: ${count} invalid line(s), nothing enqueued:\n${shown.join('\n')}`);
    this.name = 'InvalidJobsError';
    this.refused = refused.slice(0, InvalidJobsError.SHOWN);
  }

  static readonly SHOWN = 50;
}

export interface EnqueuedJob {
  readonly id: string;
  readonly queue: string;
}

/**
 * Queue controls for every job a producer adds; a job line's `priority`, `delay_ms` and `attempts` override the
 * first three for that job.
 */
export interface JobControls {
  /** 1 is the highest, MAX_PRIORITY the lowest; jobs without a priority run before every prioritized job. */
  readonly priority?: number;
  /** The job waits this long (ms) before a worker may take it. */
  readonly delayMs?: number;
  /**
   * Tries per job (default DEFAULT_ATTEMPTS). Only transient failures (an engine or runtime error) are tried again;
   * a job whose content is wrong fails at once.
   */
  readonly attempts?: number;
  /** Wait before the first retry; each further retry waits twice as long as the one before (default 1000 ms). */
  readonly backoffMs?: number;
  /** Completed jobs (and their results) kept in Redis; default: a week. */
  readonly keepCompleted?: KeepJobs;
  /** Failed jobs kept in Redis; default: a week. */
  readonly keepFailed?: KeepJobs;
}

export interface JobProducerOptions extends JobControls {
  readonly connection: RedisConnection;
  /** BullMQ key prefix (default "bull"; hash-tagged on a Cluster: keyPrefix). */
  readonly prefix?: string;
  /** Raw BullMQ job options, applied over the controls (a job line's own fields still win). */
  readonly jobOptions?: JobsOptions;
  /** Longer prompts are refused (config limits.maxPromptChars; default DEFAULT_MAX_PROMPT_CHARS). */
  readonly maxPromptChars?: number;
}

const WEEK_SECONDS = 7 * 24 * 3600;

export const DEFAULT_ATTEMPTS = 3;
export const DEFAULT_BACKOFF_MS = 1000;

/**
 * Where `enqueue` writes the ids of a file when nobody asked (neither --wait nor --ids-out), so its results can
 * always be fetched: `<input>.ids.jsonl` beside it, or, where that cannot be written, a file in the cache directory
 * named after the input's name and path.
 */
export function defaultIdsFiles(input: string, cacheDir: string): string[] {
  const absolute = resolve(input);
  const digest = createHash('sha256').update(absolute).digest('hex').slice(0, 12);
  return [`${absolute}.ids.jsonl`, join(cacheDir, 'ids', `${basename(absolute)}-${digest}.ids.jsonl`)];
}

/** Opens the first of the paths that can be written (creating its directory if need be); throws naming all of them. */
async function openFirstWritable(paths: readonly string[]): Promise<{ stream: WriteStream; path: string }> {
  const failures: string[] = [];
  for (const path of paths) {
    try {
      if (path !== paths[0]) mkdirSync(dirname(path), { recursive: true });
      const stream = createWriteStream(path);
      await once(stream, 'open'); // an unwritable path fails here, before anything is enqueued
      return { stream, path };
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
  throw new Error(`cannot write the ids file: ${failures.join('; ')}`);
}

const JobControlsSchema = z.object({
  priority: Priority.optional(),
  delayMs: DelayMs.optional(),
  attempts: Attempts.optional(),
  backoffMs: BackoffMs.optional(),
  keepCompleted: KeepJobs.optional(),
  keepFailed: KeepJobs.optional(),
});

/** BullMQ's form of a retention: by default a week; with neither age nor count, every job is kept. */
function keepOption(keep: KeepJobs | undefined): JobsOptions['removeOnComplete'] {
  if (!keep) return { age: WEEK_SECONDS };
  if (keep.age !== undefined) return { age: keep.age, ...(keep.count !== undefined ? { count: keep.count } : {}) };
  return keep.count !== undefined ? { count: keep.count } : false;
}

/** BullMQ options for a producer's controls; a RangeError names the field that is out of bounds. */
function jobOptionsFor(controls: JobControls): JobsOptions {
  const parsed = JobControlsSchema.safeParse(controls);
  if (!parsed.success) throw new RangeError(`job controls: ${describeZodError(parsed.error)}`);
  const c = parsed.data;
  return {
    removeOnComplete: keepOption(c.keepCompleted),
    removeOnFail: keepOption(c.keepFailed),
    attempts: c.attempts ?? DEFAULT_ATTEMPTS,
    backoff: { type: 'exponential', delay: c.backoffMs ?? DEFAULT_BACKOFF_MS },
    ...(c.priority !== undefined ? { priority: c.priority } : {}),
    ...(c.delayMs !== undefined ? { delay: c.delayMs } : {}),
  };
}

/** A job line's own controls, which win over the producer's. */
function lineJobOptions(job: JobData): JobsOptions {
  return {
    ...(job.priority !== undefined ? { priority: job.priority } : {}),
    ...(job.delay_ms !== undefined ? { delay: job.delay_ms } : {}),
    ...(job.attempts !== undefined ? { attempts: job.attempts } : {}),
  };
}
/** Lines of this run's jobs stay in Redis at most this long if the producer dies before deleting them. */
const RUN_LINES_TTL_SECONDS = 24 * 3600;

interface LineJob {
  readonly job: JobData;
  readonly line?: number;
  readonly tags?: LineTags;
}

/** A conflict while its chunk is processed: firstLine may still be looked up (key: its field in the run's hash). */
interface ChunkConflict {
  line: number;
  id: string;
  fields: string[];
  firstLine?: number;
  key: string;
}

/** Names of the fields whose values differ between a job and the stored data of a job with the same id. */
function differingFields(job: JobData, stored: string): string[] {
  let other: unknown;
  try {
    other = JSON.parse(stored);
  } catch {
    return ['content (the queued job is not readable)'];
  }
  if (typeof other !== 'object' || other === null) return ['content (the queued job is not readable)'];
  const a = job as Record<string, unknown>;
  const b = other as Record<string, unknown>;
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

/**
 * Validates and enqueues generation jobs. Invalid jobs never reach Redis. Job ids become BullMQ job ids, so
 * enqueueing the same id twice leaves one job; jobs without an id get a random UUID (returned and stored).
 */
export class JobProducer {
  private readonly queues = new Map<string, Queue>();
  private readonly prefix: string;
  private readonly jobOptions: JobsOptions;
  private readonly maxPromptChars: number;

  constructor(private readonly options: JobProducerOptions) {
    this.prefix = keyPrefix(options.connection, options.prefix);
    this.maxPromptChars = options.maxPromptChars ?? DEFAULT_MAX_PROMPT_CHARS;
    this.jobOptions = { ...jobOptionsFor(options), ...options.jobOptions };
  }

  /**
   * Streams a .jsonl file in constant memory (unless keepJobs). A first pass validates every line (and counts
   * them for progress); unless skipInvalid, any invalid line refuses the whole file. The second pass adds jobs
   * with addBulk in chunks.
   *
   * A line whose id is already queued is not added again; when its content differs, onConflict names the line the
   * queued job came from. That line number comes from Redis, not memory: each chunk records its jobs' lines in a
   * hash of this run (deleted at the end, with a TTL in case the producer dies), which is read only on a conflict.
   */
  async enqueueFile(path: string, options: EnqueueFileOptions = {}): Promise<EnqueueReport> {
    const firstRefused: RefusedLine[] = [];
    let refused = 0;
    let valid = 0;
    const format = options.format ?? GENQUEUE_LINES;
    for await (const { lineNumber, parsed } of this.parsedLines(path, format)) {
      if (!parsed.ok) {
        refused++;
        const r = { line: lineNumber, error: parsed.error, ...(parsed.tags ? { tags: parsed.tags } : {}) };
        if (options.skipInvalid) await options.onRefused?.(r);
        else if (firstRefused.length < InvalidJobsError.SHOWN) firstRefused.push(r);
      } else valid++;
    }
    if (refused && !options.skipInvalid) throw new InvalidJobsError(path, firstRefused, refused);

    const chunkSize = options.chunkSize ?? 1000;
    const runLines = enqueueLinesKey(this.prefix, randomUUID());
    let idsOut: WriteStream | undefined;
    let idsFile: string | undefined;
    let enqueued = 0;
    let duplicates = 0;
    let conflicts = 0;
    const jobs: (EnqueuedJob & { tags?: LineTags })[] | undefined = options.keepJobs ? [] : undefined;
    let chunk: { job: JobData; line: number; tags?: LineTags }[] = [];
    const flush = async (): Promise<void> => {
      const added = await this.addChunk(chunk, runLines);
      enqueued += added.added;
      duplicates += added.duplicates;
      conflicts += added.conflicts.length;
      for (const c of added.conflicts) options.onConflict?.(c);
      jobs?.push(...added.jobs.map((j, i) => ({ ...j, ...(chunk[i]!.tags ? { tags: chunk[i]!.tags } : {}) })));
      if (idsOut) {
        const text = added.jobs.map((j, i) => JSON.stringify({ id: j.id, line: chunk[i]!.line, queue: j.queue, ...chunk[i]!.tags })).join('\n');
        if (text && !idsOut.write(`${text}\n`)) await once(idsOut, 'drain');
      }
      options.onProgress?.(enqueued + duplicates, valid);
      chunk = [];
    };
    try {
      if (options.idsOut !== undefined) {
        ({ stream: idsOut, path: idsFile } = await openFirstWritable(typeof options.idsOut === 'string' ? [options.idsOut] : options.idsOut));
      }
      for await (const { lineNumber, parsed } of this.parsedLines(path, format)) {
        if (!parsed.ok) continue;
        chunk.push({ job: parsed.job, line: lineNumber, ...(parsed.tags ? { tags: parsed.tags } : {}) });
        if (chunk.length >= chunkSize) await flush();
      }
      if (chunk.length) await flush();
    } finally {
      // A failed delete leaves the hash to its TTL, so it must not hide the error that brought us here.
      const forget = this.options.connection.unlink(runLines).catch(() => undefined);
      const stream = idsOut;
      const closed = stream && !stream.destroyed ? new Promise<void>((resolve, reject) => stream.end((e?: Error | null) => (e ? reject(e) : resolve()))) : undefined;
      await Promise.all([forget, closed]);
    }
    return { enqueued, duplicates, conflicts, refused, ...(jobs ? { jobs } : {}), ...(idsFile !== undefined ? { idsFile } : {}) };
  }

  /**
   * Enqueues already-validated jobs (programmatic producers, the demo); returns where each went. Chunks of
   * chunkSize (default 256) keep each Redis transaction short, so workers start on the first jobs while the
   * rest are still being added.
   */
  async enqueueJobs(jobs: readonly JobData[], chunkSize = 256): Promise<EnqueuedJob[]> {
    const placed: EnqueuedJob[] = [];
    for (let i = 0; i < jobs.length; i += chunkSize) placed.push(...(await this.addChunk(jobs.slice(i, i + chunkSize).map((job) => ({ job })))).jobs);
    return placed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }

  private async *parsedLines(path: string, format: LineFormat): AsyncGenerator<{ lineNumber: number; parsed: ParsedLine }> {
    const limits = { maxPromptChars: this.maxPromptChars };
    for await (const { lineNumber, value } of new JsonlLines(path)) {
      yield { lineNumber, parsed: value.ok ? format.parse(value.raw, limits) : { ok: false, error: value.error } };
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

  /** Adds the chunk's new jobs; with runLines (a file run), records their lines and reports conflicting lines. */
  private async addChunk(
    items: readonly LineJob[],
    runLines?: string,
  ): Promise<{ jobs: EnqueuedJob[]; added: number; duplicates: number; conflicts: ConflictingLine[] }> {
    const withIds = items.map(({ job, line }) => ({ job: job.id ? job : { ...job, id: randomUUID() }, line }));
    const placed: EnqueuedJob[] = withIds.map(({ job }) => ({ id: job.id!, queue: queueNameFor(job.model) }));
    const keyOf = (p: EnqueuedJob): string => `${p.queue}:${p.id}`;
    // BullMQ silently keeps the existing job when an id is re-added: read it first, so that the report can say so,
    // and a different job under a reused id is named rather than dropped unnoticed.
    const pipeline = this.options.connection.pipeline();
    for (const p of placed) pipeline.hget(jobKey(this.prefix, p.queue, p.id), 'data');
    const stored = ((await pipeline.exec()) ?? []).map(([error, value]) => {
      if (error) throw error;
      return value as string | null;
    });
    const firstInChunk = new Map<string, LineJob>();
    const fresh = new Map<string, { name: string; data: JobData; opts: JobsOptions }[]>();
    const freshLines: (string | number)[] = [];
    const conflicts: ChunkConflict[] = [];
    let duplicates = 0;
    withIds.forEach(({ job, line }, i) => {
      const p = placed[i]!;
      const key = keyOf(p);
      const earlier = firstInChunk.get(key);
      const queued = stored[i];
      if (queued == null && !earlier) {
        firstInChunk.set(key, { job, line });
        const list = fresh.get(p.queue) ?? [];
        list.push({ name: 'generate', data: job, opts: { ...this.jobOptions, ...lineJobOptions(job), jobId: p.id } });
        fresh.set(p.queue, list);
        if (line !== undefined) freshLines.push(key, line);
        return;
      }
      duplicates++;
      if (line === undefined) return;
      const fields = earlier ? differingFields(job, JSON.stringify(earlier.job)) : differingFields(job, queued!);
      if (fields.length) conflicts.push({ line, id: p.id, fields, firstLine: earlier?.line, key });
    });
    let added = 0;
    // A cancelled job's id that is enqueued again names a new job, which that cancellation must not reach.
    await clearCancelMarks(this.options.connection, this.prefix, [...fresh].flatMap(([queue, list]) => list.map((j) => ({ queue, id: j.opts.jobId! }))));
    for (const [name, list] of fresh) {
      await this.queue(name).addBulk(list);
      added += list.length;
    }
    if (runLines && freshLines.length) {
      await this.options.connection.multi().hset(runLines, ...freshLines).expire(runLines, RUN_LINES_TTL_SECONDS).exec();
    }
    const unplaced = conflicts.filter((c) => c.firstLine === undefined);
    if (runLines && unplaced.length) {
      const lines = await this.options.connection.hmget(runLines, ...unplaced.map((c) => c.key));
      unplaced.forEach((c, k) => {
        if (lines[k] != null) c.firstLine = Number(lines[k]);
      });
    }
    return { jobs: placed, added, duplicates, conflicts: conflicts.map(({ key: _key, ...c }) => c) };
  }
}
