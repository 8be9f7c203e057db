import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Queue, Worker } from 'bullmq';
import { type BrowserContext, type Page, chromium } from 'playwright-core';
import { DashboardAccess } from '../src/dashboard/dashboard-access.js';
import { DashboardServer } from '../src/dashboard/dashboard-server.js';
import { QueueOverview } from '../src/dashboard/queue-overview.js';
import { FleetHeartbeat } from '../src/worker/fleet-heartbeat.js';
import { WorkerStats } from '../src/worker/worker-stats.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

/** Debian's chromium (.ci/run installs it); GENQUEUE_CHROMIUM points elsewhere. */
const CHROMIUM = process.env.GENQUEUE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test/artifacts/', import.meta.url));
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run does) or set GENQUEUE_CHROMIUM`;
if (skip) process.stdout.write(`# dashboard browser test skipped: ${skip}\n`);

const USER = 'ops';
const PASSWORD = 'browser test';

/** A fresh profile per context, so no cookie or cache from another run takes part. */
async function launch(profile: string, credentials: boolean): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...(credentials ? { httpCredentials: { username: USER, password: PASSWORD } } : {}),
  });
}

/** The text of each cell of the table row whose first cell is `first`. */
async function rowCells(page: Page, table: string, first: string): Promise<string[]> {
  const row = page.locator(`${table} tbody tr`, { has: page.locator('td:first-child', { hasText: first }) });
  await row.waitFor();
  return row.locator('td').allInnerTexts();
}

describe('dashboard in headless Chromium', { skip }, () => {
  let redis: TestRedis;
  let overview: QueueOverview;
  let server: DashboardServer;
  let heartbeat: FleetHeartbeat;
  let profiles: string;
  let context: BrowserContext;
  let base: string;
  const queues: Queue[] = [];

  before(async () => {
    redis = await startTestRedis();
    const connection = redis.connection;
    const shared = new Queue('genqueue', { connection });
    await shared.addBulk([{ name: 'j', data: { prompt: 'a' } }, { name: 'j', data: { prompt: 'b' } }, { name: 'j', data: { prompt: 'urgent' }, opts: { priority: 2 } }]);
    const held = new Queue('genqueue.held', { connection });
    await held.addBulk([{ name: 'j', data: { prompt: 'one' } }, { name: 'j', data: { prompt: 'two' } }]);
    await held.pause();
    // A job that failed on a worker, for bull-board's failure view and retry.
    const tiny = new Queue('genqueue.tiny', { connection });
    await tiny.add('j', { prompt: 'x' }, { jobId: 'fail-me' });
    const failing = new Worker(
      'genqueue.tiny',
      async () => {
        throw new Error('prompt too long for the context');
      },
      { connection: connection.duplicate() },
    );
    await new Promise<void>((resolve) => failing.once('failed', () => resolve()));
    await failing.close();
    await failing.disconnect();
    queues.push(shared, held, tiny);

    const stats = new WorkerStats();
    stats.recordBatch(4, 1200, 300);
    for (let i = 0; i < 4; i++) stats.recordJob(true);
    stats.recordJob(false);
    heartbeat = new FleetHeartbeat(
      connection,
      () => ({ workerId: 'gpu-box:cuda:0', model: 'tiny', device: 'cuda:0', queues: ['genqueue', 'genqueue.tiny'], maxBatch: 64, pid: 1, host: 'gpu-box' }),
      () => stats.snapshot(),
    );
    heartbeat.start();
    overview = new QueueOverview(connection);
    server = new DashboardServer(overview, new DashboardAccess({ host: '127.0.0.1', credentials: { user: USER, password: PASSWORD } }));
    base = `http://127.0.0.1:${await server.listen(0, '127.0.0.1')}`;
    profiles = mkdtempSync(join(tmpdir(), 'genqueue-chromium-'));
    context = await launch(join(profiles, 'signed-in'), true);
    mkdirSync(ARTIFACTS, { recursive: true });
  });
  after(async () => {
    await context?.close();
    await server?.close();
    await overview?.close();
    await heartbeat?.stop();
    await Promise.all(queues.map((q) => q.close()));
    await redis?.stop();
    if (profiles) rmSync(profiles, { recursive: true, force: true });
  });

  it('without credentials the browser gets 401', async () => {
    const anonymous = await launch(join(profiles, 'anonymous'), false);
    try {
      // A page navigation would stop at the browser's sign-in prompt; the context's own request shows the answer.
      const res = await anonymous.request.get(`${base}/`);
      assert.equal(res.status(), 401);
      assert.match(res.headers()['www-authenticate'] ?? '', /^Basic/);
    } finally {
      await anonymous.close();
    }
  });

  it('the fleet page shows the workers, the queues with prioritized and paused jobs, and the last hour; resume acts', async () => {
    const page = await context.newPage();
    await page.goto(`${base}/`);
    const worker = await rowCells(page, '#fleet', 'gpu-box:cuda:0');
    // worker, model, device, max batch, jobs, failed, mean batch, tokens/s (last min), (graph), GPU MiB, RSS MiB, heartbeat
    assert.deepEqual(worker.slice(0, 7), ['gpu-box:cuda:0', 'tiny', 'cuda:0', '64', '4', '1', '4']);
    assert.equal(worker[8], '4,000');
    assert.equal(worker[9], '–', 'no GPU memory reported yet');
    assert.match(worker[11]!, /s ago$/);
    // queue, state, waiting, prioritized, paused, active, delayed, failed, completed, action
    assert.deepEqual((await rowCells(page, '#queues', 'genqueue.tiny')).slice(0, 9), ['genqueue.tiny', 'running', '0', '0', '0', '0', '0', '1', '0']);
    assert.deepEqual((await rowCells(page, '#queues', 'genqueue.held')).slice(0, 5), ['genqueue.held', 'paused', '0', '0', '2']);
    const shared = page.locator('#queues tbody tr').first();
    assert.deepEqual((await shared.locator('td').allInnerTexts()).slice(0, 5), ['genqueue', 'running', '2', '1', '0']);
    await page.locator('#chart-summary', { hasText: 'Last hour: 1,200 tokens, 4 jobs' }).waitFor();
    assert.equal(await page.locator('#chart polyline').count(), 1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-fleet.png'), fullPage: true });

    await page.locator('#queues button[data-queue="genqueue.held"]', { hasText: 'resume' }).click();
    await page.locator('#queues tbody tr', { hasText: 'genqueue.held' }).locator('td', { hasText: 'running' }).waitFor();
    assert.equal(await queues[1]!.isPaused(), false);
    assert.equal(await page.locator('#error').innerText(), '');
  });

  it('bull-board shows a failed job with its reason, and its Retry all sends the job back', async () => {
    const page = await context.newPage();
    await page.goto(`${base}/queues/queue/genqueue.tiny?status=failed`);
    await page.getByText('prompt too long for the context').first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-bull-board.png'), fullPage: true });
    await page.getByRole('button', { name: 'Retry all' }).click();
    await page.getByRole('button', { name: 'Confirm' }).click();
    await page.getByText('No failed jobs in this queue').waitFor();
    assert.equal(await (await queues[2]!.getJob('fail-me'))!.getState(), 'waiting');
  });
});
