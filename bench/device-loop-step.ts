/**
 * Time per decode step of the device loop at batch 1 (8 → 264 tokens, no early stop) on a bench shape's random
 * checkpoint: the measurement behind bench/results/llama1b-batch1-h200.json. Kernel settings read from the
 * environment when the loop opens (GENQUEUE_SBMM_LOADS, ORT_ENABLE_XQA) can be compared run against run.
 *   node dist/bench/device-loop-step.js --shape llama-3.2-1b --device cuda:0 [--repeats 5] [--small-batch-rows 0]
 */
import { parseArgs } from 'node:util';
import { DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import { parseDevice } from '../src/engine/execution-provider.js';
import { type BenchModelShape, benchCheckpoint, benchModel } from './bench-models.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama-3.2-1b' },
    device: { type: 'string', default: 'cuda:0' },
    repeats: { type: 'string', default: '5' },
    'small-batch-rows': { type: 'string' },
    work: { type: 'string', default: '/tmp/genqueue-bench' },
  },
});
const model = await benchModel(values.work!, benchCheckpoint(values.work!, values.shape as BenchModelShape), 'fp16');
const smallBatchRows = values['small-batch-rows'] === undefined ? undefined : Number(values['small-batch-rows']);
const runner = DeviceLoopRunner.open(model.dir, model.manifest, {
  device: parseDevice(values.device!),
  ...(smallBatchRows !== undefined ? { smallBatchRows } : {}),
  onWarning: (m) => console.error(m),
});
try {
  const request = { promptIds: [1, 2, 3, 4, 5, 6, 7, 8], maxNewTokens: 256, minNewTokens: 256, repetitionPenalty: 1, search: { kind: 'greedy' as const } };
  for (let i = 0; i < 2; i++) runner.run([request]);
  const ms: number[] = [];
  for (let i = 0; i < Number(values.repeats); i++) {
    const started = performance.now();
    runner.run([request]);
    ms.push((performance.now() - started) / runner.lastSteps);
  }
  ms.sort((a, b) => a - b);
  const env = Object.fromEntries(['GENQUEUE_SBMM_LOADS', 'ORT_ENABLE_XQA'].filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
  console.log(JSON.stringify({ shape: values.shape, steps: runner.lastSteps, msPerStep: ms.map((v) => +v.toFixed(4)), median: +ms[Math.floor(ms.length / 2)]!.toFixed(4), env }));
} finally {
  runner.close();
}
