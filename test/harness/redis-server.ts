import { RedisServerProcess } from '../../src/queue/redis-server-process.js';

/** Every test file that needs Redis starts its own real redis-server on a free port. */
export function startRedisServer(): Promise<RedisServerProcess> {
  return RedisServerProcess.start();
}
