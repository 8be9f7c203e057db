import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GenerationRequest } from '../src/engine/generation-types.js';
import { BatchCollector } from '../src/worker/batch-collector.js';
import { batchKey } from '../src/worker/generation-worker.js';

describe('BatchCollector', () => {
  it('runs a full group at once and keeps incompatible keys apart', async () => {
    const batches: string[][] = [];
    const c = new BatchCollector<string, string>({
      maxBatch: 3,
      maxWaitMs: 10_000,
      run: async (items) => {
        batches.push(items);
        return items.map((i) => i.toUpperCase());
      },
    });
    const a = ['a1', 'a2', 'a3'].map((x) => c.submit('A', x));
    const b = c.submit('B', 'b1');
    assert.deepEqual(await Promise.all(a), ['A1', 'A2', 'A3']);
    assert.deepEqual(batches, [['a1', 'a2', 'a3']]);
    c.close();
    await assert.rejects(b, /shutting down/);
  });

  it('starts the next batch as soon as the runner releases the device, before the first batch is answered', async () => {
    const events: string[] = [];
    let finishFirst: () => void = () => undefined;
    const c = new BatchCollector<number, number>({
      maxBatch: 2,
      maxWaitMs: 10_000,
      run: async (items, release) => {
        events.push(`start ${items.join(',')}`);
        if (items[0] === 1) {
          release(); // device free; host-side work (decoding text) continues below
          await new Promise<void>((resolve) => (finishFirst = resolve));
        }
        events.push(`end ${items.join(',')}`);
        return items;
      },
    });
    const first = [c.submit('k', 1), c.submit('k', 2)];
    const second = [c.submit('k', 3), c.submit('k', 4)];
    assert.deepEqual(await Promise.all(second), [3, 4]);
    assert.deepEqual(events, ['start 1,2', 'start 3,4', 'end 3,4']);
    finishFirst();
    assert.deepEqual(await Promise.all(first), [1, 2]);
  });

  it('runs a partial group after maxWaitMs', async () => {
    const c = new BatchCollector<number, number>({ maxBatch: 64, maxWaitMs: 20, run: async (items) => items.map((i) => i * 2) });
    assert.deepEqual(await Promise.all([c.submit('k', 1), c.submit('k', 2)]), [2, 4]);
  });

  it('collects while a batch runs and never runs two batches at once', async () => {
    let active = 0;
    let maxActive = 0;
    const sizes: number[] = [];
    const c = new BatchCollector<number, number>({
      maxBatch: 4,
      maxWaitMs: 0,
      run: async (items) => {
        active++;
        maxActive = Math.max(maxActive, active);
        sizes.push(items.length);
        await new Promise((r) => setTimeout(r, 30));
        active--;
        return items;
      },
    });
    const first = c.submit('k', 0);
    await new Promise((r) => setTimeout(r, 5)); // the first batch (one item) is now running
    const rest = Array.from({ length: 6 }, (_, i) => c.submit('k', i + 1));
    assert.deepEqual(await Promise.all([first, ...rest]), [0, 1, 2, 3, 4, 5, 6]);
    assert.equal(maxActive, 1);
    assert.deepEqual(sizes, [1, 4, 2]);
  });

  it('fails only the items a runner marks as errors, and the whole batch when the runner throws; then carries on', async () => {
    let calls = 0;
    const c = new BatchCollector<number, number>({
      maxBatch: 2,
      maxWaitMs: 5,
      run: async (items) => {
        calls++;
        if (calls === 2) throw new Error('device lost');
        return items.map((i) => (i < 0 ? new Error(`bad item ${i}`) : i));
      },
    });
    const [ok, bad] = await Promise.allSettled([c.submit('k', 1), c.submit('k', -1)]);
    assert.deepEqual(ok, { status: 'fulfilled', value: 1 });
    assert.match(String((bad as PromiseRejectedResult).reason), /bad item -1/);
    await assert.rejects(c.submit('k', 5), /device lost/);
    assert.equal(await c.submit('k', 7), 7);
  });
  it('holds a partial batch while more items are on their way, up to the hold limit', async () => {
    const sizes: number[] = [];
    let coming = true;
    const c = new BatchCollector<number, number>({
      maxBatch: 4,
      maxWaitMs: 5,
      holdLimitMs: 10_000,
      moreComing: async () => coming,
      run: async (items) => {
        sizes.push(items.length);
        return items;
      },
    });
    const first = c.submit('k', 1);
    await new Promise((r) => setTimeout(r, 50)); // well past maxWaitMs: held, because more are coming
    assert.deepEqual(sizes, []);
    const rest = [2, 3].map((i) => c.submit('k', i));
    coming = false;
    assert.deepEqual(await Promise.all([first, ...rest]), [1, 2, 3]);
    assert.deepEqual(sizes, [3]);

    const capped = new BatchCollector<number, number>({ maxBatch: 4, maxWaitMs: 5, holdLimitMs: 40, moreComing: async () => true, run: async (items) => items });
    assert.equal(await capped.submit('k', 9), 9, 'the hold limit runs it even if more keep "coming"');
  });
});


describe('batchKey (the worker\'s batching policy)', () => {
  const req = (maxNewTokens: number, kind: 'greedy' | 'beam' = 'greedy'): GenerationRequest => ({
    promptIds: [1, 2, 3],
    maxNewTokens,
    minNewTokens: 0,
    repetitionPenalty: 1,
    search: kind === 'greedy' ? { kind } : { kind, numBeams: 4, lengthPenalty: 1 },
  });

  it('puts greedy jobs of similar length together and long and short ones apart', () => {
    assert.equal(batchKey(req(200)), batchKey(req(256)));
    assert.equal(batchKey(req(33)), batchKey(req(64)));
    assert.notEqual(batchKey(req(32)), batchKey(req(256)));
    assert.notEqual(batchKey(req(64)), batchKey(req(65)));
  });

  it('keeps different search parameters apart whatever the length', () => {
    assert.notEqual(batchKey(req(64)), batchKey(req(64, 'beam')));
  });
});
