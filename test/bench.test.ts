import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const BENCH = fileURLToPath(new URL('../bench/main.js', import.meta.url));

describe('npm run bench (CPU smoke run on a tiny GPT-2 shape; the numbers that count come from the GPU machine)', () => {
  it('measures the in-graph search and the TensorRT probe and writes latest.json, latest.md and the chart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-bench-'));
    try {
      const out = join(dir, 'results');
      await promisify(execFile)(
        process.execPath,
        [BENCH, '--device', 'cpu', '--shape', 'tiny', '--sections', 'ingraph,tensorrt', '--batches', '1,2', '--repeats', '1', '--work-dir', join(dir, 'work'), '--out', out],
        { maxBuffer: 16 * 1024 * 1024 },
      );
      const report = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as {
        modelShape: string;
        rows: { name: string; batch: number; status: string; newTokensPerSecond?: number; error?: string }[];
      };
      assert.equal(report.modelShape, 'tiny');
      const ingraph = report.rows.filter((r) => r.name === 'ort-ingraph-fp32');
      assert.deepEqual(ingraph.map((r) => [r.batch, r.status]), [[1, 'ok'], [2, 'ok']]);
      for (const r of ingraph) assert.ok(r.newTokensPerSecond! > 0);
      const trt = report.rows.find((r) => r.name === 'tensorrt');
      assert.ok(trt && trt.status !== 'ok', 'this machine has no TensorRT: the row must say so, not carry a number');
      assert.match(readFileSync(join(out, 'latest.md'), 'utf8'), /\| ort-ingraph-fp32 \|/);
      assert.ok(existsSync(join(out, 'tokens-per-second.svg')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
