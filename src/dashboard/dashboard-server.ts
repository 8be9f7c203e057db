import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { closeHttp, listenHttp, sendMetrics, withTimeout } from '../worker/metrics-server.js';
import type { DashboardAccess } from './dashboard-access.js';
import { DashboardMetrics } from './dashboard-metrics.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';
import { BOARD_PATH, QueueBoard } from './queue-board.js';
import type { Overview, QueueOverview } from './queue-overview.js';

const ACTION = /^\/api\/queues\/([^/]+)\/(pause|resume)$/;
const BOARD_SYNC_MS = 5_000;

/** Sent with every response: the pages must not be framed (their buttons act), nor their types guessed. */
const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "frame-ancestors 'none'",
  'referrer-policy': 'same-origin',
};

/**
 * The dashboard's HTTP server: the fleet page (`/`), its JSON (`/api/status`) and actions (`POST
 * /api/queues/<name>/pause|resume`), bull-board under `/queues/`, Prometheus `/metrics` and `/healthz`; every
 * request passes DashboardAccess first.
 */
export class DashboardServer {
  private readonly metrics = new DashboardMetrics();
  private readonly board = new QueueBoard();
  private server: Server | undefined;
  /** When the overview (and so the board's queue list) was last read. */
  private readAt = 0;

  constructor(
    private readonly overview: QueueOverview,
    private readonly access: DashboardAccess,
    /** How long a request waits for Redis before it gets 503 (the client retries reconnects without a limit). */
    private readonly readTimeoutMs = 5_000,
  ) {}

  async listen(port: number, host: string): Promise<number> {
    this.server = createServer((req, res) => void this.handle(req, res));
    return listenHttp(this.server, port, host);
  }

  /** Stops listening and ends idle keep-alive connections; idempotent. */
  async close(): Promise<void> {
    await closeHttp(this.server);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    const path = (req.url ?? '/').split('?')[0]!;
    if (!this.access.admit(req, res, path)) return;
    try {
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === BOARD_PATH || path.startsWith(`${BOARD_PATH}/`)) {
        // The board polls and loads assets: its queue list is brought up to date every few seconds, not per request.
        if (Date.now() - this.readAt > BOARD_SYNC_MS) await this.read();
        this.board.handle(req, res);
      } else if (req.method === 'POST' && ACTION.test(path)) {
        const [, name, action] = ACTION.exec(path)!;
        await this.act(name!, action as 'pause' | 'resume', res);
      } else if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
      } else if (path === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(DASHBOARD_PAGE);
      } else if (path === '/api/status') {
        const o = await this.read();
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(o));
      } else if (path === '/metrics') {
        this.metrics.record(await this.read());
        await sendMetrics(res, this.metrics.registry);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    } catch (e) {
      if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain' });
      res.end(`redis unavailable: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }

  private async read(): Promise<Overview> {
    const o = await withTimeout(this.overview.read(), this.readTimeoutMs, 'reading the queues from Redis');
    this.board.show(o.queues.map((q) => this.overview.queue(q.name)));
    this.readAt = Date.now();
    return o;
  }

  /** Pauses or resumes a queue the overview knows (names from the URL never create queues). */
  private async act(encoded: string, action: 'pause' | 'resume', res: ServerResponse): Promise<void> {
    const o = await this.read();
    const name = o.queues.map((q) => q.name).find((n) => encodeURIComponent(n) === encoded);
    if (name === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no queue ${encoded}\n`);
      return;
    }
    const queue = this.overview.queue(name);
    await (action === 'pause' ? queue.pause() : queue.resume());
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ queue: name, isPaused: await queue.isPaused() }));
  }
}
