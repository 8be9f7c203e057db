import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { ModelCache } from '../src/model/model-cache.js';
import { fixturePath } from './harness/fixtures.js';

const CHILD = fileURLToPath(new URL('./harness/resolve-model-child.js', import.meta.url));

/** A child process whose stdout lines are read one at a time. */
function startChild(root: string, checkpoint: string, lockWaitMs?: number): { proc: ChildProcessWithoutNullStreams; line: () => Promise<string> } {
  const proc = spawn(process.execPath, [CHILD, root, checkpoint, ...(lockWaitMs === undefined ? [] : [String(lockWaitMs)])]);
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  const line = async (): Promise<string> => {
    const r = await lines.next();
    if (r.done) throw new Error(`child exited early: ${stderr}`);
    return r.value as string;
  };
  return { proc, line };
}

describe('model cache', () => {
  let dir: string;
  let checkpoint: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-cache-'));
    // Large enough (28 MB) that two builds started together overlap.
    checkpoint = join(dir, 'checkpoint');
    writeRandomGpt2Checkpoint(checkpoint, { layers: 2, heads: 4, embd: 128, positions: 128, vocab: 50257, seed: 1, init: 0.02 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Two processes resolve the checkpoint together; returns after checking what each got. */
  async function race(root: string, lockWaitMs?: number): Promise<void> {
    const children = [startChild(root, checkpoint, lockWaitMs), startChild(root, checkpoint, lockWaitMs)];
    try {
      for (const c of children) assert.equal(await c.line(), 'ready');
      for (const c of children) c.proc.stdin.write('go\n');
      const results = await Promise.all(children.map(async (c) => JSON.parse(await c.line()) as { dir: string; built: boolean }));
      assert.equal(results[0]!.dir, results[1]!.dir);
      for (const c of children) c.proc.stdin.write('check\n');
      for (const c of children) assert.deepEqual(JSON.parse(await c.line()), { intact: true });
      assert.equal(results.filter((r) => r.built).length, 1, 'one build published');
      const left = readdirSync(join(root, 'models')).filter((f) => f.startsWith('.'));
      assert.deepEqual(left, [], 'no build directory left');
    } finally {
      for (const c of children) c.proc.kill();
    }
  }

  it('two processes resolving one checkpoint at once share one build; the directory in use is never replaced', async () => {
    await race(join(dir, 'race'));
    assert.deepEqual(readdirSync(join(dir, 'race', 'models')).filter((f) => f.endsWith('.lock')), [], 'lock released');
  });

  it('two processes that both build (lock held elsewhere) keep the first build in place and discard the second', async () => {
    const root = join(dir, 'race-unlocked');
    const probe = await new ModelCache(join(dir, 'probe')).resolve(checkpoint);
    mkdirSync(join(root, 'models'), { recursive: true });
    writeFileSync(join(root, 'models', `${probe.dir.split('/').pop()!}.lock`), JSON.stringify({ pid: 1, host: `not-${hostname()}` }));
    await race(root, 0);
  });

  it('a build lock left by a dead process does not hold up the build', async () => {
    const root = join(dir, 'stale');
    const first = await new ModelCache(join(dir, 'probe')).resolve(fixturePath('gpt2-tiny'));
    const target = join(root, 'models', first.dir.split('/').pop()!);
    mkdirSync(join(root, 'models'), { recursive: true });
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.on('exit', r));
    writeFileSync(`${target}.lock`, JSON.stringify({ pid: dead.pid, host: hostname() }));
    const model = await new ModelCache(root, { lockWaitMs: 10 * 60_000 }).resolve(fixturePath('gpt2-tiny'));
    assert.equal(model.dir, target);
    assert.equal(model.built, true);
    assert.equal(existsSync(`${target}.lock`), false);
  });

  it("another host's lock is waited for only up to lockWaitMs, then the model is built anyway", async () => {
    const root = join(dir, 'foreign');
    const probe = await new ModelCache(join(dir, 'probe')).resolve(fixturePath('gpt2-tiny'));
    const target = join(root, 'models', probe.dir.split('/').pop()!);
    mkdirSync(join(root, 'models'), { recursive: true });
    writeFileSync(`${target}.lock`, JSON.stringify({ pid: 1, host: `not-${hostname()}` }));
    const model = await new ModelCache(root, { lockWaitMs: 300 }).resolve(fixturePath('gpt2-tiny'));
    assert.equal(model.built, true);
    assert.equal((await new ModelCache(root).resolve(fixturePath('gpt2-tiny'))).built, false, 'second resolve is a cache hit');
  });
});
