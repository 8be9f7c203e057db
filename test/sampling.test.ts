import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Generator } from '../src/engine/generator.js';
import type { GenerationRequest, SearchParams } from '../src/engine/generation-types.js';
import { buildModel } from '../src/model/model-builder.js';
import { lastPositionLogits } from './harness/decoder-step.js';
import { fixturePath } from './harness/fixtures.js';
import { testDevice } from './harness/test-device.js';

const PROMPT = [15496, 995];
const request = (search: SearchParams, maxNewTokens = 16): GenerationRequest => ({
  promptIds: PROMPT,
  maxNewTokens,
  minNewTokens: 0,
  repetitionPenalty: 1,
  search,
});
/** The k most likely next tokens after the prompt, from the decoder step alone (last-position logits). */
async function topTokens(prompt: number[], k: number): Promise<number[]> {
  const [logits] = await lastPositionLogits(fixturePath('gpt2-tiny'), [prompt]);
  return Array.from(logits!).map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]).slice(0, k).map(([, i]) => i);
}

const tokens = (r: unknown): number[] => {
  assert.ok(r && typeof r === 'object' && 'tokenIds' in r, JSON.stringify(r));
  return (r as { tokenIds: number[] }).tokenIds;
};

describe('sampling (Gumbel-max inside GreedySearch) on the tiny GPT-2 fixture', () => {
  let dir: string;
  let gen: Generator;
  let greedy: number[];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-sample-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    gen = await Generator.open(dir, { device: testDevice() });
    greedy = tokens((await gen.generate([request({ kind: 'greedy' })])).results[0]);
  });
  after(async () => {
    await gen.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('top_k = 1 keeps only the best token: it reproduces greedy exactly', async () => {
    const out = await gen.generate([request({ kind: 'sample', temperature: 1, topK: 1, topP: 1 })]);
    assert.deepEqual(tokens(out.results[0]), greedy);
  });

  it('a tiny top_p keeps only the most likely token: it reproduces greedy exactly', async () => {
    const out = await gen.generate([
      request({ kind: 'sample', temperature: 1, topK: 0, topP: 1e-6 }),
      request({ kind: 'sample', temperature: 1, topK: 40, topP: 1e-6 }),
    ]);
    assert.deepEqual(tokens(out.results[0]), greedy, 'top_p alone (the whole vocabulary sorted)');
    assert.deepEqual(tokens(out.results[1]), greedy, 'top_p within the top 40');
  });

  it('plain sampling draws different continuations for identical prompts', async () => {
    const rows = Array.from({ length: 6 }, () => request({ kind: 'sample', temperature: 1, topK: 0, topP: 1 }));
    const out = await gen.generate(rows);
    const distinct = new Set(out.results.map((r) => JSON.stringify(tokens(r))));
    assert.ok(distinct.size > 1, 'six sampled rows were all identical');
    for (const r of out.results) assert.equal(tokens(r).length, 16);
  });

  it('top_k = 3 only ever picks the first token among the model\'s three most likely', async () => {
    const rows = Array.from({ length: 32 }, () => request({ kind: 'sample', temperature: 1, topK: 3, topP: 1 }, 1));
    const out = await gen.generate(rows);
    const firsts = new Set(out.results.map((r) => tokens(r)[0]!));
    const top3 = await topTokens(PROMPT, 3);
    for (const t of firsts) assert.ok(top3.includes(t), `sampled ${t}, not among the top 3 ${top3}`);
  });
});
