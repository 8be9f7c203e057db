import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { ResultCollector } from '../src/queue/result-collector.js';
import { readFleet } from '../src/worker/fleet-heartbeat.js';
import { FleetSupervisor } from '../src/worker/fleet-supervisor.js';
import { fixturePath } from './harness/fixtures.js';
import { eventually } from './harness/eventually.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A pino logger whose records land in an array. */
function recordingLogger(): { logger: pino.Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), records };
}

describe('FleetSupervisor (plain child processes)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-supervisor-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A child that marks itself ready with a file, then exits with `code` on SIGTERM. */
  const child = (name: string, code: number) => ({
    name,
    args: ['-e', `process.on('SIGTERM', () => process.exit(${code})); require('fs').writeFileSync(${JSON.stringify(join(dir, name))}, ''); setInterval(() => {}, 1000);`],
  });

  it('restarts a child that keeps crashing with a doubling, capped wait', async () => {
    const { logger, records } = recordingLogger();
    const supervisor = new FleetSupervisor({
      command: process.execPath,
      children: [{ name: 'crasher', args: ['-e', 'process.exit(3)'] }],
      backoff: { initialMs: 10, maxMs: 40, resetAfterMs: 60_000 },
      logger,
    });
    supervisor.start();
    const restarts = await eventually('five crashes', () => {
      const r = records.filter((x) => x.msg === 'worker process exited: restarting');
      return r.length >= 5 ? r : undefined;
    });
    assert.deepEqual(restarts.slice(0, 5).map((r) => r.restartInMs), [10, 20, 40, 40, 40]);
    assert.ok(restarts.every((r) => r.code === 3));
    // The child may be between crashes or starting again: either way stop() settles.
    await supervisor.stop('SIGTERM');
  });

  it('a stop while a restart is pending cancels it: nothing to drain, a clean exit', async () => {
    const { logger, records } = recordingLogger();
    const supervisor = new FleetSupervisor({
      command: process.execPath,
      children: [{ name: 'crasher', args: ['-e', 'process.exit(3)'] }],
      backoff: { initialMs: 600_000 },
      logger,
    });
    supervisor.start();
    await eventually('the crash', () => (records.some((x) => x.msg === 'worker process exited: restarting') ? true : undefined));
    assert.equal(await supervisor.stop('SIGTERM'), true);
    assert.equal(supervisor.pids().size, 0);
  });

  it('forwards SIGTERM to every child and reports whether all exited with 0', async () => {
    const { logger } = recordingLogger();
    const clean = new FleetSupervisor({ command: process.execPath, children: [child('a', 0), child('b', 0)], logger });
    clean.start();
    await eventually('children ready', () => (existsSync(join(dir, 'a')) && existsSync(join(dir, 'b')) ? true : undefined));
    const pids = [...clean.pids().values()];
    assert.equal(pids.length, 2);
    assert.equal(await clean.stop('SIGTERM'), true);
    assert.ok(pids.every((p) => !alive(p)));

    const unclean = new FleetSupervisor({ command: process.execPath, children: [child('c', 0), child('d', 5)], logger });
    unclean.start();
    await eventually('children ready', () => (existsSync(join(dir, 'c')) && existsSync(join(dir, 'd')) ? true : undefined));
    assert.equal(await unclean.stop('SIGTERM'), false, 'one child exited with 5');
  });
});

describe('genqueue workers --cpus 2 (real workers on the tiny model)', () => {
  let redis: TestRedis;
  let dir: string;
  let supervisor: ChildProcess | undefined;
  let stderr = '';

  before(async () => {
    redis = await startTestRedis();
    dir = mkdtempSync(join(tmpdir(), 'genqueue-workers-'));
  });
  after(async () => {
    if (supervisor && supervisor.exitCode === null) supervisor.kill('SIGKILL');
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves jobs, restarts a killed worker, and exits 0 with every worker gone after SIGTERM', async () => {
    const env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), REDIS_URL: redis.url, GENQUEUE_LOG_LEVEL: 'info' };
    const args = ['workers', '--cpus', '2', '--model', fixturePath('gpt2-tiny'), '--max-batch', '4', '--max-wait-ms', '20', '--worker-id-prefix', 'sup'];
    supervisor = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    // Children share the supervisor's stderr: keep reading it so that nobody blocks on a full pipe.
    supervisor.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => supervisor!.once('exit', (code) => resolve(code)));
    const ids = ['sup:cpu#0', 'sup:cpu#1'];
    const pidsOf = async (): Promise<Map<string, number>> => new Map((await readFleet(redis.connection)).map((m) => [m.workerId, m.pid]));

    const first = await eventually('both workers in the fleet', async () => {
      const pids = await pidsOf();
      return ids.every((id) => pids.has(id)) ? pids : undefined;
    }).catch((e: Error) => assert.fail(`${e.message}\n${stderr}`));

    const producer = new JobProducer({ connection: redis.connection });
    const placed = await producer.enqueueJobs(Array.from({ length: 8 }, (_, i) => jobFromFields({ prompt: `Job ${i}`, max_new_tokens: 3 })));
    await producer.close();
    let completed = 0;
    for await (const r of new ResultCollector({ connection: redis.connection }).collect(placed, { wait: true, timeoutMs: 60_000 })) {
      if (r.status === 'completed') completed++;
    }
    assert.equal(completed, 8);

    const killed = first.get('sup:cpu#0')!;
    process.kill(killed, 'SIGKILL');
    const second = await eventually('sup:cpu#0 restarted with a new pid', async () => {
      const pids = await pidsOf();
      const pid = pids.get('sup:cpu#0');
      return pid !== undefined && pid !== killed ? pids : undefined;
    }).catch((e: Error) => assert.fail(`${e.message}\n${stderr}`));
    assert.equal(alive(killed), false);
    assert.equal(second.get('sup:cpu#1'), first.get('sup:cpu#1'), 'the other worker kept running');
    assert.match(stderr, /worker process exited: restarting/);

    supervisor.kill('SIGTERM');
    assert.equal(await exited, 0, stderr.slice(-4000));
    for (const id of ids) assert.equal(alive(second.get(id)!), false, `${id} is gone`);
    assert.deepEqual(await pidsOf(), new Map(), 'workers left the fleet on their way out');
  });
});
