/** Running counters of one worker, reported in heartbeats and on shutdown. */
export interface WorkerStatsSnapshot {
  readonly jobsCompleted: number;
  readonly jobsFailed: number;
  readonly batches: number;
  readonly generatedTokens: number;
  /** Sum of batch run times, ms. */
  readonly busyMs: number;
  readonly meanBatchSize: number;
  /** Generated tokens per second of graph time. */
  readonly tokensPerSecond: number;
  /** Generated tokens per second over the last minute of wall time. */
  readonly recentTokensPerSecond: number;
  readonly startedAt: number;
}

const WINDOW_MS = 60_000;

export class WorkerStats {
  private jobsCompleted = 0;
  private jobsFailed = 0;
  private batches = 0;
  private batchedJobs = 0;
  private generatedTokens = 0;
  private busyMs = 0;
  private readonly recent: { at: number; tokens: number }[] = [];
  readonly startedAt = Date.now();

  recordBatch(size: number, tokens: number, ms: number): void {
    this.batches++;
    this.batchedJobs += size;
    this.generatedTokens += tokens;
    this.busyMs += ms;
    this.noteRecent(tokens);
  }

  private noteRecent(tokens: number): void {
    const now = Date.now();
    this.recent.push({ at: now, tokens });
    while (this.recent.length && this.recent[0]!.at < now - WINDOW_MS) this.recent.shift();
  }

  /**
   * Tokens of a job that ran on the slot engine, and the wall time the engine was busy since the last call (its rows
   * run together, so their times overlap): tokensPerSecond is then tokens per busy second, as for batches.
   */
  recordTokens(tokens: number, busyMs: number): void {
    this.generatedTokens += tokens;
    this.busyMs += busyMs;
    this.noteRecent(tokens);
  }

  recordJob(ok: boolean): void {
    if (ok) this.jobsCompleted++;
    else this.jobsFailed++;
  }

  snapshot(): WorkerStatsSnapshot {
    const now = Date.now();
    const windowStart = Math.max(this.startedAt, now - WINDOW_MS);
    const recentTokens = this.recent.filter((r) => r.at >= windowStart).reduce((a, r) => a + r.tokens, 0);
    return {
      jobsCompleted: this.jobsCompleted,
      jobsFailed: this.jobsFailed,
      batches: this.batches,
      generatedTokens: this.generatedTokens,
      busyMs: this.busyMs,
      meanBatchSize: this.batches ? this.batchedJobs / this.batches : 0,
      tokensPerSecond: this.busyMs ? (this.generatedTokens * 1000) / this.busyMs : 0,
      recentTokensPerSecond: now > windowStart ? (recentTokens * 1000) / (now - windowStart) : 0,
      startedAt: this.startedAt,
    };
  }
}
