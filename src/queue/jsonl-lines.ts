import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

export type JsonLine = { lineNumber: number; value: { ok: true; raw: unknown } | { ok: false; error: string } };

/** Streams a JSONL file line by line (constant memory); blank lines are skipped but still counted. */
export class JsonlLines implements AsyncIterable<JsonLine> {
  constructor(private readonly path: string) {}

  async *[Symbol.asyncIterator](): AsyncIterator<JsonLine> {
    const input = createReadStream(this.path);
    const lines = createInterface({ input, crlfDelay: Infinity });
    let lineNumber = 0;
    try {
      for await (const line of lines) {
        lineNumber++;
        if (line.trim() === '') continue;
        let value: JsonLine['value'];
        try {
          value = { ok: true, raw: JSON.parse(line) };
        } catch (e) {
          value = { ok: false, error: `not valid JSON (${(e as Error).message})` };
        }
        yield { lineNumber, value };
      }
    } finally {
      // A reader that stops early (the first line decides a file's format) closes the file now, not at exit.
      input.destroy();
    }
  }
}
