import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { DashboardServer } from '../src/dashboard/dashboard-server.js';
import { QueueOverview } from '../src/dashboard/queue-overview.js';
import { JobProducer } from '../src/queue/job-producer.js';
import { jobFromFields } from '../src/queue/job-schema.js';
import { FleetHeartbeat } from '../src/worker/fleet-heartbeat.js';
import { WorkerStats } from '../src/worker/worker-stats.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

describe('dashboard against a real redis-server', () => {
  let redis: TestRedis;
  let connection: Redis;
  let overview: QueueOverview;
  let server: DashboardServer;
  let heartbeat: FleetHeartbeat;
  let base: string;

  before(async () => {
    redis = await startTestRedis();
    connection = redis.connection;
    const jobs = ['a', 'b', 'c'].map((p) => jobFromFields({ prompt: p, model: p === 'c' ? 'gpt2-large' : undefined }));
    const producer = new JobProducer({ connection });
    await producer.enqueueJobs(jobs);
    await producer.close();
    const stats = new WorkerStats();
    stats.recordBatch(2, 500, 100);
    heartbeat = new FleetHeartbeat(
      connection,
      () => ({ workerId: 'gpu-0', model: 'gpt2-large', device: 'cuda:0', queues: ['genqueue', 'genqueue.gpt2-large'], maxBatch: 64, pid: 1, host: 'h' }),
      () => stats.snapshot(),
    );
    heartbeat.start();
    overview = new QueueOverview(connection);
    server = new DashboardServer(overview);
    base = `http://127.0.0.1:${await server.listen(0)}`;
  });
  after(async () => {
    await server.close();
    await overview.close();
    await heartbeat.stop();
    await redis.stop();
  });

  it('/api/status shows each queue the fleet serves with its counts, and the fleet', async () => {
    let status: { queues: { name: string; waiting: number }[]; fleet: { workerId: string; device: string }[] } | undefined;
    for (let i = 0; i < 50 && !status?.fleet.length; i++) {
      status = (await (await fetch(`${base}/api/status`)).json()) as typeof status;
      if (!status?.fleet.length) await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(status!.queues.map((q) => [q.name, q.waiting]), [['genqueue', 2], ['genqueue.gpt2-large', 1]]);
    assert.deepEqual(status!.fleet.map((m) => [m.workerId, m.device]), [['gpu-0', 'cuda:0']]);
  });

  it('/metrics exposes the same numbers to Prometheus', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /genqueue_jobs\{queue="genqueue",state="waiting"\} 2/);
    assert.match(text, /genqueue_jobs\{queue="genqueue.gpt2-large",state="waiting"\} 1/);
    assert.match(text, /genqueue_workers 1/);
    assert.match(text, /genqueue_worker_tokens_per_second\{worker="gpu-0",model="gpt2-large",device="cuda:0"\}/);
  });

  it('/ serves the page', async () => {
    const res = await fetch(`${base}/`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /<h2>Fleet<\/h2>/);
  });
});
