import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

export type JsonLine = { lineNumber: number; value: { ok: true; raw: unknown } | { ok: false; error: string } };

/** Streams a JSONL file line by line (constant memory); blank lines are skipped but still counted. */
export class JsonlLines implements AsyncIterable<JsonLine> {
  constructor(private readonly path: string) {}

  async *[Symbol.asyncIterator](): AsyncIterator<JsonLine> {
    const lines = createInterface({ input: createReadStream(this.path), crlfDelay: Infinity });
    let lineNumber = 0;
    for await (const line of lines) {
      lineNumber++;
      if (line.trim() === '') continue;
      try {
        yield { lineNumber, value: { ok: true, raw: JSON.parse(line) } };
      } catch (e) {
        yield { lineNumber, value: { ok: false, error: `not valid JSON (${(e as Error).message})` } };
      }
    }
  }
}
