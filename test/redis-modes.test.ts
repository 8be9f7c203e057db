import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/load-config.js';
import type { Overview } from '../src/dashboard/queue-overview.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { DEFAULT_PREFIX, hasHashTag, keyPrefix } from '../src/queue/queue-names.js';
import {
  type RedisConnection,
  type RedisTlsFiles,
  closeRedis,
  createRedisConnection,
  parseRedisUrl,
  redactUrl,
  scanKeys,
  whenRedisReady,
} from '../src/queue/redis-connection.js';
import { type CollectedResult, type JobRef, ResultCollector } from '../src/queue/result-collector.js';
import { readThroughput } from '../src/worker/fleet-heartbeat.js';
import { Cli, oneClearLine, runCli } from './harness/cli-process.js';
import { eventually } from './harness/eventually.js';
import { fixturePath } from './harness/fixtures.js';
import { type TestCertificates, type TestTopology, makeCertificates, startRedisCluster, startTlsRedis } from './harness/redis-topologies.js';

const tiny = fixturePath('gpt2-tiny');

/** Enqueue, results and cancel of `ids`, through the CLI: each exits 0, and the results are all completed. */
async function enqueueResultsCancel(jobsFile: string, ids: string[], env: NodeJS.ProcessEnv): Promise<string[]> {
  const e = await runCli(['enqueue', jobsFile, '--wait', '--timeout-ms', '60000'], env);
  assert.equal(e.code, 0, e.out);
  const [r, c] = await Promise.all([runCli(['results', '--ids-from', jobsFile], env), runCli(['cancel', '--ids-from', jobsFile], env)]);
  assert.equal(r.code, 0, r.out);
  const results = r.out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { id: string; text?: unknown });
  assert.deepEqual(results.map((x) => x.id).sort(), ids);
  for (const x of results) assert.equal(typeof x.text, 'string', `completed: ${JSON.stringify(x)}`);
  assert.equal(c.code, 0, c.out);
  assert.match(c.stderr, new RegExp(`already finished ${ids.length}, missing 0`));
  return [e.out, r.out, c.out];
}

/** The library: a producer and a collector on one connection made by createRedisConnection. */
async function libraryRoundTrip(url: string, tls: RedisTlsFiles | undefined, ids: string[]): Promise<CollectedResult[]> {
  const connection = createRedisConnection(url, { tls, giveUpAfterMs: 10_000 });
  try {
    await whenRedisReady(connection);
    const producer = new JobProducer({ connection });
    const placed: JobRef[] = await producer.enqueueJobs(ids.map((id) => jobFromFields({ id, prompt: `library ${id}`, max_new_tokens: 2 })));
    await producer.close();
    const results: CollectedResult[] = [];
    for await (const r of new ResultCollector({ connection }).collect(placed, { wait: true, timeoutMs: 60_000 })) results.push(r);
    return results;
  } finally {
    await closeRedis(connection);
  }
}

/** The dashboard's /api/status once it shows what `ready` asks for. */
async function dashboardStatus(dashboard: Cli, ready: (o: Overview) => boolean): Promise<{ status: Overview; page: string }> {
  await dashboard.waitFor(/dashboard on /);
  const base = /dashboard on (http:\/\/\S+?)\/ /.exec(dashboard.stderr)![1]!;
  const status = await eventually('the dashboard to show the fleet and the jobs', async () => {
    const o = (await (await fetch(`${base}/api/status`)).json()) as Overview;
    return ready(o) ? o : undefined;
  });
  const page = await (await fetch(`${base}/`)).text();
  return { status, page };
}

/** The CLI's environment for a TLS Redis at url with the test's client certificates. */
function tlsEnv(url: string, certs: TestCertificates, dir: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    REDIS_URL: url,
    GENQUEUE_REDIS_TLS_CA: certs.ca,
    GENQUEUE_REDIS_TLS_CERT: certs.clientCert,
    GENQUEUE_REDIS_TLS_KEY: certs.clientKey,
    GENQUEUE_CACHE_DIR: join(dir, 'cache'),
    GENQUEUE_LOG_LEVEL: 'info',
    GENQUEUE_REDIS_CONNECT_TIMEOUT_MS: '2000',
  };
}

function writeJobs(path: string, ids: string[]): void {
  writeFileSync(path, ids.map((id) => JSON.stringify({ id, prompt: `prompt ${id}`, max_new_tokens: 2 })).join('\n'));
}

function assertNoSecret(outputs: string[], secrets: string[]): void {
  for (const out of outputs) for (const s of secrets) assert.ok(!out.includes(s), `a secret was printed:\n${out}`);
}

describe('Redis URLs and settings', () => {
  it('redactUrl hides the password of a cluster URL; unusable URLs are named without their password', () => {
    assert.equal(redactUrl('redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001'), 'redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001');
    assert.equal(redactUrl('rediss+cluster://ops:s3cret@a:7000,b:7000/'), 'rediss+cluster://ops:***@a:7000,b:7000/');
    assert.equal(redactUrl('redis+cluster://a:7000,b:7000'), 'redis+cluster://a:7000,b:7000');
    const cluster = parseRedisUrl('rediss+cluster://ops:p%40ss@a:7000,[::1]:7001,c');
    assert.deepEqual(cluster, {
      kind: 'cluster',
      tls: true,
      nodes: [
        { host: 'a', port: 7000 },
        { host: '::1', port: 7001 },
        { host: 'c', port: 6379 },
      ],
      username: 'ops',
      password: 'p@ss',
    });
    assert.deepEqual(parseRedisUrl('rediss://:pw@h:6380/2'), { kind: 'server', tls: true });
    for (const [url, reason] of [
      ['redis+cluster://:s3cret@a:7000/3', /only database 0/],
      ['redis+cluster://:s3cret@a:7000,b:x', /"b:x" is not host:port/],
      ['http://:s3cret@a:7000', /expected redis:\/\/, rediss:\/\//],
      ['not a url s3cret', /not a URL/],
    ] as const) {
      assert.throws(
        () => createRedisConnection(url),
        (e: Error) => e.name === 'RedisUrlError' && reason.test(e.message) && !e.message.includes('s3cret'),
        url,
      );
    }
  });

  it('config: GENQUEUE_REDIS_TLS_* set redisTls; TLS files with a plain URL and a bad URL are refused without the password', () => {
    const env = { REDIS_URL: 'rediss://:s3cret@h:6380', GENQUEUE_REDIS_TLS_CA: '/ca.pem', GENQUEUE_REDIS_TLS_CERT: '/c.pem', GENQUEUE_REDIS_TLS_KEY: '/k.pem' };
    assert.deepEqual(loadConfig({ env }).redisTls, { ca: '/ca.pem', cert: '/c.pem', key: '/k.pem' });
    assert.throws(
      () => loadConfig({ env: { ...env, REDIS_URL: 'redis://:s3cret@h:6379' } }),
      (e: Error) => /redisTls is set, but redisUrl redis:\/\/:\*\*\*@h:6379 is not a TLS URL/.test(e.message) && !e.message.includes('s3cret'),
    );
    assert.throws(
      () => loadConfig({ env: { REDIS_URL: 'redis+cluster://:s3cret@a:1/5' } }),
      (e: Error) => /redisUrl: .*only database 0/.test(e.message) && !e.message.includes('s3cret'),
    );
  });

  it('keys: a Cluster connection hash-tags the prefix once; a server keeps it as given', () => {
    assert.equal(keyPrefix({ isCluster: true }), '{bull}');
    assert.equal(keyPrefix({ isCluster: true }, 'genqueue-demo'), '{genqueue-demo}');
    assert.equal(keyPrefix({ isCluster: true }, '{bull}'), '{bull}');
    assert.equal(keyPrefix({ isCluster: true }, 'a{}b'), '{a{}b}', 'an empty tag is no tag');
    assert.equal(keyPrefix({ isCluster: false }), DEFAULT_PREFIX);
  });
});

describe('Redis over TLS with a password (rediss://, client certificates)', () => {
  const password = `tls-${randomUUID()}`;
  let dir: string;
  let certs: TestCertificates;
  let server: TestTopology;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-redis-tls-'));
    certs = await makeCertificates(join(dir, 'certs'));
    server = await startTlsRedis(dir, certs, password);
    env = tlsEnv(server.url, certs, dir);
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('worker, workers, enqueue --wait, results, cancel, dashboard, demo and the library work, and print the password nowhere', async () => {
    const ids = ['tls-a', 'tls-b'];
    const jobsFile = join(dir, 'jobs.jsonl');
    writeJobs(jobsFile, ids);
    const worker = new Cli(['worker', '--model', tiny, '--max-batch', '4', '--worker-id', 'tls-worker'], env);
    const workers = new Cli(['workers', '--cpus', '1', '--model', tiny, '--max-batch', '4', '--worker-id-prefix', 'tls-fleet'], env);
    const dashboard = new Cli(['dashboard', '--port', '0'], env);
    try {
      await worker.waitFor(/worker started/);
      const tls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
      const [outputs, library, demo, { status, page }] = await Promise.all([
        enqueueResultsCancel(jobsFile, ids, env),
        libraryRoundTrip(server.url, tls, ['tls-lib-a', 'tls-lib-b']),
        runCli(['demo', '--model', tiny, '--jobs', '2', '--max-new-tokens', '2'], env),
        dashboardStatus(
          dashboard,
          (o) =>
            ['tls-worker', 'tls-fleet:cpu#0'].every((w) => o.fleet.some((m) => m.workerId === w)) &&
            o.queues.some((q) => q.name === 'genqueue' && q.counts.completed === 4),
        ),
      ]);
      assert.deepEqual(library.map((r) => r.status), ['completed', 'completed']);
      assert.equal(demo.code, 0, demo.out);
      assert.match(demo.out, /redis: rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+\n/);
      for (const cli of [worker, workers, dashboard]) cli.child.kill('SIGTERM');
      for (const [name, cli] of [['worker', worker], ['workers', workers], ['dashboard', dashboard]] as const) {
        assert.equal(await cli.exit(60_000), 0, `${name}: ${cli.stderr}`);
      }
      assert.match(dashboard.stderr, /\(Redis rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+\)/);
      const all = [...outputs, demo.out, JSON.stringify(status), page, ...[worker, workers, dashboard].map((c) => c.stdout + c.stderr)];
      assertNoSecret(all, [password]);
    } finally {
      for (const cli of [worker, workers, dashboard]) cli.child.kill('SIGKILL');
    }
  });

  it('a wrong password, an untrusted server, no client certificate, an unreadable CA file, TLS files with a plain URL: one clear line each, exit non-zero', async () => {
    const jobsFile = join(dir, 'bad-jobs.jsonl');
    writeJobs(jobsFile, ['bad-a']);
    const wrong = `wrong-${randomUUID()}`;
    const wrongEnv = { ...env, REDIS_URL: server.url.replace(encodeURIComponent(password), wrong) };
    const cases: { args: string[]; env: NodeJS.ProcessEnv; line: RegExp }[] = [
      // The other commands meet a wrong password in redis-lifecycle.test.ts, over plain TCP.
      ...[
        ['cancel', '--ids-from', jobsFile],
        ['workers', '--cpus', '1', '--model', tiny],
        ['demo', '--model', tiny, '--jobs', '1'],
      ].map((args) => ({ args, env: wrongEnv, line: /^genqueue: cannot reach Redis at rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+: wrong password \(WRONGPASS\)/ })),
      {
        args: ['enqueue', jobsFile],
        env: { ...env, GENQUEUE_REDIS_TLS_CA: '' },
        line: /^genqueue: cannot reach Redis at rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+: TLS: the server certificate chain ends in an untrusted CA \(set redisTls\.ca\)/,
      },
      {
        args: ['results', '--ids-from', jobsFile],
        env: { ...env, GENQUEUE_REDIS_TLS_CERT: '', GENQUEUE_REDIS_TLS_KEY: '' },
        line: /^genqueue: cannot reach Redis at rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+: TLS: the server (asks for|reset the connection, as one that asks for) a client certificate/,
      },
      { args: ['worker', '--model', tiny], env: { ...env, GENQUEUE_REDIS_TLS_CA: join(dir, 'no-such-ca.pem') }, line: /^genqueue: Redis TLS CA file \S+no-such-ca\.pem: ENOENT$/ },
      {
        args: ['dashboard', '--port', '0'],
        env: { ...env, REDIS_URL: server.url.replace('rediss:', 'redis:') },
        line: /^genqueue: config: redisTls is set, but redisUrl redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ is not a TLS URL/,
      },
    ];
    const runs = await Promise.all(cases.map((c) => runCli(c.args, c.env)));
    for (const [i, r] of runs.entries()) {
      const name = cases[i]!.args[0];
      assert.notEqual(r.code, 0, `${name}: ${r.out}`);
      assert.match(oneClearLine(r.stderr), cases[i]!.line, name);
    }
    assertNoSecret(runs.map((r) => r.out), [password, wrong]);
  });
});

// TLS and a password too: what the cluster code adds is then met with every setting a node connection takes.
describe('Redis Cluster over TLS (rediss+cluster://, 3 masters, with a password)', () => {
  const password = `cluster-${randomUUID()}`;
  let dir: string;
  let certs: TestCertificates;
  let cluster: TestTopology;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-redis-cluster-'));
    certs = await makeCertificates(join(dir, 'certs'));
    cluster = await startRedisCluster(dir, password, { certs });
    env = tlsEnv(cluster.url, certs, dir);
  });
  after(async () => {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('worker, enqueue --wait, results, cancel, dashboard /api/status and the library work; every key lies in one slot', async () => {
    const ids = ['cl-a', 'cl-b', 'cl-c'];
    const jobsFile = join(dir, 'jobs.jsonl');
    writeJobs(jobsFile, ids);
    const worker = new Cli(['worker', '--model', tiny, '--max-batch', '4', '--worker-id', 'cluster-worker'], env);
    const dashboard = new Cli(['dashboard', '--port', '0'], env);
    let connection: RedisConnection | undefined;
    try {
      await worker.waitFor(/worker started/);
      const [outputs, library, { status, page }] = await Promise.all([
        enqueueResultsCancel(jobsFile, ids, env),
        libraryRoundTrip(cluster.url, { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }, ['cl-lib-a']),
        dashboardStatus(
          dashboard,
          (o) =>
            o.fleet.some((m) => m.workerId === 'cluster-worker') &&
            o.queues.some((q) => q.name === 'genqueue' && q.counts.completed === ids.length + 1),
        ),
      ]);
      assert.deepEqual(library.map((r) => r.status), ['completed']);

      connection = createRedisConnection(cluster.url, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } });
      const keys = await scanKeys(connection, '*');
      assert.ok(keys.length > 0);
      for (const k of keys) assert.ok(k.startsWith('{bull}:') && hasHashTag(k), `${k} is outside the {bull} slot`);
      assert.ok(keys.includes('{bull}:genqueue-fleet-index'), 'the fleet index is under the prefix');

      for (const cli of [worker, dashboard]) cli.child.kill('SIGTERM');
      assert.equal(await worker.exit(60_000), 0, worker.stderr);
      assert.equal(await dashboard.exit(60_000), 0, dashboard.stderr);
      // The worker's last beat (one MULTI over its heartbeat, the fleet index and a throughput hash) counted every job.
      const jobs = (await readThroughput(connection, 5)).reduce((n, t) => n + t.jobs, 0);
      assert.equal(jobs, ids.length + 1);
      assert.match(dashboard.stderr, /\(Redis rediss\+cluster:\/\/:\*\*\*@127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+\)/);
      assertNoSecret([...outputs, JSON.stringify(status), page, worker.stdout + worker.stderr, dashboard.stdout + dashboard.stderr], [password]);
    } finally {
      for (const cli of [worker, dashboard]) cli.child.kill('SIGKILL');
      if (connection) await closeRedis(connection);
    }
  });

  it('a wrong password: one clear line naming the nodes without the password, exit non-zero', async () => {
    const jobsFile = join(dir, 'bad-jobs.jsonl');
    writeJobs(jobsFile, ['bad-a']);
    const wrong = `wrong-${randomUUID()}`;
    const wrongEnv = { ...env, REDIS_URL: cluster.url.replace(encodeURIComponent(password), wrong) };
    const commands = [['enqueue', jobsFile]];
    const runs = await Promise.all(commands.map((args) => runCli(args, wrongEnv)));
    for (const [i, r] of runs.entries()) {
      assert.notEqual(r.code, 0, `${commands[i]![0]}: ${r.out}`);
      assert.match(oneClearLine(r.stderr), /^genqueue: cannot reach Redis at rediss\+cluster:\/\/:\*\*\*@127\.0\.0\.1:\d+,\S+: wrong password \(WRONGPASS\)/);
    }
    assertNoSecret(runs.map((r) => r.out), [password, wrong]);
  });
});
