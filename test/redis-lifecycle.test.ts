import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { Job, Queue } from 'bullmq';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load-config.js';
import { DEMO_SHAPE, writeRandomGpt2Checkpoint } from '../src/model/checkpoint/random-gpt2-checkpoint.js';
import { resolveModelArg } from '../src/model/model-reference.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { type RedisConnection, closeRedis, createRedisConnection, redactUrl } from '../src/queue/redis-connection.js';
import { RedisServerProcess } from '../src/queue/redis-server-process.js';
import { ResultCollector } from '../src/queue/result-collector.js';
import { type StartedWorker, startWorker } from '../src/worker/worker-process.js';
import { Cli, oneClearLine, runCli } from './harness/cli-process.js';
import { fixturePath } from './harness/fixtures.js';

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('Redis unreachable or refusing credentials: clear errors, no secrets', () => {
  it('redactUrl hides the password wherever a URL carries it', () => {
    assert.equal(redactUrl('redis://:s3cret@10.0.0.5:6380/2'), 'redis://:***@10.0.0.5:6380/2');
    assert.equal(redactUrl('rediss://user:s3cret@redis.internal:6379'), 'rediss://user:***@redis.internal:6379');
    assert.equal(redactUrl('redis://10.0.0.5:6379?password=s3cret&db=1'), 'redis://10.0.0.5:6379?password=***&db=1');
    assert.equal(redactUrl('redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
    assert.equal(redactUrl('not a url //user:s3cret@host'), 'not a url //***@host');
  });

  let dir: string;
  let env: NodeJS.ProcessEnv;
  let jobsFile: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-redis-errors-'));
    env = { ...process.env, GENQUEUE_CACHE_DIR: join(dir, 'cache'), GENQUEUE_LOG_LEVEL: 'info', GENQUEUE_REDIS_CONNECT_TIMEOUT_MS: '1000' };
    jobsFile = join(dir, 'jobs.jsonl');
    writeFileSync(jobsFile, ['a', 'b'].map((id) => JSON.stringify({ id, prompt: `prompt ${id}`, max_new_tokens: 3 })).join('\n'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('enqueue and results give up on a Redis that refuses connections: one line naming it, exit 1', async () => {
    const server = await RedisServerProcess.start();
    await server.stop();
    const redisEnv = { ...env, REDIS_URL: server.url };
    const commands = [['enqueue', jobsFile], ['results', '--ids-from', jobsFile, '--wait']];
    const runs = await Promise.all(commands.map((args) => runCli(args, redisEnv)));
    for (const [i, r] of runs.entries()) {
      assert.equal(r.code, 1, `${commands[i]![0]}: ${r.stderr}`);
      const line = oneClearLine(r.stderr);
      assert.ok(line.startsWith(`genqueue: cannot reach Redis at ${server.url}: connection refused (gave up after `), line);
    }
  });

  it('a wrong password: every command exits non-zero with one line, and neither password is ever printed', async () => {
    const password = `right-${randomUUID()}`;
    const wrong = `wrong-${randomUUID()}`;
    const server = await RedisServerProcess.start({ password });
    try {
      const wrongUrl = server.url.replace(password, wrong);
      const redisEnv = { ...env, REDIS_URL: wrongUrl };
      const tiny = fixturePath('gpt2-tiny');
      const commands = [
        ['enqueue', jobsFile],
        ['results', '--ids-from', jobsFile, '--wait'],
        ['dashboard', '--port', '0'],
        ['worker', '--model', tiny],
        ['demo', '--model', tiny, '--jobs', '2'],
      ];
      const runs = await Promise.all(commands.map((args) => runCli(args, redisEnv)));
      for (const [i, r] of runs.entries()) {
        const name = commands[i]![0];
        assert.notEqual(r.code, 0, `${name}: ${r.out}`);
        for (const secret of [password, wrong]) assert.ok(!r.out.includes(secret), `${name} printed a password:\n${r.out}`);
        assert.match(oneClearLine(r.stderr), /^genqueue: cannot reach Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: wrong password \(WRONGPASS\)/);
      }
    } finally {
      await server.stop();
    }
  });

  it('the right password: worker, enqueue --wait, results, dashboard and demo work and print it nowhere', async () => {
    const password = `right-${randomUUID()}`;
    const server = await RedisServerProcess.start({ password });
    const redisEnv = { ...env, REDIS_URL: server.url };
    const tiny = fixturePath('gpt2-tiny');
    const worker = new Cli(['worker', '--model', tiny, '--max-batch', '4'], redisEnv);
    try {
      await worker.waitFor(/worker started/);
      const e = await runCli(['enqueue', jobsFile, '--wait', '--timeout-ms', '60000'], redisEnv);
      assert.equal(e.code, 0, e.out);
      const dashboard = new Cli(['dashboard', '--port', '0'], redisEnv);
      const [r, demo] = await Promise.all([
        runCli(['results', '--ids-from', jobsFile], redisEnv),
        runCli(['demo', '--model', tiny, '--jobs', '2', '--max-new-tokens', '2'], redisEnv),
        dashboard.waitFor(/dashboard on /),
      ]);
      assert.equal(r.code, 0, r.out);
      assert.equal(demo.code, 0, demo.out);
      assert.match(demo.out, /redis: redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\n/);
      dashboard.child.kill('SIGTERM');
      assert.equal(await dashboard.exit(60_000), 0, dashboard.stderr);
      assert.match(dashboard.stderr, /\(Redis redis:\/\/:\*\*\*@127\.0\.0\.1:\d+\)/);
      worker.child.kill('SIGTERM');
      assert.equal(await worker.exit(60_000), 0, worker.stderr);
      assert.doesNotMatch(worker.stderr, /shutdown deadline passed/, 'a healthy Redis: BullMQ closes in time');
      for (const out of [e.out, r.out, demo.out, dashboard.stdout + dashboard.stderr, worker.stdout + worker.stderr]) assert.ok(!out.includes(password), `printed the password:\n${out}`);
    } finally {
      worker.child.kill('SIGKILL');
      await server.stop();
    }
  });
});

describe('worker shutdown and stalled jobs', () => {
  const LOCK_MS = 1000;
  const STALLED_MS = 500;
  let dir: string;
  let checkpoint: string;
  let server: RedisServerProcess | undefined;
  let connection: RedisConnection | undefined;
  let workerB: StartedWorker | undefined;
  const children: Cli[] = [];

  /** Settings for both workers: short locks, so that a dead worker's jobs come back within seconds. */
  const workerEnv = (redisUrl: string): NodeJS.ProcessEnv => ({
    ...process.env,
    REDIS_URL: redisUrl,
    GENQUEUE_CACHE_DIR: join(dir, 'cache'),
    GENQUEUE_LOG_LEVEL: 'info',
    GENQUEUE_SHUTDOWN_TIMEOUT_MS: '1000',
    GENQUEUE_LOCK_DURATION_MS: String(LOCK_MS),
    GENQUEUE_STALLED_INTERVAL_MS: String(STALLED_MS),
  });
  const startWorkerA = async (redisUrl: string): Promise<Cli> => {
    const cli = new Cli(['worker', '--model', checkpoint, '--max-batch', '4', '--max-wait-ms', '100'], workerEnv(redisUrl));
    children.push(cli);
    await cli.waitFor(/worker started/);
    return cli;
  };
  /** Jobs that keep a CPU batch busy for seconds: most of the demo model's context, EOS held back. */
  const enqueueLongJobs = async (c: RedisConnection, n: number, tokens: number): Promise<string[]> => {
    const producer = new JobProducer({ connection: c });
    const ids = Array.from({ length: n }, (_, i) => `long-${randomUUID()}-${i}`);
    await producer.enqueueJobs(ids.map((id) => jobFromFields({ id, prompt: `Long job ${id}`, max_new_tokens: tokens, min_new_tokens: tokens })));
    await producer.close();
    return ids;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-lifecycle-'));
    checkpoint = join(dir, 'demo-gpt2');
    writeRandomGpt2Checkpoint(checkpoint, DEMO_SHAPE);
  });
  afterEach(async () => {
    for (const c of children.splice(0)) c.child.kill('SIGKILL');
    if (server?.pid) process.kill(server.pid, 'SIGCONT');
    await workerB?.close();
    workerB = undefined;
    if (connection) await closeRedis(connection);
    connection = undefined;
    await server?.stop();
    server = undefined;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('SIGTERM after Redis went away: the worker exits 0 by its shutdown deadline (no job held)', async () => {
    server = await RedisServerProcess.start();
    const a = await startWorkerA(server.url);
    await server.stop();
    server = undefined;
    a.child.kill('SIGTERM');
    assert.equal(await a.exit(60_000), 0, a.stderr);
    assert.match(a.stderr, /shutdown deadline passed with no job held/);
  });

  it('SIGTERM while holding jobs, Redis frozen: exit 1 by the deadline, and the jobs stay active for stalled-job recovery', async () => {
    server = await RedisServerProcess.start();
    connection = createRedisConnection(server.url);
    const a = await startWorkerA(server.url);
    // Long enough to be still running when Redis freezes: then they are abandoned whether their batch ran or not.
    const ids = await enqueueLongJobs(connection, 2, 120);
    const queue = new Queue('genqueue', { connection });
    await until('worker A to take the jobs', async () => (await queue.getActiveCount()) === ids.length);
    process.kill(server.pid!, 'SIGSTOP');
    a.child.kill('SIGTERM');
    assert.equal(await a.exit(120_000), 1, a.stderr);
    assert.match(a.stderr, /"abandoned":2,.*stalled-job recovery/);
    process.kill(server.pid!, 'SIGCONT');
    for (const id of ids) assert.equal(await (await Job.fromId(queue, id))!.getState(), 'active', 'not failed: left for recovery');
    await queue.close();
  });

  it('SIGKILL mid-batch: a second worker takes the jobs over within the lock window and keeps its own long batch locked', async (t) => {
    server = await RedisServerProcess.start();
    connection = createRedisConnection(server.url);
    const a = await startWorkerA(server.url);
    const ids = await enqueueLongJobs(connection, 2, 300);
    const queue = new Queue('genqueue', { connection });
    await until('worker A to take the jobs', async () => (await queue.getActiveCount()) === ids.length);
    for (const id of ids) {
      const ttl = await connection.pttl(`bull:genqueue:${id}:lock`);
      assert.ok(ttl > 0 && ttl <= LOCK_MS, `lock TTL ${ttl} ms within the configured ${LOCK_MS} ms`);
    }
    a.child.kill('SIGKILL');
    await a.exited;

    const config = loadConfig({ env: workerEnv(server.url) });
    const model = await resolveModelArg(checkpoint, config);
    workerB = await startWorker(config, model, { maxBatch: 4, maxWaitMs: 100, workerId: 'worker-b' }, pino({ level: 'silent' }));
    const bStarted = Date.now();
    // Recovery takes at most a lock's life plus two stalled checks; BullMQ's defaults would take 30-60 s.
    await until('worker B to take the jobs over', async () => (await queue.getActiveCount()) === ids.length && (await queue.getWaitingCount()) === 0, 60_000);
    await until(
      'the jobs to be B’s',
      async () => (await Promise.all(ids.map(async (id) => (await Job.fromId(queue, id))!.attemptsStarted))).every((n) => n === 2),
      60_000,
    );
    assert.ok(Date.now() - bStarted < LOCK_MS + 2 * STALLED_MS + 15_000, `taken over after ${Date.now() - bStarted} ms`);

    const results = [];
    for await (const r of new ResultCollector({ connection }).collect(ids.map((id) => ({ id, queue: 'genqueue' })), { wait: true, timeoutMs: 300_000 })) {
      results.push(r);
    }
    for (const r of results) {
      assert.equal(r.status, 'completed', JSON.stringify(r));
      if (r.status !== 'completed') continue;
      assert.equal(r.result.timings.workerId, 'worker-b');
      // On this CPU the batch outlasts several lock lives; a much faster machine only checks the takeover.
      t.diagnostic(`B's batch took ${Math.round(r.result.timings.generateMs)} ms; lock ${LOCK_MS} ms`);
      const job = (await Job.fromId(queue, r.id))!;
      // One stall (A's death); a lapse of B's lock during its batch would have stalled it again (and failed it).
      assert.equal(job.stalledCounter, 1);
      assert.equal(job.attemptsStarted, 2);
    }
    await queue.close();
  });
});
