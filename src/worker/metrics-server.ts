import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';

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

/** Answers `ok` when Redis replies to PING in time, else why not (a client with no retry limit would wait forever). */
export async function redisCheck(connection: Redis): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no reply to PING within ${PING_TIMEOUT_MS} ms`), PING_TIMEOUT_MS);
  });
  try {
    return await Promise.race([connection.ping().then(() => 'ok', (e: Error) => e.message), timeout]);
  } finally {
    clearTimeout(timer);
  }
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
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new MetricsServer(server, (server.address() as AddressInfo).port);
  }

  /** Stops listening and ends idle keep-alive connections; idempotent. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
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
