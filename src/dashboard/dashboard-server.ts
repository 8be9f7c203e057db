import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import { DASHBOARD_PAGE } from './dashboard-page.js';
import type { Overview, QueueOverview } from './queue-overview.js';

/**
 * HTTP view of the queues and the fleet: `/` (a page), `/api/status` (JSON) and `/metrics` (Prometheus text,
 * via prom-client, so the same numbers can be scraped and alerted on).
 */
export class DashboardServer {
  private readonly registry = new Registry();
  private readonly jobs = new Gauge({ name: 'genqueue_jobs', help: 'Jobs by queue and state', labelNames: ['queue', 'state'], registers: [this.registry] });
  private readonly workerTokens = new Gauge({
    name: 'genqueue_worker_tokens_per_second',
    help: 'Generated tokens per second over the last minute, by worker',
    labelNames: ['worker', 'model', 'device'],
    registers: [this.registry],
  });
  private readonly workers = new Gauge({ name: 'genqueue_workers', help: 'Workers with a live heartbeat', registers: [this.registry] });
  private server: Server | undefined;

  constructor(private readonly overview: QueueOverview) {}

  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const fail = (e: unknown): void => {
        res.writeHead(503, { 'content-type': 'text/plain' }).end(`redis unavailable: ${e instanceof Error ? e.message : String(e)}\n`);
      };
      if (path === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(DASHBOARD_PAGE);
      } else if (path === '/api/status') {
        this.overview.read().then((o) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(o)), fail);
      } else if (path === '/metrics') {
        this.overview
          .read()
          .then(async (o) => {
            this.record(o);
            res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
          })
          .catch(fail);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    });
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private record(o: Overview): void {
    this.jobs.reset();
    for (const q of o.queues) {
      for (const state of ['waiting', 'active', 'delayed', 'completed', 'failed'] as const) this.jobs.set({ queue: q.name, state }, q[state]);
    }
    this.workerTokens.reset();
    for (const m of o.fleet) this.workerTokens.set({ worker: m.workerId, model: m.model, device: m.device }, m.stats.recentTokensPerSecond);
    this.workers.set(o.fleet.length);
  }
}
