/**
 * Engine-only timing: a random GPT-2-shaped checkpoint (made here, not downloaded), built by our builder,
 * run through the in-graph search from onnxruntime-node. No early stop (min_new_tokens = max_new_tokens).
 *   node dist/bench/engine-bench.js --shape small --device cuda:0 --precision fp16 --batch 1,64 --json out.json
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { timeIt } from './bench-types.js';
import { fixedLengthRequests } from './search-bench.js';
import { Generator } from '../src/engine/generator.js';
import { parseDevice } from '../src/engine/execution-provider.js';
import { GPT2_LARGE_SHAPE, GPT2_SMALL_SHAPE, writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { ModelCache } from '../src/model/model-cache.js';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'small' },
    device: { type: 'string', default: 'cpu' },
    precision: { type: 'string', default: 'fp32' },
    batch: { type: 'string', default: '1' },
    'prompt-len': { type: 'string', default: '8' },
    total: { type: 'string', default: '256' },
    repeats: { type: 'string', default: '3' },
    work: { type: 'string', default: '/tmp/genqueue-bench' },
    json: { type: 'string' },
  },
});
const shape = values.shape === 'large' ? GPT2_LARGE_SHAPE : GPT2_SMALL_SHAPE;
const ckpt = join(values.work!, `ckpt-${values.shape}`);
if (!existsSync(join(ckpt, 'config.json'))) {
  mkdirSync(ckpt, { recursive: true });
  writeRandomGpt2Checkpoint(ckpt, shape);
}
const precision = values.precision === 'fp16' ? 'fp16' : 'fp32';
const model = await new ModelCache(join(values.work!, 'cache')).resolve(ckpt, precision);
const t0 = performance.now();
const gen = await Generator.open(model.dir, { device: parseDevice(values.device!), onWarning: (m) => console.error(m) });
const sessionSeconds = (performance.now() - t0) / 1000;
const lengths = { promptTokens: Number(values['prompt-len']), totalTokens: Number(values.total) };
const newTokens = lengths.totalTokens - lengths.promptTokens;
const rows = [];
for (const bs of values.batch!.split(',').map(Number)) {
  const reqs = fixedLengthRequests(bs, lengths);
  const first = await gen.generate(reqs); // kept for its tokens; timeIt warms up once more
  const secondsPerBatch = await timeIt(() => gen.generate(reqs), Number(values.repeats), 1);
  const r0 = first.results[0]!;
  rows.push({
    name: `ort-ingraph-${precision}`,
    batch: bs,
    secondsPerBatch,
    newTokensPerSecond: (bs * newTokens) / secondsPerBatch,
    device: gen.device,
    tokens: 'error' in r0 ? r0.error : r0.tokenIds,
  });
  console.log(JSON.stringify(rows[rows.length - 1]));
}
await gen.close();
const out = { shape: values.shape, precision, sessionSeconds, buildSeconds: model.manifest.buildSeconds, rows };
if (values.json) writeFileSync(values.json, JSON.stringify(out, null, 1));
