import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { DEFAULT_QUEUE } from '../queue/queue-names.js';
import { reportErrors } from '../queue/redis-connection.js';
import { type FleetMember, readFleet } from '../worker/fleet-heartbeat.js';

export interface QueueCounts {
  readonly name: string;
  readonly waiting: number;
  readonly active: number;
  readonly delayed: number;
  readonly completed: number;
  readonly failed: number;
}

export interface Overview {
  readonly at: number;
  readonly queues: QueueCounts[];
  readonly fleet: FleetMember[];
  /** Sum of the workers' generated tokens/s over their last minute. */
  readonly tokensPerSecond: number;
}

/** Reads what the dashboard shows: job counts of every queue the fleet serves (and the shared one), and the fleet. */
export class QueueOverview {
  private readonly queues = new Map<string, Queue>();

  constructor(
    private readonly connection: Redis,
    private readonly prefix = 'bull',
  ) {}

  async read(): Promise<Overview> {
    const fleet = await readFleet(this.connection);
    const names = [...new Set([DEFAULT_QUEUE, ...fleet.flatMap((m) => m.queues)])].sort();
    const queues = await Promise.all(
      names.map(async (name) => {
        const c = await this.queue(name).getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed');
        return { name, waiting: c.waiting ?? 0, active: c.active ?? 0, delayed: c.delayed ?? 0, completed: c.completed ?? 0, failed: c.failed ?? 0 };
      }),
    );
    return {
      at: Date.now(),
      queues,
      fleet: fleet.sort((a, b) => a.workerId.localeCompare(b.workerId)),
      tokensPerSecond: fleet.reduce((a, m) => a + m.stats.recentTokensPerSecond, 0),
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.connection, prefix: this.prefix });
      reportErrors(q, this.connection, `queue ${name}`);
      this.queues.set(name, q);
    }
    return q;
  }
}
