import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { DashboardAccess, DashboardConfigError, credentialsFromEnv } from '../src/dashboard/dashboard-access.js';
import { DashboardServer } from '../src/dashboard/dashboard-server.js';
import { type Overview, QueueOverview } from '../src/dashboard/queue-overview.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { DEFAULT_PREFIX, fleetIndexKey } from '../src/queue/queue-names.js';
import { FleetHeartbeat, readFleet, readThroughput } from '../src/worker/fleet-heartbeat.js';
import { WorkerStats } from '../src/worker/worker-stats.js';
import { eventually } from './harness/eventually.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request with exactly the headers given (fetch would not let a test set Host). */
function http(url: string, o: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('DashboardAccess settings', () => {
  it('refuses a non-loopback address without credentials, and half-set credentials', () => {
    assert.throws(() => new DashboardAccess({ host: '0.0.0.0' }), DashboardConfigError);
    assert.throws(() => new DashboardAccess({ host: '10.1.2.3' }), /without credentials: set DASHBOARD_USER and DASHBOARD_PASSWORD/);
    assert.doesNotThrow(() => new DashboardAccess({ host: '127.0.0.1' }));
    assert.doesNotThrow(() => new DashboardAccess({ host: '0.0.0.0', credentials: { user: 'u', password: 'p' } }));
    assert.throws(() => credentialsFromEnv({ DASHBOARD_USER: 'ops' }), /both DASHBOARD_USER and DASHBOARD_PASSWORD/);
    assert.equal(credentialsFromEnv({}), undefined);
  });

  it('genqueue dashboard --host 0.0.0.0 without credentials exits 2 before serving', async () => {
    const env = { ...process.env, DASHBOARD_USER: '', DASHBOARD_PASSWORD: '', REDIS_URL: 'redis://127.0.0.1:1' };
    const r = await promisify(execFile)(process.execPath, [CLI, 'dashboard', '--host', '0.0.0.0', '--port', '0'], { env }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refusing to serve on 0\.0\.0\.0 without credentials/);
  });
});

describe('dashboard against a real redis-server', () => {
  let redis: TestRedis;
  let overview: QueueOverview;
  let server: DashboardServer;
  let heartbeat: FleetHeartbeat;
  let stats: WorkerStats;
  let base: string;
  let host: string;
  const auth = basic('ops', 'secret pass');
  const extra: Queue[] = [];

  before(async () => {
    redis = await startTestRedis();
    const connection = redis.connection;
    const jobs = ['a', 'b', 'c'].map((p) => jobFromFields({ prompt: p, model: p === 'c' ? 'gpt2-large' : undefined }));
    const producer = new JobProducer({ connection });
    await producer.enqueueJobs(jobs);
    await producer.close();
    // A foreign producer's prioritized job, a queue no live worker serves, and a paused queue.
    const shared = new Queue('genqueue', { connection });
    await shared.add('p', { prompt: 'urgent' }, { priority: 3 });
    const orphan = new Queue('genqueue.orphan', { connection });
    await orphan.add('o', { prompt: 'nobody serves me' });
    const held = new Queue('genqueue.held', { connection });
    await held.addBulk([{ name: 'h', data: { prompt: 'one' } }, { name: 'h', data: { prompt: 'two' }, opts: { priority: 1 } }]);
    await held.pause();
    extra.push(shared, orphan, held);

    stats = new WorkerStats();
    stats.recordBatch(2, 500, 100);
    stats.recordJob(true);
    stats.recordJob(true);
    heartbeat = new FleetHeartbeat(
      connection,
      () => ({ workerId: 'gpu-0', model: 'gpt2-large', device: 'cuda:0', queues: ['genqueue', 'genqueue.gpt2-large'], maxBatch: 64, pid: 1, host: 'h' }),
      () => stats.snapshot(),
    );
    heartbeat.start();
    overview = new QueueOverview(connection);
    server = new DashboardServer(overview, new DashboardAccess({ host: '127.0.0.1', credentials: { user: 'ops', password: 'secret pass' } }), 2_000);
    const port = await server.listen(0, '127.0.0.1');
    host = `127.0.0.1:${port}`;
    base = `http://${host}`;
  });
  after(async () => {
    await server.close();
    await overview.close();
    await Promise.all(extra.map((q) => q.close()));
    await heartbeat.stop();
    await redis.stop();
  });

  const status = async (): Promise<Overview> => JSON.parse((await http(`${base}/api/status`, { headers: { authorization: auth } })).body) as Overview;

  it('/api/status shows every queue with waiting, prioritized and paused jobs, the fleet and its throughput', async () => {
    const s = await eventually('the heartbeat', async () => {
      const o = await status();
      return o.fleet.length && o.throughput.some((t) => t.tokens > 0) ? o : undefined;
    });
    const counts = Object.fromEntries(s.queues.map((q) => [q.name, q.counts]));
    assert.deepEqual(Object.keys(counts), ['genqueue', 'genqueue.gpt2-large', 'genqueue.held', 'genqueue.orphan']);
    assert.deepEqual([counts.genqueue!.waiting, counts.genqueue!.prioritized, counts.genqueue!.paused], [2, 1, 0]);
    // A paused queue's waiting and prioritized jobs show as paused.
    assert.deepEqual([counts['genqueue.held']!.paused, counts['genqueue.held']!.waiting, counts['genqueue.held']!.prioritized], [2, 0, 0]);
    assert.deepEqual(s.queues.filter((q) => q.isPaused).map((q) => q.name), ['genqueue.held']);
    assert.equal(counts['genqueue.orphan']!.waiting, 1);
    assert.deepEqual(s.fleet.map((m) => [m.workerId, m.device, m.gpuMemoryBytes]), [['gpu-0', 'cuda:0', null]]);
    assert.equal(s.throughput.length, 60);
    assert.deepEqual(s.throughput.reduce((a, t) => [a[0]! + t.tokens, a[1]! + t.jobs], [0, 0]), [500, 2]);
  });

  it('/metrics exposes queue depths by state, paused queues and the live fleet', async () => {
    const text = (await http(`${base}/metrics`, { headers: { authorization: auth } })).body;
    assert.match(text, /genqueue_queue_jobs\{queue="genqueue",state="waiting"\} 2/);
    assert.match(text, /genqueue_queue_jobs\{queue="genqueue",state="prioritized"\} 1/);
    assert.match(text, /genqueue_queue_jobs\{queue="genqueue.held",state="paused"\} 2/);
    assert.match(text, /genqueue_queue_jobs\{queue="genqueue.gpt2-large",state="waiting"\} 1/);
    assert.match(text, /genqueue_queue_paused\{queue="genqueue.held"\} 1/);
    assert.match(text, /genqueue_queue_paused\{queue="genqueue"\} 0/);
    assert.match(text, /genqueue_workers 1/);
    assert.match(text, /genqueue_worker_tokens_per_second\{worker="gpu-0",model="gpt2-large",device="cuda:0"\}/);
    assert.match(text, /genqueue_worker_heartbeat_age_seconds\{worker="gpu-0"/);
    assert.match(text, /process_resident_memory_bytes \d+/);
  });

  it('refuses a Host that is not the bound address or a configured name (DNS rebinding)', async () => {
    for (const h of ['evil.example', 'evil.example:' + host.split(':')[1], '127.0.0.1.evil.example']) {
      const r = await http(`${base}/api/status`, { headers: { host: h, authorization: auth } });
      assert.equal(r.status, 403, h);
      assert.match(r.body, /host not allowed/);
    }
    assert.equal((await http(`${base}/healthz`, { headers: { host: 'evil.example' } })).status, 403);
    for (const h of [host, `localhost:${host.split(':')[1]}`]) {
      assert.equal((await http(`${base}/api/status`, { headers: { host: h, authorization: auth } })).status, 200, h);
    }
  });

  it('asks for basic auth (401) without the right credentials; /healthz answers without them', async () => {
    const none = await http(`${base}/`);
    assert.equal(none.status, 401);
    assert.match(String(none.headers['www-authenticate']), /^Basic realm="genqueue"/);
    assert.equal((await http(`${base}/api/status`, { headers: { authorization: basic('ops', 'wrong') } })).status, 401);
    assert.equal((await http(`${base}/metrics`, { headers: { authorization: basic('nobody', 'secret pass') } })).status, 401);
    assert.equal((await http(`${base}/queues/`)).status, 401);
    const ok = await http(`${base}/`, { headers: { authorization: auth } });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /<h2>Fleet<\/h2>/);
    assert.match(String(ok.headers['set-cookie']), /^XSRF-TOKEN=[0-9a-f]{48}; Path=\/; SameSite=Strict/);
    assert.equal(ok.headers['x-frame-options'], 'DENY');
    assert.equal((await http(`${base}/healthz`)).status, 200);
  });

  it('actions, genqueue\'s and bull-board\'s, need the CSRF token echoed and a same-origin Origin', async () => {
    const token = 'a'.repeat(48);
    const withToken = { authorization: auth, cookie: `XSRF-TOKEN=${token}`, 'x-xsrf-token': token };
    const paused = async (name: string): Promise<boolean> => new Queue(name, { connection: redis.connection }).isPaused();

    const noToken = await http(`${base}/api/queues/genqueue.orphan/pause`, { method: 'POST', headers: { authorization: auth } });
    assert.equal(noToken.status, 403);
    assert.match(noToken.body, /x-xsrf-token/);
    const wrongToken = await http(`${base}/api/queues/genqueue.orphan/pause`, { method: 'POST', headers: { ...withToken, 'x-xsrf-token': 'b'.repeat(48) } });
    assert.equal(wrongToken.status, 403);
    const crossSite = await http(`${base}/api/queues/genqueue.orphan/pause`, { method: 'POST', headers: { ...withToken, origin: 'http://evil.example' } });
    assert.equal(crossSite.status, 403);
    assert.equal(await paused('genqueue.orphan'), false, 'no refused action took effect');

    const pause = await http(`${base}/api/queues/genqueue.orphan/pause`, { method: 'POST', headers: { ...withToken, origin: base } });
    assert.equal(pause.status, 200, pause.body);
    assert.equal(await paused('genqueue.orphan'), true);
    const resume = await http(`${base}/api/queues/genqueue.orphan/resume`, { method: 'POST', headers: withToken });
    assert.equal(resume.status, 200);
    assert.equal(await paused('genqueue.orphan'), false);
    assert.equal((await http(`${base}/api/queues/genqueue.nosuch/pause`, { method: 'POST', headers: withToken })).status, 404);
    assert.equal((await http(`${base}/api/status`, { method: 'DELETE', headers: withToken })).status, 405);

    // bull-board's own action API sits behind the same checks.
    const boardPause = `${base}/queues/api/queues/genqueue.orphan/pause`;
    assert.equal((await http(boardPause, { method: 'PUT', headers: { authorization: auth } })).status, 403);
    assert.equal(await paused('genqueue.orphan'), false);
    const board = await http(boardPause, { method: 'PUT', headers: withToken });
    assert.equal(board.status, 200, board.body);
    assert.equal(await paused('genqueue.orphan'), true);
    await http(`${base}/queues/api/queues/genqueue.orphan/resume`, { method: 'PUT', headers: withToken });
  });

  it('answers 503 in bounded time while Redis does not answer', async () => {
    await redis.connection.call('CLIENT', 'PAUSE', '4000', 'ALL');
    const r = await http(`${base}/api/status`, { headers: { authorization: auth } });
    assert.equal(r.status, 503);
    assert.match(r.body, /reading the queues from Redis: no reply within 2000 ms/);
    await redis.connection.ping(); // the pause is over
  });

  it('bull-board lists every genqueue queue', async () => {
    const r = await http(`${base}/queues/api/queues`, { headers: { authorization: auth } });
    assert.equal(r.status, 200, r.body);
    const names = (JSON.parse(r.body) as { queues: { name: string }[] }).queues.map((q) => q.name).sort();
    assert.deepEqual(names, ['genqueue', 'genqueue.gpt2-large', 'genqueue.held', 'genqueue.orphan']);
    const page = await http(`${base}/queues/`, { headers: { authorization: auth } });
    assert.equal(page.status, 200);
    assert.match(page.body, /<base href="\/queues\/"/);
  });
});

describe('fleet heartbeats in Redis', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => redis.stop());

  it('publish throughput per minute once, drop expired workers from the index, and leave the fleet on stop', async () => {
    const stats = new WorkerStats();
    const hb = new FleetHeartbeat(
      redis.connection,
      () => ({ workerId: 'w1', model: 'm', device: 'cpu', queues: ['genqueue'], maxBatch: 4, pid: 2, host: 'h' }),
      () => stats.snapshot(),
    );
    stats.recordBatch(1, 10, 5);
    stats.recordJob(true);
    hb.start();
    await eventually('the first beat', async () => ((await readFleet(redis.connection)).length === 1 ? true : undefined));
    stats.recordBatch(1, 7, 5);
    stats.recordJob(true);
    await hb.stop();
    assert.deepEqual(await readFleet(redis.connection), []);
    const total = (await readThroughput(redis.connection, 2)).reduce((a, t) => [a[0]! + t.tokens, a[1]! + t.jobs], [0, 0]);
    assert.deepEqual(total, [17, 2], 'every token counted once, the last ones on stop');

    // A worker killed without stop(): once its key has expired, readers drop it from the index.
    await redis.connection.sadd(fleetIndexKey(DEFAULT_PREFIX), 'dead');
    assert.deepEqual(await readFleet(redis.connection), []);
    assert.deepEqual(await redis.connection.smembers(fleetIndexKey(DEFAULT_PREFIX)), []);
  });
});
