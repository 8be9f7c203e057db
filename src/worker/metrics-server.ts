import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { RedisConnection } from '../queue/redis-connection.js';

/** Named checks, each `ok` or the reason it failed. */
export type HealthChecks = Record<string, string>;

export interface MetricsServerOptions {
  readonly port: number;
  readonly host: string;
  readonly registry: Registry;
  /** The checks /healthz reports; healthy when every one says `ok`. */
  readonly health: () => Promise<HealthChecks>;
}

/** How long /healthz waits for Redis to answer PING. */
const PING_TIMEOUT_MS = 1_000;

/** Rejects with `what` when `promise` has not settled within `ms` (a Redis client without a retry limit waits forever). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no reply within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Answers `ok` when Redis replies to PING in time, else why not. */
export async function redisCheck(connection: RedisConnection): Promise<string> {
  return withTimeout(connection.ping(), PING_TIMEOUT_MS, 'PING').then(
    () => 'ok',
    (e: Error) => e.message,
  );
}

/** Starts `server` listening; resolves with the port it got (port 0: any free one). */
export async function listenHttp(server: Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Stops listening and ends idle keep-alive connections; does nothing for a server not listening. */
export async function closeHttp(server: Server | undefined): Promise<void> {
  if (!server?.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/** Writes a registry in Prometheus text format (shared by the worker's and the dashboard's /metrics). */
export async function sendMetrics(res: ServerResponse, registry: Registry): Promise<void> {
  const text = await registry.metrics();
  res.writeHead(200, { 'content-type': registry.contentType }).end(text);
}

/** A worker's `/metrics` (Prometheus) and `/healthz` (200 when every check is ok, else 503; JSON either way). */
export class MetricsServer {
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(o: MetricsServerOptions): Promise<MetricsServer> {
    const server = createServer((req, res) => void handle(o, req, res));
    return new MetricsServer(server, await listenHttp(server, o.port, o.host));
  }

  /** Stops listening and ends idle keep-alive connections; idempotent. */
  async close(): Promise<void> {
    await closeHttp(this.server);
  }
}

async function handle(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    } else if (path === '/metrics') {
      await sendMetrics(res, o.registry);
    } else if (path === '/healthz') {
      const checks = await o.health();
      const healthy = Object.values(checks).every((c) => c === 'ok');
      res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ healthy, checks }) + '\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics, /healthz\n');
    }
  } catch (e) {
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  }
}
