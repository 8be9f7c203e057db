/**
 * Peak memory of a model build: writes a random checkpoint of a real model's shape (once, under --work), builds it
 * in one precision in this process, and prints {shape, precision, seconds, maxRssMiB, weightBytes} as JSON.
 *   node dist/bench/build-memory.js --shape llama-3.2-1b --precision fp16 --tokenizer DIR [--work DIR]
 * One build per process: maxRSS is the process's high-water mark.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LLAMA_3_2_1B_SHAPE, QWEN2_5_0_5B_SHAPE, writeRandomLlamaCheckpoint } from '../src/model/checkpoint/random-llama-checkpoint.js';
import { buildModel } from '../src/model/model-builder.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama-3.2-1b' },
    precision: { type: 'string', default: 'fp16' },
    tokenizer: { type: 'string' },
    work: { type: 'string', default: '/tmp/genqueue-build-memory' },
    keep: { type: 'boolean', default: false },
  },
});
const shape = values.shape === 'qwen2.5-0.5b' ? QWEN2_5_0_5B_SHAPE : LLAMA_3_2_1B_SHAPE;
const checkpoint = join(values.work!, `${values.shape}-random`);
if (!existsSync(join(checkpoint, 'config.json'))) {
  if (!values.tokenizer) throw new Error('--tokenizer DIR (tokenizer.json of the model family) is needed to write the checkpoint');
  const t = performance.now();
  writeRandomLlamaCheckpoint(checkpoint, shape, values.tokenizer);
  process.stderr.write(`wrote ${checkpoint} in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
}
const baseline = process.resourceUsage().maxRSS;
const out = mkdtempSync(join(values.work!, 'build-'));
const started = performance.now();
const manifest = buildModel(checkpoint, out, { precision: values.precision === 'fp32' ? 'fp32' : 'fp16' });
const seconds = (performance.now() - started) / 1000;
process.stdout.write(
  `${JSON.stringify({
    shape: values.shape,
    checkpointDtype: shape.dtype,
    precision: manifest.spec.precision,
    seconds,
    maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    maxRssBeforeBuildMiB: Math.round(baseline / 1024),
    weightBytes: manifest.weightBytes,
    out,
  })}\n`,
);
if (!values.keep) rmSync(out, { recursive: true, force: true });
