import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
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

export function openOutput(path: string | undefined): { stream: Writable; close: () => Promise<void> } {
  if (!path) return { stream: process.stdout, close: async () => undefined };
  const stream = createWriteStream(path);
  return { stream, close: () => new Promise((resolve) => stream.end(() => resolve())) };
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

/**
 * Writes collected results as JSON lines (respecting back-pressure) and tallies them; `expected` is the number of
 * distinct jobs asked for, and a tally that does not add up to it is an error rather than a quiet success.
 */
export async function writeResults(results: AsyncIterable<CollectedResult>, out: Writable, expected: number): Promise<CollectSummary> {
  const s: CollectSummary = { jobs: 0, completed: 0, failed: 0, pending: 0, missing: 0, cancelled: 0, generatedTokens: 0 };
  for await (const r of results) {
    s.jobs++;
    s[r.status]++;
    if (r.status === 'completed') s.generatedTokens += r.result.tokenIds.length;
    if (!out.write(`${resultLine(r)}\n`)) await new Promise((resolve) => out.once('drain', resolve));
  }
  if (s.jobs !== expected) throw new Error(`results for ${s.jobs} of ${expected} jobs: ${expected - s.jobs} unaccounted for`);
  return s;
}

/** The summary line both `enqueue --wait` and `results` print. */
export function summaryLine(s: CollectSummary): string {
  return `jobs ${s.jobs}: completed ${s.completed}, failed ${s.failed}, pending ${s.pending}, missing ${s.missing}, cancelled ${s.cancelled}`;
}
