import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { JOB_STATES, type Overview } from './queue-overview.js';

/**
 * What the dashboard's /metrics exports: queue depths by state, paused queues and the live fleet (the
 * per-worker counters and histograms come from each worker's own /metrics), plus the process metrics.
 */
export class DashboardMetrics {
  readonly registry = new Registry();
  private readonly jobs = this.gauge('genqueue_queue_jobs', 'Jobs by queue and state (a paused queue counts its waiting and prioritized jobs as paused)', [
    'queue',
    'state',
  ]);
  private readonly paused = this.gauge('genqueue_queue_paused', '1 while the queue is paused', ['queue']);
  private readonly workers = this.gauge('genqueue_workers', 'Workers with a live heartbeat', []);
  private readonly workerTokens = this.gauge('genqueue_worker_tokens_per_second', 'Generated tokens per second over the last minute, by worker', [
    'worker',
    'model',
    'device',
  ]);
  private readonly heartbeatAge = this.gauge('genqueue_worker_heartbeat_age_seconds', "Age of the worker's last heartbeat", ['worker', 'model', 'device']);

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Sets every gauge from one overview; series of queues and workers that are gone disappear. */
  record(o: Overview): void {
    for (const g of [this.jobs, this.paused, this.workerTokens, this.heartbeatAge]) g.reset();
    for (const q of o.queues) {
      for (const state of JOB_STATES) this.jobs.set({ queue: q.name, state }, q.counts[state]);
      this.paused.set({ queue: q.name }, q.isPaused ? 1 : 0);
    }
    this.workers.set(o.fleet.length);
    for (const m of o.fleet) {
      const labels = { worker: m.workerId, model: m.model, device: m.device };
      this.workerTokens.set(labels, m.stats.recentTokensPerSecond);
      this.heartbeatAge.set(labels, Math.max(0, o.at - m.updatedAt) / 1000);
    }
  }

  private gauge(name: string, help: string, labelNames: string[]): Gauge {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}
