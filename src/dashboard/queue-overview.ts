import { Queue } from 'bullmq';
import { DEFAULT_QUEUE, isGenqueueQueue, keyPrefix, queueKey } from '../queue/queue-names.js';
import { type RedisConnection, reportErrors, scanKeys } from '../queue/redis-connection.js';
import { type FleetMember, type ThroughputSample, readFleet, readThroughput } from '../worker/fleet-heartbeat.js';

/** Job states as the dashboard reports them: exclusive, so they add up to the queue's jobs. */
export const JOB_STATES = ['waiting', 'prioritized', 'paused', 'active', 'delayed', 'failed', 'completed', 'waiting-children'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface QueueCounts {
  readonly name: string;
  /** Paused queues hand out no jobs; their waiting and prioritized jobs count as `paused`. */
  readonly isPaused: boolean;
  readonly counts: Record<JobState, number>;
}

export interface Overview {
  readonly at: number;
  readonly queues: QueueCounts[];
  readonly fleet: FleetMember[];
  /** Sum of the workers' generated tokens/s over their last minute. */
  readonly tokensPerSecond: number;
  /** The fleet's tokens and jobs per minute over the last hour, oldest first. */
  readonly throughput: ThroughputSample[];
}

/** How often the keyspace is scanned for queues that no live worker serves (jobs for a model nobody loaded). */
const DISCOVERY_INTERVAL_MS = 30_000;

/** Reads what the dashboard shows: every genqueue queue with its job counts, the fleet and its throughput. */
export class QueueOverview {
  private readonly queues = new Map<string, Queue>();
  private discovered: string[] = [];
  private discoveredAt = 0;

  private readonly prefix: string;

  constructor(
    private readonly connection: RedisConnection,
    prefix?: string,
  ) {
    this.prefix = keyPrefix(connection, prefix);
  }

  async read(): Promise<Overview> {
    const [fleet, discovered, throughput] = await Promise.all([readFleet(this.connection, this.prefix), this.discover(), readThroughput(this.connection, 60, Date.now(), this.prefix)]);
    const names = [...new Set([DEFAULT_QUEUE, ...discovered, ...fleet.flatMap((m) => m.queues)])].sort();
    const queues = await Promise.all(names.map((name) => this.counts(name)));
    return {
      at: Date.now(),
      queues,
      fleet: fleet.sort((a, b) => a.workerId.localeCompare(b.workerId)),
      tokensPerSecond: fleet.reduce((a, m) => a + m.stats.recentTokensPerSecond, 0),
      throughput,
    };
  }

  /** The BullMQ Queue of a name (one per name, sharing the dashboard's connection). */
  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.connection, prefix: this.prefix });
      reportErrors(q, this.connection, `queue ${name}`);
      this.queues.set(name, q);
    }
    return q;
  }

  /** The queue names known so far (read() adds to them). */
  knownQueues(): string[] {
    return [...this.queues.keys()];
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }

  private async counts(name: string): Promise<QueueCounts> {
    const q = this.queue(name);
    const bullStates = JOB_STATES.filter((s) => s !== 'paused');
    const [raw, isPaused] = await Promise.all([q.getJobCounts(...bullStates), q.isPaused()]);
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, raw[s] ?? 0])) as Record<JobState, number>;
    // BullMQ 6 has no paused state: a paused queue's jobs stay in its wait and prioritized sets. They count
    // as paused here, so a held backlog is never mistaken for work about to run.
    if (isPaused) {
      counts.paused = counts.waiting + counts.prioritized;
      counts.waiting = 0;
      counts.prioritized = 0;
    }
    return { name, isPaused, counts };
  }

  /** Queues with a BullMQ meta key under the genqueue names (every queue a job was ever added to). */
  private async discover(): Promise<string[]> {
    if (Date.now() - this.discoveredAt < DISCOVERY_INTERVAL_MS) return this.discovered;
    const head = `${this.prefix}:`;
    const found = new Set<string>();
    // The prefix is matched literally (glob characters escaped); braces are literal to SCAN anyway.
    const literal = this.prefix.replace(/[*?[\]\\]/g, '\\$&');
    for (const k of await scanKeys(this.connection, queueKey(literal, `${DEFAULT_QUEUE}*`, 'meta'))) {
      const name = k.slice(head.length, -':meta'.length);
      if (isGenqueueQueue(name)) found.add(name);
    }
    this.discovered = [...found];
    this.discoveredAt = Date.now();
    return this.discovered;
  }
}
