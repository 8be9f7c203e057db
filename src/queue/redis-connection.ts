import { Redis, type RedisOptions } from 'ioredis';
import { pino, type Logger } from 'pino';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** The URL with its password (user info or a password= parameter) replaced by ***: the only form printed or logged. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(/\/\/[^/@]*@/, '//***@');
  }
  if (u.password) u.password = '***';
  if (u.searchParams.has('password')) u.searchParams.set('password', '***');
  return u.toString();
}

/** A connection with a retry budget gave up on Redis: refused, timed out, unknown host or refused credentials. */
export class RedisUnavailableError extends Error {
  override readonly name = 'RedisUnavailableError';
  constructor(
    /** Redacted. */
    readonly url: string,
    readonly reason: string,
    waitedMs: number,
  ) {
    super(`cannot reach Redis at ${url}: ${reason} (gave up after ${(waitedMs / 1000).toFixed(1)} s)`);
  }
}

const WRONG_PASSWORD = /^WRONGPASS\b|invalid password|invalid username-password/i;
const NO_PASSWORD = /^NOAUTH\b/;
const isAuthError = (message: string): boolean => WRONG_PASSWORD.test(message) || NO_PASSWORD.test(message) || /^NOPERM\b/.test(message);

/**
 * One line saying why a Redis call failed, from the error's code or its message's first line. Never the command
 * or its arguments: ioredis attaches them to reply errors, and the handshake's carry the password (AUTH, HELLO).
 */
function describeRedisError(err: unknown): string {
  if (!(err instanceof Error)) return String(err).split('\n')[0]!;
  const code = (err as NodeJS.ErrnoException).code;
  if (WRONG_PASSWORD.test(err.message)) return 'wrong password (WRONGPASS)';
  if (NO_PASSWORD.test(err.message)) return 'Redis requires a password (NOAUTH)';
  if (/^Unknown RESP type/.test(err.message)) return 'the server there does not speak the Redis protocol';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host not found';
    case 'ECONNRESET':
      return 'connection reset';
    default:
      return err.message.split('\n')[0]!;
  }
}

/** A logger for connections made without one (benchmarks, tests): warnings on stderr. */
let fallbackLogger: Logger | undefined;
const defaultLogger = (): Logger => (fallbackLogger ??= pino({ level: 'warn' }, pino.destination(2)));

/** The same error comes from many sources (each connection, and BullMQ re-emits it): one line per reason per interval. */
const REPORT_INTERVAL_MS = 10_000;
const reported = new WeakMap<Logger, Map<string, { at: number; repeats: number }>>();

/** ioredis' rejection of calls on a closed connection: a consequence, reported where the connection was lost. */
const CONNECTION_CLOSED = 'Connection is closed.';

function report(logger: Logger, url: string, source: string, err: unknown): void {
  const reason = describeRedisError(err);
  if (reason === CONNECTION_CLOSED) return;
  let seen = reported.get(logger);
  if (!seen) reported.set(logger, (seen = new Map()));
  const last = seen.get(reason);
  const now = Date.now();
  if (last && now - last.at < REPORT_INTERVAL_MS) {
    last.repeats++;
    return;
  }
  seen.set(reason, { at: now, repeats: 0 });
  logger.warn({ redis: url, source, err: reason, ...(last?.repeats ? { repeats: last.repeats } : {}) }, 'Redis error');
}

export interface RedisConnectionOptions {
  /** Where the connection's errors go (rate-limited, one line each); default: warnings on stderr. */
  readonly logger?: Logger;
  /**
   * How long the connection keeps trying while Redis is unreachable before it gives up (client commands); refused
   * credentials give up at once. Undefined: it retries for ever (a worker rides out a Redis restart).
   */
  readonly giveUpAfterMs?: number;
  /** Called once when the connection gives up. */
  readonly onUnavailable?: (e: RedisUnavailableError) => void;
}

interface Family extends RedisConnectionOptions {
  readonly url: string;
  readonly logger: Logger;
  /** Every live connection of this family: the first and all duplicates (BullMQ makes its own from ours). */
  readonly members: Set<GenqueueRedis>;
}

const MAX_RETRY_DELAY_MS = 2_000;
/** One connection attempt never takes longer than this (ioredis' default). */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * An ioredis client whose duplicates belong to the same family: same error reporting, same retry policy, and
 * disconnectAll() reaches them all. BullMQ needs maxRetriesPerRequest: null (blocking commands must wait out a
 * reconnect, not fail), so bounding a client's wait is the retry strategy's job.
 */
class GenqueueRedis extends Redis {
  private readonly family: Family;
  /** Since when Redis has been out of reach (undefined while connected). */
  private unreachableSince: number | undefined;
  private lastError: unknown;
  failure: RedisUnavailableError | undefined;

  /** From a URL (the first of a family) or from a family member's options (a duplicate). */
  constructor(target: string | RedisOptions, family: Family) {
    const options = {
      maxRetriesPerRequest: null,
      connectTimeout: Math.min(CONNECT_TIMEOUT_MS, family.giveUpAfterMs ?? CONNECT_TIMEOUT_MS),
    };
    if (typeof target === 'string') super(target, options);
    // genqueue's clients all keep ioredis' default (legacy) reply mapping, which the typed overloads want spelled out.
    else super({ ...(target as RedisOptions & { replyMapping?: 'legacy' }), ...options });
    this.family = family;
    this.unreachableSince = Date.now();
    // Set after super(): ioredis consults it only after a connection closes, and each duplicate needs its own.
    this.options.retryStrategy = (attempt) => this.retryDelay(attempt);
    family.members.add(this);
    this.on('ready', () => {
      this.unreachableSince = undefined;
      this.lastError = undefined;
    });
    this.on('error', (err: unknown) => {
      this.lastError = err;
      // Refused credentials do not come right by retrying: a client gives up now, and its failure says why.
      if (err instanceof Error && isAuthError(err.message) && family.giveUpAfterMs !== undefined) this.giveUp();
      else report(family.logger, family.url, 'connection', err);
    });
    this.on('end', () => family.members.delete(this));
    this.on('connect', () => family.members.add(this));
  }

  override duplicate(override?: Partial<RedisOptions>): Redis {
    return new GenqueueRedis({ ...this.options, ...override }, this.family);
  }

  get logger(): Logger {
    return this.family.logger;
  }

  get redactedUrl(): string {
    return this.family.url;
  }

  disconnectFamily(): void {
    for (const c of [...this.family.members]) c.disconnect();
  }

  private retryDelay(attempt: number): number | null {
    const since = (this.unreachableSince ??= Date.now());
    const backoff = Math.min(100 * 2 ** (attempt - 1), MAX_RETRY_DELAY_MS);
    const budget = this.family.giveUpAfterMs;
    if (budget === undefined) return backoff;
    const waited = Date.now() - since;
    if (this.failure || waited >= budget) {
      this.giveUp();
      return null; // ioredis ends the connection and fails what was queued
    }
    return Math.min(backoff, budget - waited);
  }

  private giveUp(): void {
    if (this.failure) return;
    const waited = Date.now() - (this.unreachableSince ?? Date.now());
    this.failure = new RedisUnavailableError(this.family.url, describeRedisError(this.lastError ?? 'no answer'), waited);
    this.family.onUnavailable?.(this.failure);
  }
}

/** The one way genqueue connects to Redis. */
export function createRedisConnection(url: string, options: RedisConnectionOptions = {}): Redis {
  return new GenqueueRedis(url, { ...options, url: redactUrl(url), logger: options.logger ?? defaultLogger(), members: new Set() });
}

/** Resolves once the connection is ready; rejects with RedisUnavailableError when it gives up. */
export function whenRedisReady(connection: Redis): Promise<void> {
  const closed = (): Error => redisFailure(connection) ?? new Error('the Redis connection was closed before it was ready');
  if (connection.status === 'ready') return Promise.resolve();
  if (connection.status === 'end') return Promise.reject(closed());
  return new Promise((resolve, reject) => {
    const onReady = (): void => {
      connection.off('end', onEnd);
      resolve();
    };
    const onEnd = (): void => {
      connection.off('ready', onReady);
      reject(closed());
    };
    connection.once('ready', onReady);
    connection.once('end', onEnd);
  });
}

/** The failure of a connection that gave up, if it did. */
function redisFailure(connection: Redis): RedisUnavailableError | undefined {
  return connection instanceof GenqueueRedis ? connection.failure : undefined;
}

interface ErrorEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/**
 * Logs the 'error' events of a BullMQ Queue, QueueEvents or Worker made on this connection the way the
 * connection logs its own. Without a listener, BullMQ prints each error's stack to stderr.
 */
export function reportErrors(emitter: ErrorEmitter, connection: Redis, source: string): void {
  const logger = connection instanceof GenqueueRedis ? connection.logger : defaultLogger();
  const url = connection instanceof GenqueueRedis ? connection.redactedUrl : '';
  emitter.on('error', (err) => report(logger, url, source, err));
}

/** Whether a promise settles (either way) within ms: what every wait on Redis that must not hang uses. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = promise.then(
    () => true,
    () => true,
  );
  if (!Number.isFinite(ms)) return settled;
  const result = await Promise.race([settled, new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return result;
}

const QUIT_TIMEOUT_MS = 2_000;

/** Closes a connection without hanging or throwing: QUIT when connected (bounded), otherwise a disconnect. */
export async function closeRedis(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  if (connection.status === 'ready') {
    const quit = connection.quit().then(
      () => true,
      () => false,
    );
    if ((await settlesWithin(quit, QUIT_TIMEOUT_MS)) && (await quit)) return;
  }
  connection.disconnect();
}

/**
 * Connects once with a client's retry budget, then disconnects: a service (worker, dashboard) checks its Redis URL
 * and credentials at start, so a mistake there is one clear error, and rides out later outages.
 */
export async function assertRedisReachable(url: string, options: RedisConnectionOptions): Promise<void> {
  const probe = createRedisConnection(url, options);
  try {
    await whenRedisReady(probe);
  } finally {
    await closeRedis(probe);
  }
}

/**
 * Disconnects a connection and every duplicate made from it, at once and whatever their state: what is left
 * when a shutdown deadline passes and BullMQ still waits for Redis.
 */
export function disconnectAll(connection: Redis): void {
  if (connection instanceof GenqueueRedis) connection.disconnectFamily();
  else connection.disconnect();
}
