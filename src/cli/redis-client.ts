import type { GenqueueConfig } from '../config/config-schema.js';
import { createRedisConnection, type RedisConnection, type RedisUnavailableError } from '../queue/redis-connection.js';
import { createLogger } from './logger.js';

let failure: RedisUnavailableError | undefined;

/**
 * The Redis connection of a client command (enqueue, results, cancel): while Redis is unreachable it retries for
 * config.redisConnectTimeoutMs, then gives up, and the command fails with redisClientFailure().
 */
export function connectRedisClient(config: GenqueueConfig): RedisConnection {
  return createRedisConnection(config.redisUrl, {
    logger: createLogger(config.logLevel),
    tls: config.redisTls,
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
