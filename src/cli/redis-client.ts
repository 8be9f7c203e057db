import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { GenqueueConfig } from '../config/config-schema.js';
import { createRedisConnection, type RedisUnavailableError } from '../queue/redis-connection.js';
import { createLogger } from './logger.js';

let failure: RedisUnavailableError | undefined;

/**
 * The Redis connection of a client command (enqueue, results, dashboard, demo): while Redis is unreachable it
 * retries for config.redisConnectTimeoutMs, then gives up, and the command fails with redisClientFailure().
 */
export function connectRedisClient(config: GenqueueConfig, logger: Logger = createLogger(config.logLevel), url = config.redisUrl): Redis {
  return createRedisConnection(url, {
    logger,
    giveUpAfterMs: config.redisConnectTimeoutMs,
    onUnavailable: (e) => (failure ??= e),
  });
}

/**
 * Why a client connection gave up, if one did: the command then failed because of it, and this says why more
 * clearly than the error its pending call was rejected with (ioredis' "Connection is closed.").
 */
export function redisClientFailure(): RedisUnavailableError | undefined {
  return failure;
}
