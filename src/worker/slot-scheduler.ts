import { SlotCapacityError, type SlotRequestError } from '../engine/slot-errors.js';
import type { SlotGenerationEngine, SlotHandle, SlotResult, SlotTimings } from '../engine/slot-types.js';
import type { JobData } from '../queue/job-schema.js';
import type { JobRef } from '../queue/result-collector.js';
import type { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { slotRequestFor } from './job-request.js';
import { StopSequences, cutAtStop, minimumTextEnd, settledText } from './stop-sequences.js';

/** What a streaming job publishes as its BullMQ progress: the text so far and how many tokens made it. */
export interface StreamProgress {
  readonly text: string;
  readonly tokens: number;
}

export interface SlotSchedulerOptions {
  readonly engine: SlotGenerationEngine;
  readonly tokenizer: TextTokenizer;
  /** A streaming job publishes its text every this many generated tokens (rounded up to a chunk boundary). */
  readonly streamEveryTokens: number;
  /** Which of these jobs were cancelled (JobCanceller); asked at chunk boundaries, one question at a time. */
  readonly cancelled: (refs: readonly JobRef[]) => Promise<boolean[]>;
  /** Shortest time between two cancel questions (default CANCEL_POLL_MS). */
  readonly cancelPollMs?: number;
  /** A progress update or a cancel question failed: the job carries on (told here). */
  readonly onWarning?: (message: string) => void;
}

/** One job for the slot engine: validated, tokenized, and how to publish its progress when it streams. */
export interface SlotJob {
  readonly ref: JobRef;
  readonly data: JobData;
  readonly promptTokenIds: number[];
  readonly publish?: (progress: StreamProgress) => Promise<unknown>;
}

export interface SlotOutcome {
  readonly tokenIds: number[];
  readonly text: string;
  /** cancelled: its cancel mark was seen at a chunk boundary (or before it reached a slot). */
  readonly finishReason: 'stop' | 'length' | 'cancelled';
  readonly seed?: bigint;
  readonly timings: SlotTimings;
  /** When its first token reached this thread (ms since the epoch). */
  readonly firstTokenAt?: number;
}

/**
 * Why the slot engine refused a job, as its failed reason: a prompt too long for a slot reads as it does on the
 * search ops (both numbers and the model's context length) when the slot holds the whole context, and names the
 * slot capacity setting when it holds less.
 */
export function slotRefusal(e: SlotRequestError, contextLength: number): string {
  if (!(e instanceof SlotCapacityError)) return e.message;
  const total = `prompt (${e.promptTokens} tokens) + max_new_tokens (${e.maxNewTokens}) = ${e.promptTokens + e.maxNewTokens}`;
  return e.capacity >= contextLength
    ? `${total} exceeds the model's context length ${contextLength}`
    : `${total} exceeds the slot capacity ${e.capacity} (worker.slotCapacity; the model's context length is ${contextLength})`;
}

/**
 * Cancel marks are read at chunk boundaries, but at most this often: a boundary comes every few milliseconds on a
 * GPU, and each question reads one Redis key per job held.
 */
export const CANCEL_POLL_MS = 100;

/** A job between submit() and its outcome. */
class Running {
  readonly tokens: number[] = [];
  handle: SlotHandle | undefined;
  firstTokenAt: number | undefined;
  /** Where the stop string found at a boundary starts: later tokens are past it. */
  stoppedAt: number | undefined;
  /** Characters of the text already searched for stop strings. */
  searched = 0;
  minTextEnd: number | undefined;
  nextStreamAt: number;
  /** The text being looked at (stop strings, streaming); one look at a time, another after it if tokens came meanwhile. */
  looking: Promise<void> | undefined;
  stale = false;

  constructor(
    readonly job: SlotJob,
    readonly stops: StopSequences | undefined,
    streamEveryTokens: number,
  ) {
    this.nextStreamAt = streamEveryTokens;
  }

  get streams(): boolean {
    return this.job.publish !== undefined;
  }
}

/**
 * Runs queue jobs on the slot engine (continuous batching): each job is submitted as soon as it is validated and
 * tokenized, waits in the engine until a slot frees at a chunk boundary, and resolves the moment it ends, whatever
 * its batch mates do. On the host side, at chunk boundaries: stop strings (the job's text is decoded and searched,
 * and the job is finished where one appears), streaming (the text so far as the job's progress every
 * streamEveryTokens tokens) and cancel marks (a cancelled job is ended, freeing its slot at the next boundary).
 */
export class SlotScheduler {
  private readonly running = new Set<Running>();
  private boundaryQueued = false;
  private asking = false;
  private lastAskedAt = 0;
  /** Wall time during which the engine held a job, for the worker's busy time. */
  private busySince: number | undefined;
  private busyMs = 0;

  constructor(private readonly options: SlotSchedulerOptions) {}

  /** Jobs submitted and not yet ended (running in a slot or waiting for one). */
  get jobs(): number {
    return this.running.size;
  }

  /** Slots holding a job: every job waits in the engine only while all slots are taken. */
  get slotsInUse(): number {
    return Math.min(this.running.size, this.options.engine.limits.slots);
  }

  /** Milliseconds the engine held at least one job, up to now. */
  busyMilliseconds(): number {
    return this.busyMs + (this.busySince === undefined ? 0 : performance.now() - this.busySince);
  }

  /**
   * Generates one job. Throws SlotRequestError (SlotCapacityError: prompt + max_new_tokens beyond a slot, with both
   * numbers) for a job the engine refuses, before it takes a slot; rejects with the engine's error if it fails.
   */
  run(job: SlotJob): Promise<SlotOutcome> {
    const request = slotRequestFor(job.data, job.promptTokenIds);
    const stops = job.data.stop?.length ? new StopSequences(job.data.stop) : undefined;
    const r = new Running(job, stops, this.options.streamEveryTokens);
    return new Promise<SlotOutcome>((resolve, reject) => {
      r.handle = this.options.engine.submit(request, {
        onTokens: (tokens) => this.onTokens(r, tokens),
        onDone: (result) => {
          this.boundary();
          this.finish(r, result).then(resolve, reject);
        },
        onError: (error) => {
          this.forget(r);
          reject(error);
        },
      });
      if (this.running.size === 0) this.busySince = performance.now();
      this.running.add(r);
    });
  }

  private forget(r: Running): void {
    if (!this.running.delete(r)) return;
    if (this.running.size === 0 && this.busySince !== undefined) {
      this.busyMs += performance.now() - this.busySince;
      this.busySince = undefined;
    }
  }

  private onTokens(r: Running, tokens: readonly number[]): void {
    this.boundary();
    // Tokens past a stop string already found: the job is being finished, and they are cut off at its end.
    if (r.stoppedAt !== undefined) return;
    r.firstTokenAt ??= Date.now();
    r.tokens.push(...tokens);
    const streamDue = r.streams && r.tokens.length >= r.nextStreamAt;
    if (r.stops || streamDue) this.look(r);
  }

  /** Looks at the job's text now, or once the look in progress ends (one at a time: decoding is asynchronous). */
  private look(r: Running): void {
    if (r.looking) {
      r.stale = true;
      return;
    }
    r.looking = (async () => {
      do {
        r.stale = false;
        await this.lookOnce(r);
      } while (r.stale && r.stoppedAt === undefined);
    })()
      .catch((e: unknown) => this.options.onWarning?.(`job ${r.job.ref.id}: reading its text failed (${(e as Error).message})`))
      .finally(() => (r.looking = undefined));
  }

  private async lookOnce(r: Running): Promise<void> {
    const { tokenizer } = this.options;
    const n = r.tokens.length;
    const ids = r.tokens.slice(0, n);
    const text = await tokenizer.decode(ids);
    if (r.stops) {
      r.minTextEnd ??= await minimumTextEnd(tokenizer, ids, r.job.data.min_new_tokens);
      if (r.minTextEnd !== undefined) {
        const at = r.stops.find(text, r.stops.resumeAt(r.searched), r.minTextEnd);
        r.searched = text.length;
        if (at >= 0 && r.stoppedAt === undefined) {
          r.stoppedAt = at;
          r.handle?.finish();
        }
      }
    }
    if (r.streams && n >= r.nextStreamAt) {
      const every = this.options.streamEveryTokens;
      r.nextStreamAt = (Math.floor(n / every) + 1) * every;
      const shown = r.stoppedAt === undefined ? settledText(text, r.stops) : text.slice(0, r.stoppedAt);
      await r.job.publish!({ text: shown, tokens: n }).catch((e: unknown) =>
        this.options.onWarning?.(`job ${r.job.ref.id}: progress update failed (${(e as Error).message})`),
      );
    }
  }

  /** The job's outcome from the engine's result: its text decoded and cut at its first stop string. */
  private async finish(r: Running, result: SlotResult): Promise<SlotOutcome> {
    try {
      await r.looking;
      const { tokenizer } = this.options;
      let tokenIds = result.tokenIds;
      let text = await tokenizer.decode(tokenIds);
      let finishReason = result.finishReason;
      if (r.stops && finishReason !== 'cancelled') {
        const minEnd = await minimumTextEnd(tokenizer, tokenIds, r.job.data.min_new_tokens);
        const at = minEnd === undefined ? -1 : r.stops.find(text, 0, minEnd);
        if (at >= 0) {
          ({ tokenIds, text } = await cutAtStop(tokenizer, tokenIds, text, at));
          finishReason = 'stop';
        }
      }
      return {
        tokenIds,
        text,
        finishReason,
        ...(result.seed === undefined ? {} : { seed: result.seed }),
        timings: result.timings,
        ...(r.firstTokenAt === undefined ? {} : { firstTokenAt: r.firstTokenAt }),
      };
    } finally {
      this.forget(r);
    }
  }

  /** A chunk boundary's events arrive together: whatever they trigger runs once, after all of them. */
  private boundary(): void {
    if (this.boundaryQueued) return;
    this.boundaryQueued = true;
    setImmediate(() => {
      this.boundaryQueued = false;
      this.askCancelled();
    });
  }

  /** Ends the jobs whose cancel mark is set: one question for every job held, at most one at a time. */
  private askCancelled(): void {
    const now = Date.now();
    if (this.asking || this.running.size === 0 || now - this.lastAskedAt < (this.options.cancelPollMs ?? CANCEL_POLL_MS)) return;
    this.asking = true;
    this.lastAskedAt = now;
    const asked = [...this.running];
    this.options
      .cancelled(asked.map((r) => r.job.ref))
      .then(
        (marks) => marks.forEach((marked, k) => marked && asked[k]!.handle?.cancel()),
        (e: unknown) => this.options.onWarning?.(`reading cancel marks failed (${(e as Error).message})`),
      )
      .finally(() => (this.asking = false));
  }
}
