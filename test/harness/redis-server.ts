import type { Redis } from 'ioredis';
import { createRedisConnection } from '../../src/queue/redis-connection.js';
import { RedisServerProcess } from '../../src/queue/redis-server-process.js';

export interface TestRedis {
  readonly url: string;
  /** A client as the product makes one (createRedisConnection). */
  readonly connection: Redis;
  /** Disconnects the client and stops the server. */
  stop(): Promise<void>;
}

/** Every test file that needs Redis starts its own real redis-server on a free port, with one client. */
export async function startTestRedis(): Promise<TestRedis> {
  const server = await RedisServerProcess.start();
  const connection = createRedisConnection(server.url) as Redis; // a redis:// URL: one server
  return {
    url: server.url,
    connection,
    stop: async () => {
      connection.disconnect();
      await server.stop();
    },
  };
}
