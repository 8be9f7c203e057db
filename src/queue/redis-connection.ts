import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, type ClusterNode, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { pino, type Logger } from 'pino';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** A connection to Redis: one server (redis://, rediss://) or a Redis Cluster (redis+cluster://, rediss+cluster://). */
export type RedisConnection = Redis | Cluster;

/**
 * `redis+cluster://[user:password@]host:port[,host:port…]` (and `rediss+cluster://` for TLS): the nodes a Cluster
 * client starts from (it learns the others from them). Groups: scheme's TLS `s`, user info, node list, the rest.
 */
const CLUSTER_URL = /^redis(s?)\+cluster:\/\/(?:([^@/?#]*)@)?([^/?#]*)(.*)$/i;

/** user:password → user:*** (user info without a password is a user name: kept). */
function redactUserInfo(userInfo: string): string {
  const colon = userInfo.indexOf(':');
  return colon < 0 ? userInfo : `${userInfo.slice(0, colon)}:***`;
}

/** The URL with its password (user info or a password= parameter) replaced by ***: the only form printed or logged. */
export function redactUrl(url: string): string {
  const cluster = CLUSTER_URL.exec(url);
  if (cluster) {
    const [, s, userInfo, nodes, rest] = cluster;
    return `redis${s}+cluster://${userInfo === undefined ? '' : `${redactUserInfo(userInfo)}@`}${nodes}${rest!.replace(/([?&]password=)[^&#]*/gi, '$1***')}`;
  }
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

/** A Redis URL genqueue cannot use; the message names it without its password (and not at all if it does not parse). */
export class RedisUrlError extends Error {
  override readonly name = 'RedisUrlError';
  constructor(url: string | undefined, reason: string) {
    super(url === undefined ? `Redis URL: ${reason}` : `Redis URL ${redactUrl(url)}: ${reason}`);
  }
}

/** Where a URL points: one server (ioredis reads the URL itself) or a Cluster's start nodes and credentials. */
type RedisTarget =
  | { readonly kind: 'server'; readonly tls: boolean }
  | {
      readonly kind: 'cluster';
      readonly tls: boolean;
      readonly nodes: { host: string; port: number }[];
      readonly username?: string;
      readonly password?: string;
    };

const URL_FORMS = 'expected redis://, rediss://, redis+cluster:// or rediss+cluster://';

/** Parses a Redis URL; RedisUrlError says what is wrong with it. */
export function parseRedisUrl(url: string): RedisTarget {
  const cluster = CLUSTER_URL.exec(url);
  if (cluster) {
    const [, s, userInfo, nodeList, rest] = cluster;
    if (rest && rest !== '/' && rest !== '/0') throw new RedisUrlError(url, 'a Redis Cluster URL takes no database or parameters (a Cluster has only database 0)');
    const nodes = nodeList!.split(',').map((node) => {
      let u: URL;
      try {
        u = new URL(`redis://${node}`);
      } catch {
        throw new RedisUrlError(url, `"${node}" is not host:port`);
      }
      if (!u.hostname || u.pathname !== '' || u.username || u.password) throw new RedisUrlError(url, `"${node}" is not host:port`);
      return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 6379 };
    });
    if (nodeList === '') throw new RedisUrlError(url, 'no node: list host:port[,host:port…]');
    let username: string | undefined;
    let password: string | undefined;
    if (userInfo !== undefined) {
      const colon = userInfo.indexOf(':');
      username = decodeURIComponent(colon < 0 ? userInfo : userInfo.slice(0, colon)) || undefined;
      password = colon < 0 ? undefined : decodeURIComponent(userInfo.slice(colon + 1));
    }
    return { kind: 'cluster', tls: s !== '', nodes, ...(username ? { username } : {}), ...(password ? { password } : {}) };
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Where it is cannot be told, so neither can where its password is: it is not shown.
    throw new RedisUrlError(undefined, `not a URL (${URL_FORMS})`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new RedisUrlError(url, URL_FORMS);
  if (!u.hostname) throw new RedisUrlError(url, 'no host');
  return { kind: 'server', tls: u.protocol === 'rediss:' };
}

/** Why a Redis URL is unusable, or undefined when it is fine (the config schema's check). */
export function redisUrlProblem(url: string): string | undefined {
  try {
    parseRedisUrl(url);
    return undefined;
  } catch (e) {
    return e instanceof RedisUrlError ? e.message : String(e);
  }
}

/**
 * TLS settings of a rediss:// connection, as files: the CA that signed the server's certificate (trusted instead of
 * Node's roots; without it, Node's roots and NODE_EXTRA_CA_CERTS are), and a client certificate and key where the
 * server asks for one. rejectUnauthorized: false accepts any server certificate (tests only: it defeats TLS).
 */
export interface RedisTlsFiles {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly rejectUnauthorized?: boolean;
}

/** A TLS file named in the settings cannot be read. */
export class RedisTlsFileError extends Error {
  override readonly name = 'RedisTlsFileError';
}

/** Node's TLS options from the settings' files, read now: a missing file is one clear error at start. */
function tlsOptions(files: RedisTlsFiles | undefined): ConnectionOptions {
  const read = (what: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new RedisTlsFileError(`Redis TLS ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const ca = read('CA file', files?.ca);
  const cert = read('certificate file', files?.cert);
  const key = read('key file', files?.key);
  return {
    // Like redis-cli's --cacert, the CA file replaces Node's trusted roots for this connection.
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(files?.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
  };
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

/** The error behind a Cluster client's "Failed to refresh slots cache." (every node failed): the last node's. */
function innermost(err: unknown): unknown {
  const inner = err instanceof Error ? (err as Error & { lastNodeError?: unknown }).lastNodeError : undefined;
  return inner instanceof Error ? innermost(inner) : err;
}

/** TLS failures, by Node's error codes: which side of the handshake is wrong, in words. */
const TLS_REASONS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'TLS: the server certificate is self-signed and not trusted (set redisTls.ca)',
  SELF_SIGNED_CERT_IN_CHAIN: 'TLS: the server certificate chain ends in an untrusted CA (set redisTls.ca)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS: the server certificate is not signed by a trusted CA (set redisTls.ca)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'TLS: the server certificate is not signed by a trusted CA (set redisTls.ca)',
  CERT_HAS_EXPIRED: 'TLS: the server certificate has expired',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS: the server certificate is not valid for this host name',
  EPROTO: 'TLS handshake failed (is the server speaking TLS on this port?)',
};

/**
 * One line saying why a Redis call failed, from the error's code or its message's first line. Never the command
 * or its arguments: ioredis attaches them to reply errors, and the handshake's carry the password (AUTH, HELLO).
 */
function describeRedisError(caught: unknown): string {
  const err = innermost(caught);
  if (!(err instanceof Error)) return String(err).split('\n')[0]!;
  const code = (err as NodeJS.ErrnoException).code;
  if (WRONG_PASSWORD.test(err.message)) return 'wrong password (WRONGPASS)';
  if (NO_PASSWORD.test(err.message)) return 'Redis requires a password (NOAUTH)';
  if (/^Unknown RESP type/.test(err.message)) return 'the server there does not speak the Redis protocol';
  if (code && TLS_REASONS[code]) return TLS_REASONS[code];
  if (/wrong version number|packet length too long|unknown protocol/i.test(err.message)) return TLS_REASONS.EPROTO!;
  if (/alert certificate required/i.test(err.message)) return 'TLS: the server asks for a client certificate (set redisTls.cert and redisTls.key)';
  if (/alert (bad certificate|unknown ca|certificate unknown|unsupported certificate)/i.test(err.message)) return 'TLS: the server refused the client certificate';
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
  /** TLS files for a rediss:// or rediss+cluster:// URL (config redisTls); a plain URL ignores them. */
  readonly tls?: RedisTlsFiles;
}

interface Family extends RedisConnectionOptions {
  /** Redacted. */
  readonly url: string;
  readonly logger: Logger;
  /** Every live connection of this family: the first and all duplicates (BullMQ makes its own from ours). */
  readonly members: Set<RedisConnection>;
}

const MAX_RETRY_DELAY_MS = 2_000;
/** One connection attempt never takes longer than this (ioredis' default). */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * What a connection of a family knows about reaching Redis: since when it has been out of reach, why, and whether
 * it gave up. Its retry delays follow the family's budget; its errors go to the family's logger.
 */
class Reachability {
  /** Since when Redis has been out of reach (undefined while connected). */
  private unreachableSince: number | undefined = Date.now();
  private lastError: unknown;
  failure: RedisUnavailableError | undefined;

  constructor(readonly family: Family) {}

  /** Listens to a connection's events: 'error' for either kind, 'node error' for a Cluster's nodes. */
  watch(connection: RedisConnection): void {
    const { family } = this;
    family.members.add(connection);
    connection.on('ready', () => {
      this.unreachableSince = undefined;
      this.lastError = undefined;
    });
    const onError = (err: unknown): void => {
      // The connection closing after a TLS alert is a consequence: the failure keeps saying why it closed.
      if (!(this.lastError && (err as NodeJS.ErrnoException | undefined)?.code === 'ECONNRESET')) this.lastError = err;
      // Refused credentials do not come right by retrying: a client gives up now, and its failure says why.
      const inner = innermost(err);
      if (inner instanceof Error && isAuthError(inner.message) && family.giveUpAfterMs !== undefined) this.giveUp();
      else report(family.logger, family.url, 'connection', err);
    };
    connection.on('error', onError);
    connection.on('node error', onError);
    connection.on('end', () => family.members.delete(connection));
    connection.on('connect', () => family.members.add(connection));
  }

  retryDelay(attempt: number): number | null {
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
    let reason = describeRedisError(this.lastError ?? 'no answer');
    // Under TLS 1.3 a server that wants a client certificate sends its alert after the handshake; a client that
    // writes first may see only the reset that follows it.
    if (reason === 'connection reset' && this.family.url.startsWith('rediss') && !this.family.tls?.cert) {
      reason = 'TLS: the server reset the connection, as one that asks for a client certificate does (set redisTls.cert and redisTls.key)';
    }
    this.failure = new RedisUnavailableError(this.family.url, reason, waited);
    this.family.onUnavailable?.(this.failure);
  }
}

/**
 * An ioredis client whose duplicates belong to the same family: same error reporting, same retry policy, and
 * disconnectAll() reaches them all. BullMQ needs maxRetriesPerRequest: null (blocking commands must wait out a
 * reconnect, not fail), so bounding a client's wait is the retry strategy's job.
 */
class GenqueueRedis extends Redis {
  readonly reach: Reachability;

  /** From a URL (the first of a family) or from a family member's options (a duplicate). */
  constructor(target: string | RedisOptions, family: Family, tls?: ConnectionOptions) {
    const options = {
      maxRetriesPerRequest: null,
      connectTimeout: Math.min(CONNECT_TIMEOUT_MS, family.giveUpAfterMs ?? CONNECT_TIMEOUT_MS),
    };
    // A rediss:// URL alone makes ioredis use TLS with Node's defaults; the settings' files come in here.
    if (typeof target === 'string') super(target, { ...options, ...(tls ? { tls } : {}) });
    // genqueue's clients all keep ioredis' default (legacy) reply mapping, which the typed overloads want spelled out.
    else super({ ...(target as RedisOptions & { replyMapping?: 'legacy' }), ...options });
    this.reach = new Reachability(family);
    // Set after super(): ioredis consults it only after a connection closes, and each duplicate needs its own.
    this.options.retryStrategy = (attempt) => this.reach.retryDelay(attempt);
    this.reach.watch(this);
  }

  override duplicate(override?: Partial<RedisOptions>): Redis {
    return new GenqueueRedis({ ...this.options, ...override }, this.reach.family);
  }
}

type StartupNodes = { host: string; port: number }[];
/** genqueue's clients keep ioredis' default (legacy) reply mapping, which the typed constructor wants spelled out. */
type LegacyClusterOptions = ClusterOptions & { redisOptions?: ClusterOptions['redisOptions'] & { replyMapping?: 'legacy' } };

/**
 * A Redis Cluster client of a family, as GenqueueRedis is for one server. Its nodes' connections never reconnect
 * by themselves (ioredis reconnects the cluster as a whole), so the family's retry budget is its clusterRetryStrategy.
 */
class GenqueueCluster extends Cluster {
  readonly reach: Reachability;

  constructor(
    private readonly startNodes: StartupNodes,
    options: ClusterOptions,
    family: Family,
  ) {
    super(startNodes, options as LegacyClusterOptions);
    this.reach = new Reachability(family);
    this.options.clusterRetryStrategy = (attempt) => this.reach.retryDelay(attempt);
    this.reach.watch(this);
  }

  override duplicate(overrideStartupNodes: ClusterNode[] = [], overrideOptions: ClusterOptions = {}): Cluster {
    const options: ClusterOptions = { ...this.options, ...overrideOptions, redisOptions: { ...this.options.redisOptions, ...overrideOptions.redisOptions } };
    const nodes = overrideStartupNodes.length > 0 ? (overrideStartupNodes as StartupNodes) : this.startNodes;
    return new GenqueueCluster(nodes, options, this.reach.family);
  }
}

/** A connection made by createRedisConnection (or duplicated from one). */
function familyMember(connection: RedisConnection): GenqueueRedis | GenqueueCluster | undefined {
  return connection instanceof GenqueueRedis || connection instanceof GenqueueCluster ? connection : undefined;
}

/** How long a Cluster client waits for a node's CLUSTER SLOTS (ioredis' 1 s is short on a busy machine or over TLS). */
const SLOTS_REFRESH_TIMEOUT_MS = 5_000;

/**
 * The one way genqueue connects to Redis: one server for redis:// and rediss:// URLs, a Cluster client for
 * redis+cluster:// and rediss+cluster:// (keys then need a hash-tagged prefix: keyPrefix in queue-names.ts).
 * Throws RedisUrlError for a URL it cannot use and RedisTlsFileError for a TLS file it cannot read.
 */
export function createRedisConnection(url: string, options: RedisConnectionOptions = {}): RedisConnection {
  const target = parseRedisUrl(url);
  const tls = target.tls ? tlsOptions(options.tls) : undefined;
  const family: Family = { ...options, url: redactUrl(url), logger: options.logger ?? defaultLogger(), members: new Set() };
  if (target.kind === 'server') return new GenqueueRedis(url, family, tls);
  return new GenqueueCluster(
    target.nodes,
    {
      slotsRefreshTimeout: SLOTS_REFRESH_TIMEOUT_MS,
      redisOptions: {
        maxRetriesPerRequest: null,
        connectTimeout: Math.min(CONNECT_TIMEOUT_MS, family.giveUpAfterMs ?? CONNECT_TIMEOUT_MS),
        ...(target.username ? { username: target.username } : {}),
        ...(target.password ? { password: target.password } : {}),
        ...(tls ? { tls } : {}),
      },
    },
    family,
  );
}

/** A new connection like this one (BullMQ's blocking reads each need their own), in the same family. */
export function duplicateConnection(connection: RedisConnection): RedisConnection {
  return isCluster(connection) ? connection.duplicate() : connection.duplicate();
}

/** Whether a connection is a Cluster client. */
export function isCluster(connection: RedisConnection): connection is Cluster {
  return connection.isCluster;
}

/** Resolves once the connection is ready; rejects with RedisUnavailableError when it gives up. */
export function whenRedisReady(connection: RedisConnection): Promise<void> {
  const closed = (): Error => familyMember(connection)?.reach.failure ?? new Error('the Redis connection was closed before it was ready');
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

interface ErrorEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/**
 * Logs the 'error' events of a BullMQ Queue, QueueEvents or Worker made on this connection the way the
 * connection logs its own. Without a listener, BullMQ prints each error's stack to stderr.
 */
export function reportErrors(emitter: ErrorEmitter, connection: RedisConnection, source: string): void {
  const family = familyMember(connection)?.reach.family;
  emitter.on('error', (err) => report(family?.logger ?? defaultLogger(), family?.url ?? '', source, err));
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
export async function closeRedis(connection: RedisConnection): Promise<void> {
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
export function disconnectAll(connection: RedisConnection): void {
  const members = familyMember(connection)?.reach.family.members ?? new Set([connection]);
  for (const c of [...members]) c.disconnect();
}

/**
 * Every key matching a pattern, by SCAN: on each master of a Cluster (a SCAN reaches one node's keys only), or on
 * the one server.
 */
export async function scanKeys(connection: RedisConnection, match: string): Promise<string[]> {
  const found: string[] = [];
  // A Cluster client knows its masters once it has read the slots.
  if (isCluster(connection)) await whenRedisReady(connection);
  for (const node of isCluster(connection) ? connection.nodes('master') : [connection]) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found;
}
