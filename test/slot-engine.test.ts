import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEVICE_LOOP_ADDON, DeviceLoopRunner } from '../src/engine/device-loop-runner.js';
import { Generator } from '../src/engine/generator.js';
import { SlotEngine, type SlotEngineOptions } from '../src/engine/slot-engine.js';
import { SlotCapacityError, SlotEngineClosedError, SlotLoopError, SlotRequestError } from '../src/engine/slot-errors.js';
import type { SlotRequest, SlotResult, SlotStats } from '../src/engine/slot-types.js';
import { DEMO_SHAPE, writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { readManifest } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { EOS, writeEosCheckpoint } from './harness/eos-checkpoint.js';
import { HfReference, LlamaFamilyReference, fixtureCheckpoint, fixturePath, fixtureReference } from './harness/fixtures.js';
import { greedyRequest } from './harness/requests.js';
import { testDevice } from './harness/test-device.js';

// The slot engine on the CPU provider: the same native loop, state machine and NextToken rules as on CUDA (fp32,
// GroupQueryAttention), without the graph capture. Skipped without the addon unless GENQUEUE_REQUIRE_NATIVE=1.
const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;

const CPU = { kind: 'cpu' } as const;
/** One ONNX Runtime thread per session: the CI machine is small and busy, and these models are tiny. */
const THREADS = { intraOpThreads: 1 };


const PROMPTS = [[15496, 995], [7454, 2402, 257, 640, 11, 612], [464], [50256, 464, 886], [818, 262, 3726, 373, 262, 1573, 11, 290, 262, 1573, 373, 351, 1793, 13]];

/** A prompt of n tokens (ids from a fixed walk over the vocabulary). */
const longPrompt = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % 500);

/** A small random GPT-2 (vocabulary 512, head size 8) on which the engine's behaviour tests run fast. */
const SMALL = { layers: 2, heads: 4, embd: 32, positions: 128, vocab: 512, seed: 3, init: 0.5 };

const greedy = (promptIds: number[], maxNewTokens: number): SlotRequest => ({ promptIds, maxNewTokens });
const sample = (promptIds: number[], maxNewTokens: number, seed: bigint | number, extra: { temperature?: number; topK?: number; topP?: number } = {}): SlotRequest => ({
  promptIds,
  maxNewTokens,
  sampling: { kind: 'sample', temperature: extra.temperature ?? 1.5, topK: extra.topK ?? 0, topP: extra.topP ?? 1, seed },
});

describe('slot engine on the tiny GPT-2 fixture (CPU provider)', { skip }, () => {
  let dir: string;
  const engines: SlotEngine[] = [];
  const open = (options: Partial<SlotEngineOptions> = {}): SlotEngine => {
    const e = SlotEngine.open(dir, { device: CPU, ...THREADS, slots: 4, capacity: 96, chunkSteps: 4, prefillChunk: 8, ...options });
    engines.push(e);
    return e;
  };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slots-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
  });
  after(async () => {
    for (const e of engines) await e.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives GreedySearch\'s tokens for ragged prompts sharing the run, and Hugging Face\'s up to the first near-tie', async () => {
    const engine = open();
    const searchOp = await Generator.open(dir, { device: CPU });
    try {
      const lengths = [20, 7, 33, 12, 25];
      const expected = (await searchOp.generate(PROMPTS.map((p, i) => greedyRequest(p, lengths[i]!)))).results;
      const got = await Promise.all(PROMPTS.map((p, i) => engine.generate(greedy(p, lengths[i]!))));
      assert.deepEqual(
        got.map((r) => ({ tokenIds: r.tokenIds, finishReason: r.finishReason })),
        expected,
      );
      // With a repetition penalty too (GreedySearch applies Hugging Face's rule over prompt and output).
      const penalized = (await searchOp.generate([{ ...greedyRequest(PROMPTS[1]!, 30), repetitionPenalty: 1.3 }])).results[0];
      assert.deepEqual((await engine.generate({ ...greedy(PROMPTS[1]!, 30), repetitionPenalty: 1.3 })).tokenIds, (penalized as { tokenIds: number[] }).tokenIds);
    } finally {
      await searchOp.close();
    }
    const ref = HfReference.parse(JSON.parse(readFileSync(join(fixturePath('gpt2-tiny'), 'reference.json'), 'utf8')));
    const out = await Promise.all(ref.cases.map((c) => engine.generate(greedy(c.ids, c.greedy.length))));
    let compared = 0;
    ref.cases.forEach((c, i) => {
      const near = c.greedy_margins.findIndex((m) => m < 1e-3);
      const n = near === -1 ? c.greedy.length : near;
      assert.deepEqual(out[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
      compared += n;
    });
    assert.ok(compared >= 96, `only ${compared} tokens compared`);
  });

});

describe('slot engine behaviour on a small random GPT-2 (CPU provider)', { skip }, () => {
  let dir: string;
  const engines: SlotEngine[] = [];
  const open = (options: Partial<SlotEngineOptions> = {}): SlotEngine => {
    const e = SlotEngine.open(join(dir, 'built'), { device: CPU, ...THREADS, slots: 4, capacity: 96, chunkSteps: 4, prefillChunk: 8, ...options });
    engines.push(e);
    return e;
  };
  const tokens = (results: SlotResult[]) => results.map((r) => r.tokenIds);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slots-small-'));
    writeRandomGpt2Checkpoint(join(dir, 'ckpt'), SMALL);
    mkdirSync(join(dir, 'built'));
    buildModel(join(dir, 'ckpt'), join(dir, 'built'), { precision: 'fp32' });
  });
  after(async () => {
    for (const e of engines) await e.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a request\'s tokens are the same alone as when it joins a running batch mid-way (greedy, exact)', async () => {
    const requests = [greedy(longPrompt(10), 30), greedy(longPrompt(3, 1), 41), greedy(longPrompt(17, 2), 6), greedy(longPrompt(1, 3), 23), greedy(longPrompt(26, 4), 19)];
    const alone: number[][] = [];
    for (const r of requests) alone.push((await open({ slots: 1 }).generate(r)).tokenIds);
    // Three slots: the first three start together, the others join as rows end; the last one joins only once the
    // first has been running for two chunks.
    const engine = open({ slots: 3 });
    const started = requests.slice(1).map((r) => engine.generate(r));
    let chunksSeen = 0;
    const late = await new Promise<Promise<SlotResult>>((resolve) => {
      engine.submit(greedy(longPrompt(40, 5), 30), {
        onTokens: () => {
          if (++chunksSeen === 2) resolve(engine.generate(requests[0]!));
        },
        onDone: () => {},
        onError: (e) => assert.fail(e),
      });
    });
    const joined = [await late, ...(await Promise.all(started))];
    assert.deepEqual(tokens(joined), alone);
    assert.ok(joined[0]!.timings.queueMs >= 0);
  });

  it('chunked prefill, joiners\' first chunks in one run or not, gives the tokens of feeding the prompt one token per run', async () => {
    const requests = [1, 2, 9, 16, 17, 40, 61].map((n, i) => greedy(longPrompt(n, i), 12));
    const oneByOne = tokens(await Promise.all(requests.map((r) => open({ prefillChunk: 1, prefillRows: 1 }).generate(r))));
    const continuation = (chunk: number) => requests.reduce((a, r) => a + Math.max(0, Math.ceil((r.promptIds.length - 1) / chunk) - 1), 0);
    // First chunks run in row buckets (1, 2, 4, … below prefillRows, and prefillRows): the most rows a bucket holds.
    const firstRuns = (rows: number, prefillRows: number) => {
      const buckets = [prefillRows];
      for (let b = 1; b < prefillRows; b *= 2) buckets.push(b);
      let runs = 0;
      for (let left = rows; left > 0; runs++) left -= Math.max(...buckets.filter((b) => b <= left));
      return runs;
    };
    // Chunk 16: later chunks padded to their length bucket (7 → 16 tokens for the 40-token prompt's last one).
    for (const [prefillChunk, prefillRows] of [[3, 1], [8, 16], [16, 4], [64, 2], [64, 16]] as const) {
      // Eight slots: the seven requests join at the first boundary; six have something to prefill.
      const engine = open({ prefillChunk, prefillRows, slots: 8 });
      assert.deepEqual(tokens(await Promise.all(requests.map((r) => engine.generate(r)))), oneByOne, `prefill chunk ${prefillChunk}, rows ${prefillRows}`);
      const stats = engine.statsNow();
      assert.equal(stats.prefillTokens, requests.reduce((a, r) => a + r.promptIds.length - 1, 0));
      assert.equal(stats.prefillRuns, firstRuns(6, prefillRows) + continuation(prefillChunk), `runs for chunk ${prefillChunk}, rows ${prefillRows}`);
    }
    // Every bucketed shape run once at open (the CUDA default): the counters start after it, the tokens are the same.
    const warmed = open({ prefillChunk: 16, prefillRows: 4, slots: 8, warmPrefill: true });
    assert.equal(warmed.statsNow().prefillRuns, 0);
    assert.deepEqual(tokens(await Promise.all(requests.map((r) => warmed.generate(r)))), oneByOne, 'warmed prefill');
  });

  it('profiles the loop: prefill and decode time, decode row-steps offered, every emitted token counted', async () => {
    const counters = ['prefillSeconds', 'decodeSeconds', 'hostSeconds', 'rowSteps', 'emittedTokens'] as const;
    const sane = (s: SlotStats) => {
      for (const k of counters) assert.ok(Number.isFinite(s[k]) && s[k] >= 0, `${k} = ${s[k]}`);
      // On the CPU provider the prefill and decode times are wall time inside admit() and run().
      assert.ok(s.hostSeconds >= (s.prefillSeconds + s.decodeSeconds) * (1 - 1e-9), JSON.stringify(s));
      assert.ok(s.rowSteps <= s.decodeSteps * s.slots, JSON.stringify(s));
    };
    // min_new_tokens = max_new_tokens: no row ends at EOS, so the ring holds exactly the generated tokens.
    const exact = (promptIds: number[], n: number): SlotRequest => ({ promptIds, maxNewTokens: n, minNewTokens: n });

    const oneToken = open({ slots: 2 });
    const short = await Promise.all([exact([5], 9), exact([7], 3), exact([11], 6)].map((r) => oneToken.generate(r)));
    const s1 = oneToken.statsNow();
    sane(s1);
    assert.equal(s1.prefillRuns, 0);
    assert.equal(s1.prefillSeconds, 0, 'one-token prompts have nothing to prefill');
    assert.ok(s1.decodeSeconds > 0);
    assert.equal(s1.emittedTokens, short.reduce((a, r) => a + r.tokenIds.length, 0));
    assert.ok(s1.rowSteps >= s1.emittedTokens);

    // Three slots, four ragged requests: the last one joins when a slot frees, prompts past one prefill chunk.
    const engine = open({ slots: 3, chunkSteps: 4, prefillChunk: 8 });
    const requests = [exact(longPrompt(10), 13), exact(longPrompt(1, 1), 5), exact(longPrompt(26, 2), 21), exact(longPrompt(17, 3), 9)];
    const results = await Promise.all(requests.map((r) => engine.generate(r)));
    assert.deepEqual(results.map((r) => r.tokenIds.length), [13, 5, 21, 9]);
    const s = engine.statsNow();
    sane(s);
    assert.ok(s.prefillRuns > 0 && s.prefillSeconds > 0, JSON.stringify(s));
    assert.ok(s.decodeSeconds > 0);
    assert.equal(s.emittedTokens, 13 + 5 + 21 + 9);
    // Rows end mid-chunk and slots stand empty while nothing waits: more row-steps offered than tokens emitted.
    assert.ok(s.rowSteps > s.emittedTokens, JSON.stringify(s));
  });

  it('a seed gives the same tokens whatever the batch mates, the slot and the run; other seeds give others', async () => {
    const mine = sample(longPrompt(5, 9), 30, 1234567890123n, { temperature: 1.4, topK: 200, topP: 0.97 });
    const alone = (await open({ slots: 1 }).generate(mine)).tokenIds;
    const engine = open({ slots: 4 });
    const mates = [sample(longPrompt(3, 1), 25, 1), greedy(longPrompt(8, 2), 40), sample(longPrompt(2, 3), 10, 99, { topK: 5 })];
    for (let round = 0; round < 2; round++) {
      // Mates first: this request lands in another slot each round, next to other rows.
      const runs = [...mates.slice(round).map((r) => engine.generate(r)), engine.generate(mine)];
      const results = await Promise.all(runs);
      assert.deepEqual(results.at(-1)!.tokenIds, alone, `round ${round}`);
      assert.equal(results.at(-1)!.seed, 1234567890123n);
    }
    assert.deepEqual((await open({ slots: 2, chunkSteps: 7, prefillChunk: 2 }).generate(mine)).tokenIds, alone, 'another engine, other chunk sizes');
    const other = (await engine.generate({ ...mine, sampling: { kind: 'sample', temperature: 1.4, topK: 200, topP: 0.97, seed: 1234567890124n } })).tokenIds;
    assert.notDeepEqual(other, alone);
    // top_k 1 is greedy.
    const g = greedy(longPrompt(6, 4), 20);
    assert.deepEqual((await engine.generate({ ...g, sampling: { kind: 'sample', temperature: 0.8, topK: 1, topP: 1, seed: 5 } })).tokenIds, (await engine.generate(g)).tokenIds);
  });

  it('refuses a prompt too long for a slot alone, with both numbers, and invalid fields by name, taking no slot', async () => {
    const engine = open({ capacity: 64 });
    const before = engine.statsNow();
    assert.throws(
      () => engine.submit(greedy(longPrompt(60), 10), { onDone: () => assert.fail('no result'), onError: () => assert.fail('no error callback') }),
      (e: unknown) => e instanceof SlotCapacityError && /prompt \(60 tokens\) \+ max_new_tokens \(10\) = 70 exceeds the slot capacity 64/.test(e.message),
    );
    const bad: [string, SlotRequest][] = [
      ['promptIds', greedy([], 5)],
      ['promptIds', greedy([50257], 5)],
      ['maxNewTokens', greedy([1], 0)],
      ['minNewTokens', { ...greedy([1], 5), minNewTokens: -1 }],
      ['repetitionPenalty', { ...greedy([1], 5), repetitionPenalty: 0 }],
      ['stopTokenIds', { ...greedy([1], 5), stopTokenIds: [-3] }],
      ['sampling.temperature', sample([1], 5, 1, { temperature: 0 })],
      ['sampling.topP', sample([1], 5, 1, { topP: 0 })],
      ['sampling.topP', sample([1], 5, 1, { topP: 1.01 })],
      ['sampling.topK', sample([1], 5, 1, { topK: -1 })],
      ['sampling.seed', sample([1], 5, -1)],
      ['sampling.seed', sample([1], 5, 1n << 63n)],
      ['sampling.seed', sample([1], 5, 2 ** 60)],
    ];
    for (const [field, request] of bad) {
      assert.throws(
        () => engine.submit(request, { onDone: () => {}, onError: () => {} }),
        (e: unknown) => e instanceof SlotRequestError && e.field === field,
        field,
      );
    }
    assert.deepEqual(engine.statsNow(), before, 'nothing was queued');
    assert.equal((await engine.generate(sample([1], 5, (1n << 63n) - 1n))).tokenIds.length, 5, 'the largest seed is fine');
    assert.equal((await engine.generate(greedy(longPrompt(54), 10))).tokenIds.length, 10, 'a prompt that fits exactly');
  });

  it('finish() ends a request at the next boundary with the tokens delivered so far; cancel() takes one out of the queue', async () => {
    const engine = open({ slots: 1 });
    const request = greedy(longPrompt(4, 7), 60);
    const full = (await engine.generate(request)).tokenIds;
    const delivered: number[] = [];
    const stopped = await new Promise<SlotResult>((resolve, reject) => {
      const handle = engine.submit(request, {
        onTokens: (t) => {
          delivered.push(...t);
          if (delivered.length >= 6) handle.finish();
        },
        onDone: resolve,
        onError: reject,
      });
    });
    assert.equal(stopped.finishReason, 'stop');
    assert.deepEqual(stopped.tokenIds, delivered);
    assert.deepEqual(stopped.tokenIds, full.slice(0, delivered.length));
    assert.equal(delivered.length, 8, 'two chunks of 4');
    // One slot: the second request waits; cancelling it ends it at once, without a slot.
    const running = engine.generate(greedy(longPrompt(3), 40));
    const cancelled = await new Promise<SlotResult>((resolve, reject) => engine.submit(greedy([1, 2], 5), { onDone: resolve, onError: reject }).cancel());
    assert.deepEqual([cancelled.finishReason, cancelled.tokenIds, cancelled.timings.slot], ['cancelled', [], -1]);
    assert.equal((await running).tokenIds.length, 40);
    // Cancelling a running request frees its slot at the next boundary.
    const result = await new Promise<SlotResult>((resolve, reject) => {
      const h = engine.submit(greedy([5], 50), { onTokens: () => h.cancel(), onDone: resolve, onError: reject });
    });
    assert.deepEqual([result.finishReason, result.tokenIds.length], ['cancelled', 4]);
    const stats = engine.statsNow();
    assert.deepEqual([stats.busy, stats.deviceRunning, stats.cancelled], [0, 0, 2]);
  });

  it('a stop id ends a request like EOS (not included) once min_new_tokens exist; the row is freed on the device', async () => {
    const engine = open({ slots: 2 });
    const request = greedy(longPrompt(4, 11), 30);
    const full = (await engine.generate(request)).tokenIds;
    const stopId = full[5]!;
    const first = full.indexOf(stopId);
    const stopped = await engine.generate({ ...request, stopTokenIds: [stopId] });
    assert.deepEqual([stopped.tokenIds, stopped.finishReason], [full.slice(0, first), 'stop']);
    const later = full.indexOf(stopId, first + 1);
    const held = await engine.generate({ ...request, stopTokenIds: [stopId], minNewTokens: first + 1 });
    assert.deepEqual(held.tokenIds, later === -1 ? full : full.slice(0, later));
    assert.deepEqual([engine.statsNow().busy, engine.statsNow().deviceRunning], [0, 0]);
  });

  it('a callback that throws fails its own request only; closing fails what is left and refuses new requests', async () => {
    const warnings: string[] = [];
    const engine = open({ slots: 2, onWarning: (m) => warnings.push(m) });
    const thrown = new Promise<Error>((resolve) =>
      engine.submit(greedy([3, 4], 30), {
        onTokens: () => {
          throw new Error('caller bug');
        },
        onDone: () => assert.fail('no result'),
        onError: resolve,
      }),
    );
    const fine = engine.generate(greedy([3, 4], 30));
    assert.equal((await thrown).message, 'caller bug');
    assert.equal((await fine).tokenIds.length, 30);
    assert.match(warnings.join('\n'), /callback threw \(caller bug\)/);
    assert.deepEqual([engine.statsNow().busy, engine.statsNow().deviceRunning], [0, 0]);
    const pending = [engine.generate(greedy([1], 80)), engine.generate(greedy([2], 80)), engine.generate(greedy([3], 80))];
    await engine.close();
    for (const p of pending) await assert.rejects(p, SlotEngineClosedError);
    assert.throws(() => engine.submit(greedy([1], 2), { onDone: () => {}, onError: () => {} }), SlotEngineClosedError);
    await engine.close();
  });

  it('a native failure fails the requests it hit with SlotLoopError, and the engine carries on with the next ones', async () => {
    const engine = open({ slots: 2 });
    const inside = engine as unknown as { addon: { slotClose(h: unknown): void }; handle: unknown };
    inside.addon.slotClose(inside.handle); // every native call fails from now on
    const results = await Promise.allSettled([1, 2, 3].map((t) => engine.generate(greedy([t, t + 1], 5))));
    for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof SlotLoopError && /not an open slot loop/.test(r.reason.message));
  });

  it('10,000 short requests through 8 slots: every one completes, every slot is reused, none leaks (JS and native accounting agree)', async () => {
    const engine = SlotEngine.open(join(dir, 'built'), { device: CPU, ...THREADS, slots: 8, capacity: 16, chunkSteps: 4 });
    try {
      const used = new Set<number>();
      let maxBusy = 0;
      let mismatches = 0;
      const results = await Promise.all(
        Array.from({ length: 10_000 }, (_, i) =>
          engine.generate({ promptIds: i % 3 ? [7] : [5, 9, 11], maxNewTokens: 1 + (i % 5) }).then((r) => {
            used.add(r.timings.slot);
            const s = engine.statsNow();
            maxBusy = Math.max(maxBusy, s.busy);
            // Between chunks the device's running rows are the busy slots, less rows that ended in the last chunk.
            if (s.deviceRunning > s.busy) mismatches++;
            return r;
          }),
        ),
      );
      assert.equal(results.length, 10_000);
      results.forEach((r, i) => assert.equal(r.tokenIds.length, 1 + (i % 5)));
      const stats = engine.statsNow();
      assert.deepEqual(
        { busy: stats.busy, waiting: stats.waiting, deviceRunning: stats.deviceRunning, admitted: stats.admitted, completed: stats.completed, failed: stats.failed },
        { busy: 0, waiting: 0, deviceRunning: 0, admitted: 10_000, completed: 10_000, failed: 0 },
      );
      assert.deepEqual([...used].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7]);
      assert.ok(maxBusy <= 8);
      assert.equal(mismatches, 0);
    } finally {
      await engine.close();
    }
  });
});

describe('slot engine: EOS, min_new_tokens and stop ids (a model that always predicts EOS)', { skip }, () => {
  let dir: string;
  let engine: SlotEngine;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slots-eos-'));
    writeEosCheckpoint(join(dir, 'ckpt'));
    mkdirSync(join(dir, 'built'));
    buildModel(join(dir, 'ckpt'), join(dir, 'built'), { precision: 'fp32' });
    engine = SlotEngine.open(join(dir, 'built'), { device: CPU, ...THREADS, slots: 3, chunkSteps: 4 });
  });
  after(async () => {
    await engine?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stops at EOS ("stop", EOS not included) and holds it back for min_new_tokens, per row', async () => {
    const [none, four, seven] = await Promise.all([
      engine.generate(greedy([15496, 995], 10)),
      engine.generate({ ...greedy([15496, 995], 10), minNewTokens: 4 }),
      engine.generate({ ...sample([7454, 2402, 257], 10, 3), minNewTokens: 7 }),
    ]);
    assert.deepEqual([none!.tokenIds, none!.finishReason], [[], 'stop']);
    assert.deepEqual([four!.tokenIds.length, four!.finishReason], [4, 'stop']);
    assert.deepEqual([seven!.tokenIds.length, seven!.finishReason, seven!.tokenIds.includes(EOS)], [7, 'stop', false]);
    // min_new_tokens = max_new_tokens: EOS never comes, the row ends at its length.
    const held = await engine.generate({ ...greedy([15496, 995], 9), minNewTokens: 9 });
    assert.deepEqual([held.tokenIds.length, held.finishReason], [9, 'length']);
    // The ring carries the EOS that ended each of the three stopped rows; the results leave it out.
    assert.equal(engine.statsNow().emittedTokens, 0 + 4 + 7 + 9 + 3);
  });
});

// Llama-family fixtures: grouped K/V heads (caches of kv heads), rotary positions per row (GroupQueryAttention's own
// rotary for head size 16, RotaryEmbedding at each row's position_ids for head size 8), Mistral's sliding window,
// and Llama 3.1's three EOS ids on the device.
const FAMILY = [
  { name: 'llama31-tiny', tie: 2e-2 },
  { name: 'qwen2-tiny', tie: 1e-3 },
  { name: 'llama-linear-tiny', tie: 1e-3 },
  { name: 'mistral-tiny', tie: 1e-3 },
];

describe('slot engine on Llama-family fixtures (CPU provider)', { skip }, () => {
  for (const plan of FAMILY) {
    it(`${plan.name}: HF's greedy tokens up to the first near-tie, every prompt joining one run (prefill chunks of 4)`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `genqueue-slots-${plan.name}-`));
      try {
        buildModel(fixtureCheckpoint(plan.name), dir, { precision: 'fp32' });
        const ref = LlamaFamilyReference.parse(fixtureReference(plan.name));
        const engine = SlotEngine.open(dir, { device: CPU, ...THREADS, slots: 8, capacity: 64, chunkSteps: 4, prefillChunk: 4 });
        try {
          assert.deepEqual(engine.limits.eosTokenIds, ref.eos_ids);
          const out = await Promise.all(ref.cases.map((c) => engine.generate(greedy(c.ids, c.greedy.length))));
          let compared = 0;
          ref.cases.forEach((c, i) => {
            const near = c.greedy_margins.findIndex((m) => m < plan.tie);
            const n = near === -1 ? c.greedy.length : near;
            assert.deepEqual(out[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
            compared += n;
          });
          assert.ok(compared >= ref.cases.length * 8, `only ${compared} tokens compared`);
        } finally {
          await engine.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('llama-dynamic-tiny (dynamic rope: no GroupQueryAttention step) is refused with the reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-slots-dynamic-'));
    try {
      buildModel(fixtureCheckpoint('llama-dynamic-tiny'), dir, { precision: 'fp32' });
      assert.throws(() => SlotEngine.open(dir, { device: CPU }), /has no slot-engine steps/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// On the GPU machine (GENQUEUE_TEST_DEVICE=cuda:N): fp16 builds, with and without the captured CUDA graph.
const gpu = testDevice();
const gpuSkip = skip || (gpu.kind === 'cpu' ? 'CUDA only (GENQUEUE_TEST_DEVICE=cuda:N)' : false);

describe('slot engine on CUDA (fp16)', { skip: gpuSkip }, () => {
  let dir: string;
  const engines: SlotEngine[] = [];
  const open = (sub: string, options: Partial<SlotEngineOptions> = {}): SlotEngine => {
    const e = SlotEngine.open(join(dir, sub), { device: gpu, slots: 8, capacity: 256, chunkSteps: 16, prefillChunk: 32, ...options });
    engines.push(e);
    return e;
  };
  const mixed = (): SlotRequest[] => [
    greedy(longPrompt(2), 60),
    greedy(longPrompt(70, 1), 45),
    sample(longPrompt(5, 2), 50, 11, { temperature: 0.9, topK: 50, topP: 0.95 }),
    { ...greedy(longPrompt(9, 3), 40), repetitionPenalty: 1.3 },
    sample(longPrompt(130, 4), 33, 12),
    greedy(longPrompt(1, 5), 70),
    sample(longPrompt(17, 6), 64, 13, { topP: 0.8 }),
    greedy(longPrompt(33, 7), 20),
    greedy(longPrompt(3, 8), 51),
    sample(longPrompt(40, 9), 29, 14, { topK: 1 }),
  ];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-slots-cuda-'));
    for (const sub of ['tiny', 'demo', 'eos']) mkdirSync(join(dir, sub));
    buildModel(fixturePath('gpt2-tiny'), join(dir, 'tiny'), { precision: 'fp16' });
    writeRandomGpt2Checkpoint(join(dir, 'demo-ckpt'), DEMO_SHAPE);
    buildModel(join(dir, 'demo-ckpt'), join(dir, 'demo'), { precision: 'fp16' });
    writeEosCheckpoint(join(dir, 'eos-ckpt'));
    buildModel(join(dir, 'eos-ckpt'), join(dir, 'eos'), { precision: 'fp16' });
  });
  after(async () => {
    for (const e of engines) await e.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('replaying the captured graph gives the tokens of running the steps plainly, call after call', async () => {
    for (const sub of ['tiny', 'demo']) {
      // The tiny fixture holds 128 positions: its slots are that long, and only requests that fit run.
      const capacity = sub === 'tiny' ? 128 : 256;
      const requests = (): SlotRequest[] => mixed().filter((r) => r.promptIds.length + r.maxNewTokens <= capacity);
      const plain = open(sub, { cudaGraph: false, capacity });
      const graph = open(sub, { capacity });
      const expected = (await Promise.all(requests().map((r) => plain.generate(r)))).map((r) => r.tokenIds);
      for (let call = 0; call < 3; call++) {
        assert.deepEqual((await Promise.all(requests().map((r) => graph.generate(r)))).map((r) => r.tokenIds), expected, `${sub} call ${call}`);
      }
      assert.ok(graph.statsNow().graphReplays > 0, 'the graph engine replayed');
      assert.equal(plain.statsNow().graphReplays, 0);
    }
  });

  it('joining mid-way, another slot and other batch mates change no token (same slot count: same kernels)', async () => {
    // Prefill one row per run: a row's prefill then has the same shapes alone and among joiners.
    const engine = open('demo', { slots: 4, prefillRows: 1 });
    const requests = mixed();
    const alone: number[][] = [];
    for (const r of requests) alone.push((await engine.generate(r)).tokenIds);
    const together = await Promise.all(requests.map((r) => engine.generate(r)));
    assert.deepEqual(together.map((r) => r.tokenIds), alone);
    assert.ok(new Set(together.map((r) => r.timings.slot)).size > 1);
  });

  it('fp16 tokens equal Hugging Face\'s (fp32) up to near-ties, and the device loop\'s fp16 tokens for many steps', async () => {
    const ref = HfReference.parse(JSON.parse(readFileSync(join(fixturePath('gpt2-tiny'), 'reference.json'), 'utf8')));
    const engine = open('tiny', { capacity: 128 });
    const out = await Promise.all(ref.cases.map((c) => engine.generate(greedy(c.ids, c.greedy.length))));
    let compared = 0;
    ref.cases.forEach((c, i) => {
      const near = c.greedy_margins.findIndex((m) => m < 0.05);
      const n = near === -1 ? c.greedy.length : near;
      assert.deepEqual(out[i]!.tokenIds.slice(0, n), c.greedy.slice(0, n), c.prompt);
      compared += n;
    });
    assert.ok(compared >= 24, `only ${compared} tokens compared`);
    // Other attention kernels (DecoderMaskedMultiHeadAttention) on random weights: the same tokens until a near-tie.
    const demo = open('demo');
    const loop = DeviceLoopRunner.open(join(dir, 'demo'), readManifest(join(dir, 'demo')), { device: gpu });
    try {
      const requests = [greedy(longPrompt(2), 60), greedy(longPrompt(9, 1), 60), greedy(longPrompt(1, 2), 60)];
      const viaLoop = loop.run(requests.map((r) => greedyRequest([...r.promptIds], r.maxNewTokens)));
      const viaSlots = await Promise.all(requests.map((r) => demo.generate(r)));
      viaSlots.forEach((r, i) => {
        const agreed = r.tokenIds.findIndex((t, j) => t !== viaLoop[i]!.tokenIds[j]);
        assert.ok(agreed === -1 || agreed >= 16, `row ${i}: the engines differ from token ${agreed}`);
      });
    } finally {
      loop.close();
    }
  });

  it('stops at EOS and holds it back for min_new_tokens', async () => {
    const engine = open('eos', { capacity: 64 });
    const [none, four] = await Promise.all([engine.generate(greedy([15496, 995], 40)), engine.generate({ ...greedy([7454, 2402, 257], 40), minNewTokens: 4 })]);
    assert.deepEqual([none!.tokenIds, none!.finishReason], [[], 'stop']);
    assert.deepEqual([four!.tokenIds.length, four!.finishReason], [4, 'stop']);
  });
});
