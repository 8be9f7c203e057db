import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_PREFIX, fleetIndexKey, fleetMemberKey } from '../src/queue/queue-names.js';
import { FleetHeartbeat, readFleet } from '../src/worker/fleet-heartbeat.js';
import { WorkerStats } from '../src/worker/worker-stats.js';
import { type TestRedis, startTestRedis } from './harness/redis-server.js';

describe('fleet heartbeats read from a real redis-server', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('skips a key under the fleet prefix that is not JSON (or not a heartbeat) and lists the rest', async () => {
    const stats = new WorkerStats();
    const heartbeat = new FleetHeartbeat(
      redis.connection,
      () => ({ workerId: 'w-1', model: 'm', device: 'cpu', queues: ['genqueue'], maxBatch: 4, pid: 1, host: 'h' }),
      () => stats.snapshot(),
    );
    heartbeat.start();
    try {
      await redis.connection.set(fleetMemberKey(DEFAULT_PREFIX, 'broken'), '{"workerId": "half-written');
      await redis.connection.set(fleetMemberKey(DEFAULT_PREFIX, 'foreign'), '{"workerId": 7}');
      await redis.connection.sadd(fleetIndexKey(DEFAULT_PREFIX), 'broken', 'foreign');
      // start() sent the first heartbeat on this connection before these commands, so Redis has it.
      const fleet = await readFleet(redis.connection);
      assert.deepEqual(fleet.map((m) => m.workerId), ['w-1']);
    } finally {
      await heartbeat.stop();
    }
  });
});
