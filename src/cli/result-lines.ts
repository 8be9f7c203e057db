import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { type OpenAiOutput, type OpenAiRequestRef, openAiOutputLine, repairLastLine } from '../queue/openai-batch.js';
import type { CollectedResult } from '../queue/result-collector.js';

/** One output line per job: the result fields users consume, or the reason it has none. */
export function resultLine(r: CollectedResult): string {
  switch (r.status) {
    case 'completed': {
      const { id, model, prompt, tokenIds, text, finishReason, seed, timings, usage, metadata } = r.result;
      return JSON.stringify({ id, model, prompt, tokenIds, text, finishReason, seed, timings, usage, metadata });
    }
    case 'failed':
      return JSON.stringify({ id: r.id, error: r.error, metadata: r.metadata });
    case 'cancelled':
      return JSON.stringify({ id: r.id, status: r.status, metadata: r.metadata });
    case 'missing':
      return JSON.stringify({ id: r.id, status: r.status, error: r.error });
    case 'pending':
      return JSON.stringify({ id: r.id, status: r.status });
  }
}

/**
 * How collected results become lines, and which output each goes to (`errors`: --errors-out, or --out when there is
 * none); undefined writes nothing for that result yet.
 */
export type ResultFormat = (r: CollectedResult) => OpenAiOutput | undefined;

/** genqueue's result lines: one per job, all in --out. */
export const genqueueResults: ResultFormat = (r) => ({ file: 'out', line: resultLine(r) });

/**
 * OpenAI Batch output lines (completions) and error lines (failed, cancelled, missing) for the requests of `refs`;
 * a pending job gets no line, so a later `genqueue results` writes it once it has finished.
 */
export function openAiResults(refs: Iterable<OpenAiRequestRef>): ResultFormat {
  // A job id is derived from its custom_id, so it names one request whatever queue it went to.
  const byId = new Map<string, OpenAiRequestRef>();
  for (const ref of refs) byId.set(ref.id, ref);
  return (r) => {
    const ref = byId.get(r.id);
    if (!ref) throw new Error(`a result for job ${r.id}, which no request of the file names`);
    return openAiOutputLine(ref, r);
  };
}

export interface Output {
  readonly stream: Writable;
  close(): Promise<void>;
}

/**
 * stdout without a path; else the file, opened before anything is written so that an unwritable path fails at once.
 * With append, lines go after what the file holds (a cut last line is ended first: it stays invalid and its request
 * is written again).
 */
export async function openOutput(path: string | undefined, options: { append?: boolean } = {}): Promise<Output> {
  if (!path) return { stream: process.stdout, close: async () => undefined };
  if (options.append) repairLastLine(path);
  const stream = createWriteStream(path, { flags: options.append ? 'a' : 'w' });
  await once(stream, 'open');
  return { stream, close: () => new Promise((resolve, reject) => stream.end((e?: Error | null) => (e ? reject(e) : resolve()))) };
}

export interface CollectSummary {
  /** Jobs accounted for: completed + failed + pending + missing + cancelled. */
  jobs: number;
  completed: number;
  failed: number;
  pending: number;
  missing: number;
  cancelled: number;
  generatedTokens: number;
}

/** Writes one line, waiting while the stream's buffer is full (back-pressure). */
export async function writeLine(out: Writable, line: string): Promise<void> {
  if (!out.write(`${line}\n`)) await once(out, 'drain');
}

/**
 * Writes collected results as JSON lines in the order they arrive (completion order), each in its format's output
 * (`errors` goes to `out` when there is no errors output), and tallies them; `expected` is the number of distinct
 * jobs asked for, and a tally that does not add up to it is an error rather than a quiet success.
 */
export async function writeResults(
  results: AsyncIterable<CollectedResult>,
  outputs: { readonly out: Writable; readonly errors?: Writable },
  expected: number,
  format: ResultFormat = genqueueResults,
): Promise<CollectSummary> {
  const s: CollectSummary = { jobs: 0, completed: 0, failed: 0, pending: 0, missing: 0, cancelled: 0, generatedTokens: 0 };
  for await (const r of results) {
    s.jobs++;
    s[r.status]++;
    if (r.status === 'completed') s.generatedTokens += r.result.tokenIds.length;
    const line = format(r);
    if (line) await writeLine(line.file === 'errors' ? (outputs.errors ?? outputs.out) : outputs.out, line.line);
  }
  if (s.jobs !== expected) throw new Error(`results for ${s.jobs} of ${expected} jobs: ${expected - s.jobs} unaccounted for`);
  return s;
}

/** The summary line both `enqueue --wait` and `results` print. */
export function summaryLine(s: CollectSummary): string {
  return `jobs ${s.jobs}: completed ${s.completed}, failed ${s.failed}, pending ${s.pending}, missing ${s.missing}, cancelled ${s.cancelled}`;
}
