import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEVICE_LOOP_ADDON } from '../src/engine/device-loop-runner.js';
import { type SlotLoopAddon, loadSlotLoopAddon } from '../src/engine/slot-addon.js';
import { SLOT_STATUS } from '../src/model/contract.js';
import { type RowSpec, philox4x32, philoxDraw, referenceSample, runNextToken, writeNextTokenModel } from './harness/next-token.js';
import { testDevice } from './harness/test-device.js';

const built = existsSync(DEVICE_LOOP_ADDON);
if (!built && process.env.GENQUEUE_REQUIRE_NATIVE === '1') throw new Error(`GENQUEUE_REQUIRE_NATIVE=1 but ${DEVICE_LOOP_ADDON} is missing`);
const skip = built ? false : `device-loop addon not built (${DEVICE_LOOP_ADDON}); run npm run build:native`;

const EOS = 7;

/** Deterministic pseudo-random logits in about [-4, 4]. */
function randomLogits(count: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.fround((s / 2 ** 32) * 8 - 4);
  });
}

describe('genqueue.NextToken on the CPU provider (alone in a graph)', { skip }, () => {
  let dir: string;
  let addon: SlotLoopAddon;
  let model: string;
  let model16: string;
  const run = (rows: readonly RowSpec[], logits: readonly number[], options?: Parameters<typeof runNextToken>[4]) => runNextToken(addon, model, rows, logits, options);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-next-token-'));
    addon = loadSlotLoopAddon();
    model = join(dir, 'next-token.onnx');
    model16 = join(dir, 'next-token-fp16.onnx');
    writeNextTokenModel(model, 'float32', [EOS, 9]);
    writeNextTokenModel(model16, 'float16', [EOS, 9]);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('greedy: the argmax (lowest index on ties), written to ring row counter mod K; rows advance, idle and ended rows do not', () => {
    const V = 12;
    const logits = [
      ...[0, 1, 5, 2, 5, 0, 0, 0, 0, 0, 0, 0], // tie 2/4 → 2
      ...randomLogits(V, 1),
      ...randomLogits(V, 2),
      ...randomLogits(V, 3),
    ];
    const rows: RowSpec[] = [{ position: 3, token: 11 }, { position: 10 }, { position: 4, token: 6, status: 'idle' }, { position: 5, token: 8, status: 'length' }];
    const out = run(rows, logits, { counter: 6, ringRows: 4 });
    const argmax = (r: number) => {
      const row = logits.slice(r * V, (r + 1) * V);
      return row.indexOf(Math.max(...row));
    };
    assert.deepEqual(out.emitted, [2, argmax(1), -1, -1]);
    assert.deepEqual(out.tokens, [2, argmax(1), 6, 8]);
    assert.deepEqual(out.positions, [4, 11, 4, 5]);
    assert.deepEqual(out.seqlens, [4, 11, 4, 5]);
    assert.equal(out.counter, 7);
    // Only ring row 6 mod 4 = 2 was written; the other rows keep what they held.
    assert.deepEqual(Array.from(out.ring.subarray(0, 8)), new Array(8).fill(-7));
    // The emitted token joins the row's seen set (the repetition penalty's bitmap).
    assert.equal(out.history[0]! & (1 << 2), 1 << 2);
  });

  it('sampling with top_k 1 is greedy, whatever the seed and temperature', () => {
    const logits = randomLogits(300, 5);
    const greedy = run([{ position: 9 }], logits).emitted[0];
    for (const seed of [0n, 1n, 12345n, (1n << 63n) - 1n]) {
      assert.equal(run([{ position: 9, sample: true, topK: 1, temperature: 0.3, seed }], logits).emitted[0], greedy);
    }
  });

  it('a sampled token depends only on (seed, position, logits): not on the slot or the batch mates', () => {
    const V = 200;
    const mine = randomLogits(V, 11);
    const row: RowSpec = { position: 17, sample: true, temperature: 1.3, topK: 50, topP: 0.95, seed: 987654321n };
    const alone = run([row], mine).emitted[0];
    const mates: RowSpec[] = [{ position: 3, sample: true, seed: 1n }, { position: 40 }, { position: 2, status: 'idle' }];
    const mateLogits = [randomLogits(V, 12), randomLogits(V, 13), randomLogits(V, 14)];
    for (let slot = 0; slot <= 3; slot++) {
      const rows = [...mates];
      rows.splice(slot, 0, row);
      const logits = [...mateLogits];
      logits.splice(slot, 0, mine);
      assert.equal(run(rows, logits.flat()).emitted[slot], alone, `slot ${slot}`);
    }
  });

  it('different seeds give different tokens; the same seed at another position draws again', () => {
    const logits = new Array(64).fill(0);
    const bySeed = new Set(Array.from({ length: 40 }, (_, i) => run([{ position: 5, sample: true, seed: BigInt(i) }], logits).emitted[0]));
    assert.ok(bySeed.size >= 20, `${bySeed.size} distinct tokens from 40 seeds over 64 equal logits`);
    const byPosition = new Set(Array.from({ length: 40 }, (_, i) => run([{ position: i, sample: true, seed: 42n }], logits).emitted[0]));
    assert.ok(byPosition.size >= 20, `${byPosition.size} distinct tokens from 40 positions`);
  });

  it('draws exactly the token of the reference rule (Philox4x32-10, integer weights, top-k then top-p, inverse CDF)', () => {
    // Random123's known answers for Philox4x32-10; the draw is words 0 and 1 of counter (position, 0, 0, 0).
    assert.deepEqual(philox4x32([0n, 0n, 0n, 0n], [0n, 0n]), [0x6627e8d5n, 0xe169c58dn, 0xbc57ac4cn, 0x9b00dbd8n]);
    const ones = 0xffffffffn;
    assert.deepEqual(philox4x32([ones, ones, ones, ones], [ones, ones]), [0x408f276dn, 0x41c83b0en, 0xa20bc7c6n, 0x6d5451fdn]);
    assert.deepEqual(philox4x32([0x243f6a88n, 0x85a308d3n, 0x13198a2en, 0x03707344n], [0xa4093822n, 0x299f31d0n]), [0xd16cfe09n, 0x94fdccebn, 0x5001e420n, 0x24126ea1n]);
    assert.equal(philoxDraw(0n, 0n), 0x6627e8d5e169c58dn);
    const V = 97;
    let compared = 0;
    for (let i = 0; i < 60; i++) {
      const logits = randomLogits(V, 100 + i);
      const spec = { temperature: [0.5, 1, 1.7][i % 3]!, topK: [0, 5, 40, 1000][i % 4]!, topP: [1, 0.9, 0.5, 0.2, 0.999][i % 5]!, seed: BigInt(i) * 7919n + 3n, n: 10 + i };
      const out = run([{ position: spec.n - 1, sample: true, temperature: spec.temperature, topK: spec.topK, topP: spec.topP, seed: spec.seed }], logits);
      assert.equal(out.emitted[0], referenceSample(logits, spec), JSON.stringify({ ...spec, seed: String(spec.seed) }));
      compared++;
    }
    assert.equal(compared, 60);
  });

  it('samples from softmax(logits / T) restricted by top_k and top_p (frequencies over 4,000 seeds)', () => {
    const logits = [2, 1.5, 1, 0.5, 0, -0.5, -1, -3];
    // 4,000 rows of the same logits, one seed each, in one run.
    const draws = (row: Omit<RowSpec, 'position'>) => {
      const rows = Array.from({ length: 4000 }, (_, s) => ({ ...row, position: 0, sample: true, seed: BigInt(s) }));
      const counts = new Array(logits.length).fill(0);
      for (const t of run(rows, rows.flatMap(() => logits)).emitted) counts[t]++;
      return counts.map((c) => c / 4000);
    };
    const expect = (T: number, keep: (i: number) => boolean) => {
      const e = logits.map((l, i) => (keep(i) ? Math.exp(l / T) : 0));
      const z = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / z);
    };
    const close = (got: number[], want: number[], what: string) =>
      got.forEach((g, i) => {
        const sigma = Math.sqrt((want[i]! * (1 - want[i]!)) / 4000);
        assert.ok(Math.abs(g - want[i]!) <= 4.5 * sigma + 1e-9, `${what}: token ${i} drawn ${g}, expected ${want[i]}`);
      });
    close(draws({ temperature: 0.7 }), expect(0.7, () => true), 'T 0.7');
    close(draws({ temperature: 1, topK: 3 }), expect(1, (i) => i < 3), 'top_k 3');
    // softmax(logits): 0.405, 0.245, 0.149, 0.090, ...: top_p 0.7 keeps three (0.650 < 0.7 ≤ 0.799).
    close(draws({ temperature: 1, topP: 0.7 }), expect(1, (i) => i < 3), 'top_p 0.7');
    // T 2 over the top 5: 0.310, 0.241, 0.188, ...: top_p 0.5 keeps two (0.551).
    close(draws({ temperature: 2, topK: 5, topP: 0.5 }), expect(2, (i) => i < 2), 'top_k 5 + top_p 0.5');
  });

  it('repetition penalty (HF): a seen positive logit is divided by it, a seen negative one multiplied', () => {
    const V = 10;
    const logits = new Array(V).fill(-5);
    logits[0] = 2;
    logits[1] = 1.5;
    assert.equal(run([{ position: 4, seen: [0], repetitionPenalty: 2 }], logits).emitted[0], 1, '2 / 2 = 1 < 1.5');
    assert.equal(run([{ position: 4, seen: [0], repetitionPenalty: 1.2 }], logits).emitted[0], 0, '2 / 1.2 > 1.5');
    const negative = new Array(V).fill(-5);
    negative[3] = -1.2;
    negative[4] = -1;
    assert.equal(run([{ position: 4, seen: [4], repetitionPenalty: 1.5 }], negative).emitted[0], 3, '-1 × 1.5 < -1.2');
    assert.equal(run([{ position: 4, seen: [2], repetitionPenalty: 1.5 }], negative).emitted[0], 4, 'unseen tokens keep their logits');
  });

  it('min_new_tokens holds back every EOS id; after it an EOS id ends the row with stop (position kept), and the last position with length', () => {
    const V = 12;
    const logits = new Array(V).fill(0);
    logits[EOS] = 9;
    logits[9] = 8;
    logits[3] = 7;
    // n = position + 1 = 5 < min 6: both EOS ids suppressed, token 3; the row runs on.
    let out = run([{ position: 4, min: 6 }], logits);
    assert.deepEqual([out.emitted[0], out.status[0], out.positions[0]], [3, SLOT_STATUS.running, 5]);
    // n = 6 ≥ min: EOS; the row stops where it was.
    out = run([{ position: 5, token: 3, min: 6 }], logits);
    assert.deepEqual([out.emitted[0], out.status[0], out.positions[0], out.tokens[0]], [EOS, SLOT_STATUS.stopped, 5, 3]);
    // The second EOS id of the list ends a row too.
    const second = [...logits];
    second[EOS] = 0;
    out = run([{ position: 5, min: 0 }], second);
    assert.deepEqual([out.emitted[0], out.status[0]], [9, SLOT_STATUS.stopped]);
    // n = end - 1: the row's last token, with length.
    const plain = new Array(V).fill(0);
    plain[2] = 1;
    out = run([{ position: 8, end: 10 }], plain);
    assert.deepEqual([out.emitted[0], out.status[0], out.positions[0]], [2, SLOT_STATUS.length, 8]);
    // A sampled row is held back the same way.
    out = run([{ position: 4, min: 6, sample: true, temperature: 0.01, seed: 3n }], logits);
    assert.equal(out.emitted[0], 3);
  });

  it('float16 logits give the float32 logits\' tokens (values exact in both)', () => {
    const logits = randomLogits(150, 21).map((v) => Math.round(v * 64) / 64);
    const rows: RowSpec[] = [{ position: 2 }, { position: 30, sample: true, seed: 5n, topK: 20, topP: 0.8 }, { position: 7, sample: true, seed: 9n, temperature: 0.6 }];
    const wide = [...logits, ...randomLogits(150, 22).map((v) => Math.round(v * 64) / 64), ...randomLogits(150, 23).map((v) => Math.round(v * 64) / 64)];
    assert.deepEqual(runNextToken(addon, model16, rows, wide, { logitsType: 'float16' }).emitted, run(rows, wide).emitted);
  });
});

// On the GPU machine (GENQUEUE_TEST_DEVICE=cuda:N): the CUDA kernel against the CPU code on the same fp16 logits.
const gpu = testDevice();
const gpuSkip = skip || (gpu.kind === 'cpu' ? 'CUDA only (GENQUEUE_TEST_DEVICE=cuda:N)' : false);

describe('genqueue.NextToken on CUDA equals the CPU code', { skip: gpuSkip }, () => {
  it('same tokens, states, positions and history for greedy, sampled, penalized, held-back, ended and idle rows (GPT-2 vocabulary)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'genqueue-next-token-cuda-'));
    try {
      const addon = loadSlotLoopAddon();
      const model = join(dir, 'next-token-fp16.onnx');
      writeNextTokenModel(model, 'float16', [50256, 50118]);
      const V = 50257;
      for (let trial = 0; trial < 6; trial++) {
        const rows: RowSpec[] = Array.from({ length: 37 }, (_, b) => ({
          position: 10 + b,
          token: b,
          sample: b % 3 !== 0,
          temperature: [0.7, 1, 1.4][b % 3]!,
          topK: [0, 1, 50, 0, 200][b % 5]!,
          topP: [1, 0.9, 0.5, 0.95][b % 4]!,
          repetitionPenalty: b % 4 === 0 ? 1.3 : 1,
          seen: [b, 50256, 1000 + b],
          min: b % 7 === 0 ? 100 : 0,
          end: b % 11 === 0 ? 11 + b : 1000,
          status: b % 13 === 5 ? 'idle' : 'running',
          seed: BigInt(trial * 1000 + b),
        }));
        const logits = randomLogits(V * rows.length, 1000 + trial).map((v, i) => (i % V === 50256 ? v + 3 : v));
        const cpu = runNextToken(addon, model, rows, logits, { logitsType: 'float16', counter: trial });
        const cuda = runNextToken(addon, model, rows, logits, { logitsType: 'float16', counter: trial, device: gpu });
        assert.deepEqual(cuda, cpu, `trial ${trial}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
