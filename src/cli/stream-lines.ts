import type { Writable } from 'node:stream';
import { z } from 'zod';
import type { JobRef } from '../queue/result-collector.js';

/** A streaming job's progress as its worker publishes it (SlotScheduler's StreamProgress). */
const StreamProgress = z.object({ text: z.string(), tokens: z.number() });

/**
 * `enqueue --wait --stream`: each progress of a streaming job as one line `<id>: <new text>` on `out` (stderr), the
 * new text as a JSON string (newlines and spaces stay visible, one line per update). Progress that is not a
 * streaming job's (another producer's numbers) is skipped.
 */
export function streamPrinter(out: Writable): (ref: JobRef, progress: unknown) => void {
  const shown = new Map<string, string>();
  return (ref, progress) => {
    const parsed = StreamProgress.safeParse(progress);
    if (!parsed.success) return;
    const key = `${ref.queue}\u0000${ref.id}`;
    const before = shown.get(key) ?? '';
    const { text } = parsed.data;
    // An update older than what is shown (a state sweep's read crossing an event) adds nothing; should one be
    // missed, the line carries what is new since the last shown.
    if (before.startsWith(text)) return;
    const fresh = text.startsWith(before) ? text.slice(before.length) : text;
    shown.set(key, text);
    if (fresh.length > 0) out.write(`${ref.id}: ${JSON.stringify(fresh)}\n`);
  };
}
