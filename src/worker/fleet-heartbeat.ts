import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { WorkerStatsSnapshot } from './worker-stats.js';

export const FLEET_KEY_PREFIX = 'genqueue:fleet:';
const INTERVAL_MS = 5_000;
/** A worker that misses three heartbeats disappears from the fleet view. */
const TTL_SECONDS = 15;

export const FleetMember = z.object({
  workerId: z.string(),
  model: z.string(),
  device: z.string(),
  queues: z.array(z.string()),
  maxBatch: z.number(),
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
});
export type FleetMember = z.infer<typeof FleetMember>;

/** Publishes this worker's identity and counters to Redis with a TTL, for `genqueue dashboard`. */
export class FleetHeartbeat {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly describe: () => Omit<FleetMember, 'updatedAt' | 'stats' | 'rssBytes'>,
    private readonly stats: () => WorkerStatsSnapshot,
  ) {}

  start(): void {
    void this.beat();
    this.timer = setInterval(() => void this.beat(), INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.redis.del(FLEET_KEY_PREFIX + this.describe().workerId).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    const member: FleetMember = { ...this.describe(), updatedAt: Date.now(), stats: this.stats(), rssBytes: process.memoryUsage().rss };
    // A missed heartbeat must never fail the worker; the TTL takes care of a dead one.
    await this.redis.set(FLEET_KEY_PREFIX + member.workerId, JSON.stringify(member), 'EX', TTL_SECONDS).catch(() => undefined);
  }
}

export async function readFleet(redis: Redis): Promise<FleetMember[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${FLEET_KEY_PREFIX}*`, 'COUNT', 100);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  if (keys.length === 0) return [];
  const values = await redis.mget(keys);
  // Anything else under the prefix (another version's heartbeat, a stray key) is skipped, never thrown.
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
