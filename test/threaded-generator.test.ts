import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GeneratorClosedError, ThreadedGenerator } from '../src/engine/threaded-generator.js';
import { buildModel } from '../src/model/model-builder.js';
import { CRASH_TOKEN, STARTED_WARNING } from './harness/thread-faults.js';
import { fixturePath } from './harness/fixtures.js';
import { greedyRequest as greedy } from './harness/requests.js';

const CPU = { kind: 'cpu' } as const;
const EXITING = new URL('./harness/exiting-generator-thread.js', import.meta.url);
const CRASHING = new URL('./harness/crashing-generator-thread.js', import.meta.url);
// A hang is the defect these tests guard against: fail instead of waiting for the runner's own limit.
const timeout = 120_000;

describe('ThreadedGenerator thread lifetimes (tiny GPT-2, CPU)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-threaded-'));
    buildModel(fixturePath('gpt2-tiny'), dir, { precision: 'fp32' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('open() rejects when the thread ends before it is ready', { timeout }, async () => {
    await assert.rejects(ThreadedGenerator.open(dir, { device: CPU, threadEntry: EXITING }), /exited with code 3 before it was ready/);
  });

  it('open() rejects with the reason for a directory that is no model', { timeout }, async () => {
    await assert.rejects(ThreadedGenerator.open(join(dir, 'missing'), { device: CPU }), /ENOENT/);
  });

  it('a crashed thread fails its batch; concurrent calls after it share one fresh thread', { timeout }, async () => {
    const warnings: string[] = [];
    const engine = await ThreadedGenerator.open(dir, { device: CPU, threadEntry: CRASHING, onWarning: (m) => warnings.push(m) });
    try {
      await assert.rejects(engine.generate([greedy([CRASH_TOKEN], 2)]), /generator thread exited with code 70/);
      const [a, b] = await Promise.all([engine.generate([greedy([464], 3)]), engine.generate([greedy([15496, 995], 3)])]);
      assert.equal(a.results[0] && 'tokenIds' in a.results[0] ? a.results[0].tokenIds.length : -1, 3);
      assert.equal(b.results[0] && 'tokenIds' in b.results[0] ? b.results[0].tokenIds.length : -1, 3);
      assert.equal(warnings.filter((w) => w === STARTED_WARNING).length, 2, 'the first thread and one replacement');
    } finally {
      await engine.close();
    }
  });

  it('close() during a restart rejects the waiting call and stops the new thread', { timeout }, async () => {
    const engine = await ThreadedGenerator.open(dir, { device: CPU, threadEntry: CRASHING });
    await assert.rejects(engine.generate([greedy([CRASH_TOKEN], 2)]));
    const waiting = engine.generate([greedy([464], 3)]); // starts a fresh thread
    await engine.close();
    await assert.rejects(waiting, GeneratorClosedError);
  });

  it('close() rejects the calls still pending, is idempotent, and refuses later calls', { timeout }, async () => {
    const engine = await ThreadedGenerator.open(dir, { device: CPU });
    const pending = engine.generate(Array.from({ length: 8 }, () => greedy([464, 2068, 7586], 100)));
    const closing = engine.close();
    await assert.rejects(pending, GeneratorClosedError);
    await closing;
    await engine.close();
    await assert.rejects(engine.generate([greedy([464], 2)]), GeneratorClosedError);
  });
});
