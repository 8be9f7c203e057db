import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { z } from 'zod';
import type { BenchRow } from './bench-types.js';

const HfOutput = z.object({
  gpu: z.string(),
  rows: z.array(z.object({ name: z.string(), batch: z.number(), secondsPerBatch: z.number(), newTokensPerSecond: z.number() })),
});

/**
 * HF transformers' generate (../shared/reference/hf_generate_bench.py: random weights of the --arch shape, fp16,
 * 8 → 256); its rows are named hf-transformers (gpt2) or <arch>-hf-transformers.
 */
export async function hfRows(script: string, batches: readonly number[], arch = 'gpt2', repeats = 3): Promise<{ gpu: string; rows: BenchRow[] }> {
  const out = join(tmpdir(), `genqueue-hf-${process.pid}.json`);
  const name = arch === 'gpt2' ? 'hf-transformers' : `${arch}-hf-transformers`;
  try {
    await promisify(execFile)('python3', [script, '--arch', arch, '--repeats', String(repeats), '--batch', ...batches.map(String), '--json', out], {
      timeout: 540_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    const parsed = HfOutput.parse(JSON.parse(readFileSync(out, 'utf8')));
    return {
      gpu: parsed.gpu,
      rows: parsed.rows.map((r) => ({ ...r, status: 'ok' as const, precision: 'fp16' as const, promptTokens: 8, totalTokens: 256 })),
    };
  } catch (e) {
    return { gpu: '', rows: [{ name, batch: 0, status: 'failed', error: (e as Error).message.slice(0, 500) }] };
  }
}
