import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { MANIFEST_FILE } from '../src/model/manifest.js';
import { buildModel } from '../src/model/model-builder.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const START_WORKER_CHILD = fileURLToPath(new URL('./harness/start-worker-child.js', import.meta.url));
// A process that should end but does not is the defect: give up well before the runner would.
const EXIT_LIMIT_MS = 60_000;

interface Ended {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a process to its end (killed after EXIT_LIMIT_MS, which then reads as code null). */
function runToEnd(args: string[], env: NodeJS.ProcessEnv): Promise<Ended> {
  const child = spawn(process.execPath, args, { env });
  return ended(child);
}

function ended(child: ChildProcessWithoutNullStreams, collectStdout = true): Promise<Ended> {
  let stdout = '';
  let stderr = '';
  if (collectStdout) child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  const limit = setTimeout(() => child.kill('SIGKILL'), EXIT_LIMIT_MS);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(limit);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** Runs the CLI with stdout piped into a reader that closes the pipe after the first line, like `| head -1`. */
async function firstLineOnly(args: string[], env: NodeJS.ProcessEnv): Promise<Ended & { first: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env });
  const done = ended(child, false);
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve) => lines.once('line', resolve));
  lines.close();
  child.stdout.destroy();
  return { ...(await done), first };
}

/** Whether something still accepts connections on this port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('process and resource lifetimes', () => {
  let dir: string;
  let redis: TestRedis;
  let env: NodeJS.ProcessEnv;
  /** A built model whose manifest claims more context than its position table has: long runs fail in ONNX Runtime. */
  let overstated: string;
  const leakedRedisPorts: number[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-lifetimes-'));
    redis = await startTestRedis();
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'warn' };
    overstated = join(dir, 'overstated');
    mkdirSync(overstated);
    buildModel(fixturePath('gpt2-tiny'), overstated, { precision: 'fp32' });
    const manifest = JSON.parse(readFileSync(join(overstated, MANIFEST_FILE), 'utf8')) as { spec: { contextLength: number } };
    manifest.spec.contextLength = 1024;
    writeFileSync(join(overstated, MANIFEST_FILE), JSON.stringify(manifest));
  });
  after(async () => {
    for (const port of leakedRedisPorts) {
      const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => undefined);
      await client.connect().then(() => client.call('SHUTDOWN', 'NOSAVE')).catch(() => undefined);
      client.disconnect();
    }
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('results | head -1 exits quietly when the reader closes the pipe', async () => {
    const ids = join(dir, 'ids.jsonl');
    writeFileSync(ids, Array.from({ length: 20_000 }, (_, i) => `{"id":"unknown-${i}"}\n`).join(''));
    const r = await firstLineOnly(['results', '--ids-from', ids], env);
    const first = JSON.parse(r.first) as { id: string; status: string };
    assert.deepEqual({ id: first.id, status: first.status }, { id: 'unknown-0', status: 'missing' });
    assert.doesNotMatch(r.stderr, /EPIPE|Error|\n\s+at /);
    assert.equal(r.code, 0);
  });

  it('enqueue --wait | head -1 exits quietly when the reader closes the pipe', async () => {
    const jobs = join(dir, 'jobs.jsonl');
    writeFileSync(jobs, Array.from({ length: 5_000 }, (_, i) => `{"id":"pipe-${i}","prompt":"p"}\n`).join(''));
    // No worker: after the 1 ms wait every job is written as pending, far more than a pipe holds.
    const r = await firstLineOnly(['enqueue', jobs, '--wait', '--timeout-ms', '1'], env);
    assert.equal(JSON.parse(r.first).status, 'pending');
    assert.doesNotMatch(r.stderr, /EPIPE|Error|\n\s+at /);
    assert.equal(r.code, 0);
  });

  /** Runs the demo on its private redis-server and returns how it ended and whether that server still runs. */
  async function demo(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Ended & { redisLeft: boolean }> {
    const { REDIS_URL: _unset, ...noRedis } = env;
    const r = await runToEnd([CLI, 'demo', ...args], { ...noRedis, ...extraEnv });
    const port = Number(/private redis-server on redis:\/\/127\.0\.0\.1:(\d+)/.exec(r.stdout)?.[1]);
    assert.ok(port > 0, r.stdout + r.stderr);
    const redisLeft = await listening(port);
    if (redisLeft) leakedRedisPorts.push(port);
    return { ...r, redisLeft };
  }

  it('demo stops its private redis-server when the model cannot be resolved', async () => {
    const r = await demo(['--model', join(dir, 'no-such-model')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no such directory/);
    assert.equal(r.redisLeft, false);
  });

  it('demo stops its private redis-server when the worker cannot start (its warm-up fails)', async () => {
    const r = await demo(['--model', overstated, '--max-batch', '2'], { GENQUEUE_WARMUP_LENGTHS: '500' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /indices element out of data bounds/);
    assert.equal(r.redisLeft, false);
  });

  it('a worker whose warm-up fails releases its engine thread (the process ends by itself)', async () => {
    const r = await runToEnd([START_WORKER_CHILD, overstated, '500'], env);
    assert.match(r.stdout, /^failed: .*indices element out of data bounds/);
    assert.equal(r.code, 0, 'ended by itself');
  });
});
