import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { DashboardServer } from '../../dashboard/dashboard-server.js';
import { QueueOverview } from '../../dashboard/queue-overview.js';
import { assertRedisReachable, closeRedis, createRedisConnection, redactUrl } from '../../queue/redis-connection.js';
import { createLogger } from '../logger.js';
import { configOption, nonNegativeInt } from '../options.js';

export function registerDashboardCommand(program: Command): void {
  program
    .command('dashboard')
    .description('serve a page (and /api/status, /metrics) showing the queues and the worker fleet')
    .option('--port <n>', 'HTTP port', nonNegativeInt('--port'), 8080)
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .addOption(configOption())
    .action(async (o: { port: number; host: string; config?: string }) => {
      const config = loadConfig({ file: o.config });
      const logger = createLogger(config.logLevel);
      // A wrong URL or password fails here; later outages are ridden out (the API answers 503 meanwhile).
      await assertRedisReachable(config.redisUrl, { logger, giveUpAfterMs: config.redisConnectTimeoutMs });
      const connection = createRedisConnection(config.redisUrl, { logger });
      const overview = new QueueOverview(connection);
      const server = new DashboardServer(overview);
      const port = await server.listen(o.port, o.host);
      const stopped = new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      process.stderr.write(`dashboard on http://${o.host}:${port}/ (Redis ${redactUrl(config.redisUrl)})\n`);
      await stopped;
      await server.close();
      await overview.close();
      await closeRedis(connection);
    });
}
