import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEVICE_LOOP_ADDON, DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import { Generator } from '../src/engine/generator.js';
import { readManifest } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { TextTokenizer } from '../src/tokenizer/text-tokenizer.js';
import { lastPositionLogits } from './harness/decoder-step.js';
import { LlamaFamilyReference, fixtureCheckpoint, fixtureReference } from './harness/fixtures.js';
import { greedyRequest as greedy } from './harness/requests.js';
import { testDevice } from './harness/test-device.js';



interface FixturePlan {
  readonly name: string;
  /** Largest |logit - HF| allowed on the first 8 logits of each prompt's last position. */
  readonly logitTolerance: number;
  /** Greedy steps whose top-2 margin is below this may flip between float implementations. */
  readonly tie: number;
  /** Compare only prompts shorter than this (dynamic rope: HF keeps a grown base across calls, see rotary.ts). */
  readonly maxPromptLength?: number;
  /** Whether HF's batched run is comparable (dynamic rope: the batch's longest row sets the base, and HF's state). */
  readonly batched: boolean;
  /** Tokens the fp16 device loop must be compared on (default 4 per prompt): the reference's margins allow fewer. */
  readonly fp16Compared?: number;
}

const PLANS: FixturePlan[] = [
  { name: 'llama31-tiny', logitTolerance: 1e-4, tie: 1e-3, batched: true, fp16Compared: 14 },
  { name: 'qwen2-tiny', logitTolerance: 1e-4, tie: 1e-3, batched: true },
  { name: 'llama-linear-tiny', logitTolerance: 1e-4, tie: 1e-3, batched: true },
  { name: 'llama-dynamic-tiny', logitTolerance: 1e-4, tie: 1e-3, maxPromptLength: 16, batched: false },
  { name: 'mistral-tiny', logitTolerance: 1e-4, tie: 1e-3, batched: true },
];

const comparable = (c: LlamaFamilyReference['cases'][number], tie: number): number => {
  const i = c.greedy_margins.findIndex((m) => m < tie);
  return i === -1 ? c.greedy.length : i;
};

const addonBuilt = existsSync(DEVICE_LOOP_ADDON);
if (!addonBuilt && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);

for (const plan of PLANS) {
  describe(`parity with HF transformers: ${plan.name}`, () => {
    const ref = LlamaFamilyReference.parse(fixtureReference(plan.name));
    const cases = ref.cases.filter((c) => c.ids.length < (plan.maxPromptLength ?? Infinity));
    let dir: string;
    let generator: Generator;
    let tokenizer: TextTokenizer;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), `genqueue-parity-${plan.name}-`));
      buildModel(fixtureCheckpoint(plan.name), dir, { precision: 'fp32' });
      generator = await Generator.open(dir, { device: testDevice() });
      tokenizer = TextTokenizer.fromModelDir(dir, readManifest(dir).files);
    });
    after(async () => {
      await generator?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('tokenizes every prompt to HF\'s ids (the post-processor\'s BOS included) and decodes as HF does', async () => {
      for (const c of ref.cases) assert.deepEqual(await tokenizer.encode(c.prompt), c.ids, c.prompt);
      assert.deepEqual(await tokenizer.encodeBatch(ref.cases.map((c) => c.prompt)), ref.cases.map((c) => c.ids));
      for (const d of ref.decode) assert.equal(await tokenizer.decode(d.ids), d.text);
    });

    it('renders chat messages with the model\'s template as HF\'s apply_chat_template (text and ids)', { skip: !ref.chat && 'fixture made without chat renderings' }, async () => {
      for (const c of ref.chat ?? []) assert.deepEqual(await tokenizer.encodeChat(c.messages), { text: c.text, ids: c.ids });
    });

    it('builds a spec with every EOS id of generation_config', () => {
      assert.deepEqual(readManifest(dir).spec.eosTokenIds, ref.eos_ids);
    });

    it('gives the same last-position logits as HF (decoder step alone)', async () => {
      const logits = await lastPositionLogits(fixtureCheckpoint(plan.name), cases.map((c) => c.ids));
      cases.forEach((c, k) =>
        c.last_logits_head.forEach((v, i) => assert.ok(Math.abs(logits[k]![i]! - v) < plan.logitTolerance, `${c.prompt}: logit ${i} ${logits[k]![i]} vs HF ${v}`)),
      );
    });

    it('greedy tokens, one prompt at a time, equal HF up to the first near-tie', async () => {
      let compared = 0;
      for (const c of cases) {
        const r = (await generator.generate([greedy(c.ids, c.greedy.length)])).results[0]!;
        assert.ok(!('error' in r), JSON.stringify(r));
        const n = comparable(c, plan.tie);
        assert.deepEqual(r.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
        compared += n;
      }
      assert.ok(compared >= cases.length * 8, `only ${compared} tokens were comparable`);
    });

    it('a left-padded batch gives each prompt its one-at-a-time tokens (and HF batched run)', { skip: !plan.batched && 'dynamic rope: a batch shares its longest row\'s base' }, async () => {
      const singles = [];
      for (const c of cases) singles.push((await generator.generate([greedy(c.ids, c.greedy.length)])).results[0]);
      const batched = await generator.generate(cases.map((c) => greedy(c.ids, c.greedy.length)));
      assert.equal(batched.timings.runs, 1);
      assert.deepEqual(batched.results, singles);
      cases.forEach((c, i) => {
        const n = comparable(c, plan.tie);
        const r = batched.results[i]!;
        assert.ok(!('error' in r));
        assert.deepEqual(r.tokenIds.slice(0, n), ref.batched_greedy[ref.cases.indexOf(c)]!.slice(0, n), c.prompt);
      });
    });

    it('4-beam search equals HF where no hypothesis ends (ONNX Runtime normalizes a finished beam by prompt + new tokens, HF by new tokens)', async () => {
      let compared = 0;
      for (const c of cases) {
        const r = (await generator.generate([{ promptIds: c.ids, maxNewTokens: c.beam4.length, minNewTokens: 0, repetitionPenalty: 1, search: { kind: 'beam', numBeams: 4, lengthPenalty: 1 } }])).results[0]!;
        assert.ok(!('error' in r), JSON.stringify(r));
        if (r.finishReason === 'stop' || c.beam4.some((t) => ref.eos_ids.includes(t)) || c.beam4.length < 16) continue;
        assert.deepEqual(r.tokenIds, c.beam4, c.prompt);
        compared++;
      }
      assert.ok(compared >= cases.length / 2, `only ${compared} prompts compared`);
    });

    it('the device loop (CPU provider, GroupQueryAttention step) gives HF\'s greedy tokens', { skip: !addonBuilt && 'device-loop addon not built' }, (t) => {
      const manifest = readManifest(dir);
      if (!manifest.capabilities.deviceLoop) {
        assert.throws(() => DeviceLoopRunner.open(dir, manifest, { device: { kind: 'cpu' } }), /no device-loop step \(dynamic rope/);
        t.diagnostic('no device loop for dynamic rope: refused with a clear error');
        return;
      }
      const loop = DeviceLoopRunner.open(dir, manifest, { device: { kind: 'cpu' } });
      try {
        const out = loop.run(cases.map((c) => greedy(c.ids, c.greedy.length)));
        cases.forEach((c, i) => {
          const n = comparable(c, plan.tie);
          assert.deepEqual(out[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
        });
      } finally {
        loop.close();
      }
    });
  });
}

describe('chat messages for a model without a chat template', () => {
  it('are refused with a clear error (GPT-2 fixture)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-nochat-'));
    try {
      buildModel(fixtureCheckpoint('gpt2-tiny'), dir, { precision: 'fp32' });
      const tokenizer = TextTokenizer.fromModelDir(dir, readManifest(dir).files);
      assert.equal(tokenizer.hasChatTemplate, false);
      await assert.rejects(tokenizer.encodeChat([{ role: 'user', content: 'hi' }]), { name: 'ChatTemplateError', message: /messages: this model has no chat template/ });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// On the GPU machine (GENQUEUE_TEST_DEVICE=cuda:0): the search graphs in fp32 give the CPU's tokens, and the fp16
// device loop (GroupQueryAttention with in-place caches sized by kv heads) replays its CUDA graphs faithfully and
// follows HF's greedy tokens up to fp16's near-ties.
const gpu = testDevice();
const gpuSkip = gpu.kind === 'cpu' ? 'set GENQUEUE_TEST_DEVICE=cuda:N' : !addonBuilt ? 'device-loop addon not built' : false;
describe('Llama-family models on CUDA', { skip: gpu.kind === 'cpu' && 'set GENQUEUE_TEST_DEVICE=cuda:N' }, () => {
  for (const plan of PLANS) {
    it(`${plan.name}: fp32 greedy and 4-beam tokens on CUDA equal the CPU's`, async () => {
      const ref = LlamaFamilyReference.parse(fixtureReference(plan.name));
      const dir = mkdtempSync(join(tmpdir(), `genqueue-cuda-${plan.name}-`));
      const engines: Generator[] = [];
      try {
        buildModel(fixtureCheckpoint(plan.name), dir, { precision: 'fp32' });
        const [cpu, cuda] = [await Generator.open(dir, { device: { kind: 'cpu' } }), await Generator.open(dir, { device: gpu })];
        engines.push(cpu!, cuda!);
        const requests = ref.cases.flatMap((c) => [
          greedy(c.ids, c.greedy.length),
          { promptIds: c.ids, maxNewTokens: 16, minNewTokens: 0, repetitionPenalty: 1, search: { kind: 'beam' as const, numBeams: 4, lengthPenalty: 1 } },
        ]);
        assert.deepEqual((await cuda!.generate(requests)).results, (await cpu!.generate(requests)).results);
        const sampled = (await cuda!.generate(ref.cases.map((c) => ({ ...greedy(c.ids, 8), search: { kind: 'sample' as const, temperature: 1, topK: 20, topP: 0.9 } })))).results;
        for (const r of sampled) assert.ok(!('error' in r), JSON.stringify(r));
      } finally {
        for (const e of engines) await e.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(`${plan.name}: fp16 device loop (captured graphs = plain steps, HF's greedy up to near-ties)`, { skip: gpuSkip || (plan.maxPromptLength !== undefined && 'dynamic rope: no device loop') }, () => {
      const ref = LlamaFamilyReference.parse(fixtureReference(plan.name));
      const dir = mkdtempSync(join(tmpdir(), `genqueue-cuda16-${plan.name}-`));
      try {
        buildModel(fixtureCheckpoint(plan.name), dir, { precision: 'fp16' });
        const manifest = readManifest(dir);
        const plain = DeviceLoopRunner.open(dir, manifest, { device: gpu, cudaGraph: false });
        const graph = DeviceLoopRunner.open(dir, manifest, { device: gpu, cudaGraph: true });
        try {
          const requests = ref.cases.map((c) => greedy(c.ids, c.greedy.length));
          const expected = plain.run(requests);
          for (let call = 0; call < 3; call++) assert.deepEqual(graph.run(requests), expected, `call ${call}`);
          let compared = 0;
          ref.cases.forEach((c, i) => {
            const n = comparable(c, 5e-2);
            assert.deepEqual(expected[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
            compared += n;
          });
          assert.ok(compared >= (plan.fp16Compared ?? ref.cases.length * 4), `only ${compared} tokens compared`);
        } finally {
          plain.close();
          graph.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
