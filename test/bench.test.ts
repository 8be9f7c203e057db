import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { DEVICE_LOOP_ADDON } from '../src/engine/device-loop-runner.js';

const BENCH = fileURLToPath(new URL('../bench/main.js', import.meta.url));
const nativeBuilt = existsSync(DEVICE_LOOP_ADDON);
if (!nativeBuilt && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);

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

  it('--sections mixed: every row of the continuous-batching run (engine, queue burst, Poisson, static) in one process', { skip: nativeBuilt ? false : 'device-loop addon not built', timeout: 300_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-bench-mixed-'));
    try {
      const out = join(dir, 'results');
      const args = ['--sections', 'mixed', '--device', 'cpu', '--shape', 'tiny', '--slots', '4', '--mixed-jobs', '24', '--mixed-prompt-tokens', '4,16', '--mixed-new-tokens', '4,16'];
      args.push('--mixed-uniform-jobs', '4', '--mixed-poisson-seconds', '1', '--row-timeout-s', '120', '--work-dir', join(dir, 'work'), '--out', out);
      const { stdout } = await promisify(execFile)(process.execPath, [BENCH, ...args], { maxBuffer: 16 * 1024 * 1024 });
      const report = JSON.parse(readFileSync(join(out, 'mixed-tiny-cpu.json'), 'utf8')) as {
        gpu: string;
        slots: number;
        mix: { usefulNewTokens: number };
        rows: { name: string; status: string; newTokensPerSecond?: number; variant?: Record<string, number | string | boolean>; error?: string }[];
        ratios: { continuousOverStatic?: number; continuousOverEngineUniform?: number };
      };
      assert.equal(report.gpu, 'none (cpu)');
      assert.equal(report.slots, 4);
      const names = ['engine-uniform', 'queue-mixed-continuous', 'queue-mixed-poisson', 'queue-mixed-static', 'queue-mixed-static-greedysearch'];
      assert.deepEqual(report.rows.map((r) => [r.name, r.status, r.error]), names.map((n) => [n, 'ok', undefined]));
      for (const r of report.rows) assert.ok(r.newTokensPerSecond! > 0, r.name);
      const poisson = report.rows.find((r) => r.name === 'queue-mixed-poisson')!;
      assert.ok((poisson.variant!.p99LatencyMs as number) >= (poisson.variant!.p50LatencyMs as number));
      assert.ok((poisson.variant!.p50TimeToFirstTokenMs as number) <= (poisson.variant!.p50LatencyMs as number));
      assert.ok(report.ratios.continuousOverStatic! > 0 && report.ratios.continuousOverEngineUniform! > 0);
      assert.match(stdout, /queue-mixed-continuous +ok/);
      assert.match(stdout, /continuous \/ static: [\d.]+× \(target ≥ 2×/);
      assert.match(stdout, /wrote .*mixed-tiny-cpu\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
