import type { ChainableCommander } from 'ioredis';
import { z } from 'zod';
import { fleetIndexKey, fleetMemberKey, keyPrefix, throughputKey } from '../queue/queue-names.js';
import type { RedisConnection } from '../queue/redis-connection.js';
import { withTimeout } from './metrics-server.js';
import type { WorkerStatsSnapshot } from './worker-stats.js';

/*
 * Each worker's heartbeat is a key with a TTL (fleetMemberKey); the set of the ids of workers that have beaten
 * (fleetIndexKey) lets the fleet be read with SMEMBERS instead of a SCAN over the whole keyspace (millions of job
 * keys on a busy queue). Each member's key still expires by its TTL on the Redis clock; readers drop ids whose key
 * is gone. Per-minute hashes (throughputKey: `tokens:<worker>`, `jobs:<worker>` → count), kept two hours, feed the
 * throughput chart. All sit under the queues' key prefix, in one Cluster slot with them.
 */
/** How long stop() waits for Redis before it gives up (the TTL removes the worker anyway). */
const STOP_TIMEOUT_MS = 2_000;
const INTERVAL_MS = 5_000;
/** A worker that misses three heartbeats disappears from the fleet view. */
const TTL_SECONDS = 15;
const THROUGHPUT_TTL_SECONDS = 2 * 3600;
const MINUTE_MS = 60_000;

export const FleetMember = z.object({
  workerId: z.string(),
  model: z.string(),
  device: z.string(),
  queues: z.array(z.string()),
  maxBatch: z.number(),
  /** A worker on the slot engine (continuous batching): its slots, and how many hold a job. */
  slots: z.number().optional(),
  slotsInUse: z.number().optional(),
  pid: z.number(),
  host: z.string(),
  updatedAt: z.number(),
  stats: z.object({
    jobsCompleted: z.number(),
    jobsFailed: z.number(),
    batches: z.number(),
    generatedTokens: z.number(),
    busyMs: z.number(),
    meanBatchSize: z.number(),
    tokensPerSecond: z.number(),
    recentTokensPerSecond: z.number(),
    startedAt: z.number(),
  }),
  /** Resident memory of the worker process, bytes. */
  rssBytes: z.number(),
  /** Device memory the engine holds, bytes; null where the engine does not report it (CPU, for now CUDA too). */
  gpuMemoryBytes: z.number().nullable().optional(),
});
export type FleetMember = z.infer<typeof FleetMember>;

/**
 * Publishes this worker's identity and counters to Redis with a TTL, and what it generated since its last beat
 * into the current minute's throughput hash, for `genqueue dashboard` (any instance draws the same chart).
 */
export class FleetHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  /** Counters already added to the throughput hashes. */
  private published = { tokens: 0, jobs: 0 };
  private readonly prefix: string;

  constructor(
    private readonly redis: RedisConnection,
    private readonly describe: () => Omit<FleetMember, 'updatedAt' | 'stats' | 'rssBytes' | 'gpuMemoryBytes'>,
    private readonly stats: () => WorkerStatsSnapshot,
    private readonly gpuMemoryBytes: () => number | null = () => null,
    /** The queues' key prefix (default: keyPrefix's). */
    prefix?: string,
  ) {
    this.prefix = keyPrefix(redis, prefix);
  }

  start(): void {
    this.tick();
    this.timer = setInterval(() => this.tick(), INTERVAL_MS);
    this.timer.unref();
  }

  /** Stops beating, publishes the last counts and removes this worker from the fleet. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const workerId = this.describe().workerId;
    const last = async (): Promise<void> => {
      await this.beating;
      const m = this.redis.multi().del(fleetMemberKey(this.prefix, workerId)).srem(fleetIndexKey(this.prefix), workerId);
      this.addThroughput(m, workerId, Date.now());
      await m.exec();
    };
    await withTimeout(last(), STOP_TIMEOUT_MS, 'fleet heartbeat').catch(() => undefined);
  }

  /** One beat at a time, so two never publish the same counts twice. */
  private tick(): void {
    this.beating ??= this.beat().finally(() => (this.beating = undefined));
  }

  private async beat(): Promise<void> {
    const now = Date.now();
    const member: FleetMember = {
      ...this.describe(),
      updatedAt: now,
      stats: this.stats(),
      rssBytes: process.memoryUsage().rss,
      gpuMemoryBytes: this.gpuMemoryBytes(),
    };
    const m = this.redis
      .multi()
      .set(fleetMemberKey(this.prefix, member.workerId), JSON.stringify(member), 'EX', TTL_SECONDS)
      .sadd(fleetIndexKey(this.prefix), member.workerId);
    const commit = this.addThroughput(m, member.workerId, now);
    // A missed heartbeat must never fail the worker; the TTL takes care of a dead one, the next beat of the counts.
    const replies = await m.exec().catch(() => null);
    if (replies && replies.every(([err]) => !err)) commit();
  }

  /** Queues the counts generated since the last publication into this minute's hash; returns what marks them published. */
  private addThroughput(m: ChainableCommander, workerId: string, now: number): () => void {
    const { generatedTokens, jobsCompleted } = this.stats();
    const tokens = generatedTokens - this.published.tokens;
    const jobs = jobsCompleted - this.published.jobs;
    if (tokens > 0 || jobs > 0) {
      const key = throughputKey(this.prefix, minuteOf(now));
      m.hincrby(key, `tokens:${workerId}`, tokens).hincrby(key, `jobs:${workerId}`, jobs).expire(key, THROUGHPUT_TTL_SECONDS);
    }
    return () => (this.published = { tokens: generatedTokens, jobs: jobsCompleted });
  }
}

/** The start of the minute a time falls in, ms since epoch. */
function minuteOf(at: number): number {
  return Math.floor(at / MINUTE_MS) * MINUTE_MS;
}

/** What the fleet generated in one minute. */
export interface ThroughputSample {
  /** Start of the minute, ms since epoch. */
  readonly at: number;
  readonly tokens: number;
  readonly jobs: number;
}

/** The fleet's generated tokens and completed jobs per minute over the last `minutes` minutes (oldest first), the current one included. */
export async function readThroughput(redis: RedisConnection, minutes = 60, now = Date.now(), prefix?: string): Promise<ThroughputSample[]> {
  const current = minuteOf(now);
  const head = keyPrefix(redis, prefix);
  const starts = Array.from({ length: minutes }, (_, i) => current - (minutes - 1 - i) * MINUTE_MS);
  const p = redis.pipeline();
  for (const at of starts) p.hgetall(throughputKey(head, at));
  const replies = (await p.exec()) ?? [];
  return starts.map((at, i) => {
    const [err, hash] = replies[i]!;
    if (err) throw err;
    let tokens = 0;
    let jobs = 0;
    for (const [field, value] of Object.entries(hash as Record<string, string>)) {
      if (field.startsWith('tokens:')) tokens += Number(value);
      else if (field.startsWith('jobs:')) jobs += Number(value);
    }
    return { at, tokens, jobs };
  });
}

export async function readFleet(redis: RedisConnection, prefix?: string): Promise<FleetMember[]> {
  const head = keyPrefix(redis, prefix);
  const ids = await redis.smembers(fleetIndexKey(head));
  const keys = ids.map((id) => fleetMemberKey(head, id));
  if (keys.length === 0) return [];
  const values = await redis.mget(keys);
  // A worker whose key has expired (three missed beats) is gone: it leaves the index too.
  const gone = ids.filter((_, i) => values[i] === null);
  if (gone.length > 0) await redis.srem(fleetIndexKey(head), ...gone);
  // Anything else under a member's key (another version's heartbeat, a stray value) is skipped, never thrown.
  return values.flatMap((v) => {
    if (!v) return [];
    let json: unknown;
    try {
      json = JSON.parse(v);
    } catch {
      return [];
    }
    const parsed = FleetMember.safeParse(json);
    return parsed.success ? [parsed.data] : [];
  });
}
