import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A private redis-server (from PATH) on a free loopback port, without persistence: used by `genqueue demo`
 * when REDIS_URL is unset, and by the tests, which always run against a real server.
 */
export class RedisServerProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly password: string | undefined,
  ) {}

  get url(): string {
    return `redis://${this.password === undefined ? '' : `:${encodeURIComponent(this.password)}@`}127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** password: the server requires it (requirepass), and url carries it. */
  static async start(options: { timeoutMs?: number; password?: string } = {}): Promise<RedisServerProcess> {
    const port = await freePort();
    const auth = options.password === undefined ? [] : ['--requirepass', options.password];
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...auth], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new Error(
            e.code === 'ENOENT'
              ? 'redis-server is not on PATH: install it (apt-get install -y redis-server) or set REDIS_URL'
              : `cannot start redis-server: ${e.message}`,
          ),
        ),
      ),
    );
    const server = new RedisServerProcess(child, port, options.password);
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    const ready = (async () => {
      for (;;) {
        const probe = new Redis(port, '127.0.0.1', {
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
          password: options.password,
        });
        probe.on('error', () => undefined); // refused connections are expected until the server is up
        try {
          await probe.connect();
          if ((await probe.ping()) === 'PONG') return;
        } catch {
          // not up yet
        } finally {
          probe.disconnect();
        }
        if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode} before answering`);
        if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING in time`);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      await Promise.race([ready, spawnError]);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    return server;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}
