import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Timings } from '../queue/result-schema.js';

/** Seconds from a job's enqueueing to its first token or its result: milliseconds (idle fleet) to an hour (backlog). */
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds of one batch's graph run. */
const BATCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Batches round up to powers of two in the engine, so the buckets follow them. */
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

export interface WorkerMetricLabels {
  readonly worker: string;
  readonly model: string;
  readonly device: string;
}

/**
 * One worker's Prometheus metrics (its own registry, labelled with worker, model and device, plus the process
 * metrics), fed at the points that feed WorkerStats and served on the worker's --metrics-port.
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly completed = this.counter('genqueue_jobs_completed_total', 'Jobs this worker completed');
  private readonly failed = this.counter('genqueue_jobs_failed_total', 'Job attempts that failed on this worker');
  private readonly tokens = this.counter('genqueue_generated_tokens_total', 'Tokens generated (prompt tokens excluded)');
  private readonly batches = this.counter('genqueue_batches_total', 'Batches run by the engine');
  private readonly batchSize = this.histogram('genqueue_batch_size', 'Jobs per batch', BATCH_SIZE_BUCKETS);
  private readonly batchSeconds = this.histogram('genqueue_batch_seconds', "A batch's graph run time", BATCH_SECONDS_BUCKETS);
  private readonly queueWait = this.histogram('genqueue_queue_wait_seconds', 'From enqueueing to a worker taking the job', LATENCY_BUCKETS);
  private readonly latency = this.histogram('genqueue_job_latency_seconds', 'From enqueueing to the result (end to end)', LATENCY_BUCKETS);
  private readonly firstToken = this.histogram(
    'genqueue_time_to_first_token_seconds',
    'From enqueueing to the first generated token (slot engine: the chunk boundary that delivered it; whole-batch runs: the batch end)',
    LATENCY_BUCKETS,
  );

  constructor(labels: WorkerMetricLabels) {
    this.registry.setDefaultLabels({ ...labels });
    collectDefaultMetrics({ register: this.registry });
  }

  recordBatch(size: number, tokens: number, ms: number): void {
    this.batches.inc();
    this.tokens.inc(tokens);
    this.batchSize.observe(size);
    this.batchSeconds.observe(ms / 1000);
  }

  /**
   * A completed job. The batch engine produces every token of a job in one run, so its first token exists only
   * when the run ends (`finishedAt`); an engine that streams tokens passes the time it emitted the first one.
   */
  recordCompleted(t: Timings, firstTokenAt = t.finishedAt): void {
    this.completed.inc();
    this.queueWait.observe(Math.max(0, t.startedAt - t.queuedAt) / 1000);
    this.latency.observe(Math.max(0, t.finishedAt - t.queuedAt) / 1000);
    this.firstToken.observe(Math.max(0, firstTokenAt - t.queuedAt) / 1000);
  }

  /** Tokens of a job that ran on the slot engine (its rows run together: there are no batches to count). */
  recordTokens(tokens: number): void {
    this.tokens.inc(tokens);
  }

  /** A worker on the slot engine: its slot count, and the slots holding a job when scraped. */
  setSlots(slots: number, inUse: () => number): void {
    new Gauge({ name: 'genqueue_slots', help: 'Slots of the running batch (continuous batching)', registers: [this.registry] }).set(slots);
    new Gauge({
      name: 'genqueue_slots_in_use',
      help: 'Slots holding a job',
      registers: [this.registry],
      collect() {
        this.set(inUse());
      },
    });
  }

  recordFailed(): void {
    this.failed.inc();
  }

  private counter(name: string, help: string): Counter {
    return new Counter({ name, help, registers: [this.registry] });
  }

  private histogram(name: string, help: string, buckets: number[]): Histogram {
    return new Histogram({ name, help, buckets, registers: [this.registry] });
  }
}
