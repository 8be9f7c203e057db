import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildModel } from '../src/model/model-builder.js';
import { Generator } from '../src/engine/generator.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { lastPositionLogits } from './harness/decoder-step.js';
import { HfReference, fixturePath } from './harness/fixtures.js';
import { greedyRequest as greedy } from './harness/requests.js';
import { testDevice } from './harness/test-device.js';


/** Steps whose top-1/top-2 logit gap is below this may flip between float implementations. */
const TINY_MARGIN = 1e-3;

const CKPT = fixturePath('gpt2-tiny');
const ref = HfReference.parse(JSON.parse(readFileSync(join(CKPT, 'reference.json'), 'utf8')));

/** Greedy tokens that must agree: up to (not including) the first step with a tiny margin. */
function comparableLength(margins: readonly number[]): number {
  const i = margins.findIndex((m) => m < TINY_MARGIN);
  return i === -1 ? margins.length : i;
}


describe('parity with Hugging Face transformers (random GPT-2 fixture)', () => {
  let dir: string;
  let generator: Generator;
  let tokenizer: TextTokenizer;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-parity-'));
    buildModel(CKPT, dir, { precision: 'fp32' });
    generator = await Generator.open(dir, { device: testDevice() });
    tokenizer = TextTokenizer.fromFile(join(CKPT, 'tokenizer.json'));
  });
  after(async () => {
    await generator?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('tokenizes every prompt to the same ids as HF', async () => {
    for (const c of ref.cases) assert.deepEqual(await tokenizer.encode(c.prompt), c.ids, c.prompt);
  });

  it('gives the same last-position logits as HF for each prompt (decoder step alone)', async () => {
    const logits = await lastPositionLogits(CKPT, ref.cases.map((c) => c.ids));
    ref.cases.forEach((c, k) =>
      c.last_logits_head.forEach((v, i) => assert.ok(Math.abs(logits[k]![i]! - v) < 1e-4, `${c.prompt}: logit ${i} ${logits[k]![i]} vs HF ${v}`)),
    );
  });

  it('greedy tokens equal HF up to the first step with a tiny top-2 margin', async () => {
    let compared = 0;
    for (const c of ref.cases) {
      const { results } = await generator.generate([greedy(c.ids, c.greedy.length)]);
      const r = results[0]!;
      assert.ok(!('error' in r), JSON.stringify(r));
      const n = comparableLength(c.greedy_margins);
      assert.deepEqual(r.tokenIds.slice(0, n), c.greedy.slice(0, n), `prompt ${JSON.stringify(c.prompt)}`);
      compared += n;
    }
    // The fixture is made with clear margins: most steps must actually be compared, or the test proves little.
    assert.ok(compared >= ref.cases.length * 12, `only ${compared} tokens were comparable`);
  });

  it('a batch of left-padded prompts gives each prompt its one-at-a-time tokens', async () => {
    const singles = [];
    for (const c of ref.cases) singles.push((await generator.generate([greedy(c.ids, 24)])).results[0]);
    const batched = await generator.generate(ref.cases.map((c) => greedy(c.ids, 24)));
    assert.equal(batched.timings.runs, 1, 'the whole batch should be one run');
    assert.deepEqual(batched.results, singles);
  });

  it('4-beam search equals HF', async () => {
    for (const c of ref.cases) {
      const { results } = await generator.generate([
        { promptIds: c.ids, maxNewTokens: c.beam4.length, minNewTokens: 0, repetitionPenalty: 1, search: { kind: 'beam', numBeams: 4, lengthPenalty: 1 } },
      ]);
      const r = results[0]!;
      assert.ok(!('error' in r), JSON.stringify(r));
      assert.deepEqual(r.tokenIds, c.beam4, `prompt ${JSON.stringify(c.prompt)}`);
    }
  });
});
