import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Generator } from '../src/engine/generator.js';
import { buildModel } from '../src/model/model-builder.js';
import { writeEosCheckpoint } from './harness/eos-checkpoint.js';
import { fixturePath } from './harness/fixtures.js';
import { greedyRequest as request } from './harness/requests.js';
import { testDevice } from './harness/test-device.js';


describe('Generator on the tiny GPT-2 fixture', () => {
  let dir: string;
  let gen: Generator;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-gen-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
    gen = await Generator.open(dir, { device: testDevice() });
  });
  after(async () => {
    await gen.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('caps each row at its own max_new_tokens inside one run and reports "length"', async () => {
    const long = await gen.generate([request([15496, 995], 20)]);
    const mixed = await gen.generate([request([15496, 995], 5), request([7454, 2402, 257, 640], 20), request([15496, 995], 20)]);
    assert.equal(mixed.timings.runs, 1);
    const [a, b, c] = mixed.results as { tokenIds: number[]; finishReason: string }[];
    assert.equal(a!.tokenIds.length, 5);
    assert.equal(a!.finishReason, 'length');
    assert.equal(b!.tokenIds.length, 20);
    assert.deepEqual(a!.tokenIds, (long.results[0] as { tokenIds: number[] }).tokenIds.slice(0, 5));
    assert.deepEqual(c, long.results[0]);
  });

  it('refuses a prompt + max_new_tokens beyond the context length, naming both, and runs the others', async () => {
    const prompt = Array.from({ length: 100 }, () => 464);
    const out = await gen.generate([request(prompt, 29), request([15496, 995], 4)]);
    const bad = out.results[0] as { error: string };
    assert.match(bad.error, /prompt \(100 tokens\) \+ max_new_tokens \(29\) = 129 exceeds the model's context length 128/);
    assert.equal((out.results[1] as { tokenIds: number[] }).tokenIds.length, 4);
  });

  it('splits rows that cannot share a run within the context length', async () => {
    const prompt = Array.from({ length: 100 }, () => 464);
    const out = await gen.generate([request(prompt, 28), request([15496, 995], 60)]);
    assert.equal(out.timings.runs, 2);
    assert.equal((out.results[0] as { tokenIds: number[] }).tokenIds.length, 28);
    assert.equal((out.results[1] as { tokenIds: number[] }).tokenIds.length, 60);
  });

  it('refuses token ids outside the vocabulary and empty prompts', async () => {
    const out = await gen.generate([request([50257], 2), request([], 2)]);
    assert.match((out.results[0] as { error: string }).error, /outside \[0, 50257\)/);
    assert.match((out.results[1] as { error: string }).error, /empty/);
  });
});

describe('Generator stop handling (a model that always predicts EOS)', () => {
  let dir: string;
  let gen: Generator;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-eos-'));
    const ckpt = join(dir, 'ckpt');
    const built = join(dir, 'built');
    writeEosCheckpoint(ckpt);
    mkdirSync(built);
    buildModel(ckpt, built, { precision: 'fp32' });
    gen = await Generator.open(built, { device: testDevice() });
  });
  after(async () => {
    await gen.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops at EOS with finishReason "stop" and no EOS in the tokens', async () => {
    const out = await gen.generate([request([15496, 995], 10)]);
    assert.deepEqual(out.results[0], { tokenIds: [], finishReason: 'stop' });
  });

  it('min_new_tokens holds EOS back for exactly that many new tokens, whatever the padding', async () => {
    const out = await gen.generate([request([15496, 995], 10, 4), request([7454, 2402, 257, 640, 11, 612], 10, 4)]);
    for (const r of out.results as { tokenIds: number[]; finishReason: string }[]) {
      assert.equal(r.tokenIds.length, 4);
      assert.equal(r.finishReason, 'stop');
    }
  });
});
