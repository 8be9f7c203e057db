import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { DEVICE_LOOP_ADDON, DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import type { GenerationRequest } from '../src/engine/generation-types.js';
import { Generator } from '../src/engine/generator.js';
import { readManifest } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { fixtureCheckpoint, fixtureReference } from './harness/fixtures.js';
import { greedyRequest as greedy } from './harness/requests.js';

const Cases = z.object({ cases: z.array(z.object({ ids: z.array(z.number()), greedy: z.array(z.number()) })) });

/**
 * Llama 3.1's fixture with its generation_config's EOS list extended by the token that greedy decoding emits first
 * for one prompt: as a second EOS id it must end that row at once, in every search, and min_new_tokens must hold
 * it back like the first id.
 */
describe('several EOS ids: any of them ends a row', () => {
  let dir: string;
  let generator: Generator;
  let prompt: number[];
  let firstToken: number;
  before(async () => {
    const ref = Cases.parse(fixtureReference('llama31-tiny'));
    prompt = ref.cases[0]!.ids;
    firstToken = ref.cases[0]!.greedy[0]!;
    const ckpt = join(mkdtempSync(join(tmpdir(), 'genqueue-eos-list-')), 'llama31-tiny');
    cpSync(fixtureCheckpoint('llama31-tiny'), ckpt, { recursive: true });
    const gen = JSON.parse(readFileSync(join(ckpt, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
    gen.eos_token_id = [gen.eos_token_id[0]!, firstToken, ...gen.eos_token_id.slice(1)];
    writeFileSync(join(ckpt, 'generation_config.json'), JSON.stringify(gen));
    dir = mkdtempSync(join(tmpdir(), 'genqueue-eos-list-model-'));
    buildModel(ckpt, dir, { precision: 'fp32' });
    generator = await Generator.open(dir, { device: { kind: 'cpu' } });
  });
  after(async () => {
    await generator?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('greedy, beam and sampling stop at the second EOS id; min_new_tokens suppresses it', async () => {
    assert.deepEqual(readManifest(dir).spec.eosTokenIds.slice(0, 2), [128001, firstToken]);
    const beam: GenerationRequest = { ...greedy(prompt, 8), search: { kind: 'beam', numBeams: 4, lengthPenalty: 1 } };
    const sample: GenerationRequest = { ...greedy(prompt, 8), search: { kind: 'sample', temperature: 1e-4, topK: 0, topP: 1 } };
    for (const request of [greedy(prompt, 8), sample]) {
      assert.deepEqual((await generator.generate([request])).results[0], { tokenIds: [], finishReason: 'stop' }, request.search.kind);
    }
    const b = (await generator.generate([beam])).results[0]!;
    assert.ok(!('error' in b) && !b.tokenIds.includes(firstToken), JSON.stringify(b));
    const held = (await generator.generate([greedy(prompt, 6, 3)])).results[0]!;
    assert.ok(!('error' in held));
    assert.ok(held.tokenIds.length >= 3 && !held.tokenIds.slice(0, 3).includes(firstToken), JSON.stringify(held));
  });

  it('the device loop stops there too', { skip: !existsSync(DEVICE_LOOP_ADDON) && 'device-loop addon not built' }, () => {
    const loop = DeviceLoopRunner.open(dir, readManifest(dir), { device: { kind: 'cpu' } });
    try {
      const [stopped, held] = loop.run([greedy(prompt, 8), greedy(prompt, 6, 3)]);
      assert.deepEqual(stopped, { tokenIds: [], finishReason: 'stop' });
      assert.ok(held!.tokenIds.length >= 3 && !held!.tokenIds.slice(0, 3).includes(firstToken), JSON.stringify(held));
    } finally {
      loop.close();
    }
  });
});
