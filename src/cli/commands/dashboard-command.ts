import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { DashboardAccess, DashboardConfigError, credentialsFromEnv } from '../../dashboard/dashboard-access.js';
import { DashboardServer } from '../../dashboard/dashboard-server.js';
import { QueueOverview } from '../../dashboard/queue-overview.js';
import { assertRedisReachable, closeRedis, createRedisConnection, redactUrl } from '../../queue/redis-connection.js';
import { createLogger } from '../logger.js';
import { configOption, nonNegativeInt } from '../options.js';

const list = (value: string): string[] => value.split(',').map((s) => s.trim()).filter(Boolean);

export function registerDashboardCommand(program: Command): void {
  program
    .command('dashboard')
    .description('serve the fleet page, bull-board for the jobs, /metrics and /healthz (basic auth: DASHBOARD_USER, DASHBOARD_PASSWORD)')
    .option('--port <n>', 'HTTP port', nonNegativeInt('--port'), 8080)
    .option('--host <host>', 'address to bind (other than loopback only with DASHBOARD_USER and DASHBOARD_PASSWORD set)', '127.0.0.1')
    .option('--allowed-hosts <names>', 'comma list of further host names the dashboard is reached by (env DASHBOARD_ALLOWED_HOSTS)')
    .addOption(configOption())
    .action(async (o: { port: number; host: string; allowedHosts?: string; config?: string }) => {
      const config = loadConfig({ file: o.config });
      let access: DashboardAccess;
      try {
        access = new DashboardAccess({
          host: o.host,
          credentials: credentialsFromEnv(process.env),
          allowedHosts: list(o.allowedHosts ?? process.env.DASHBOARD_ALLOWED_HOSTS ?? ''),
        });
      } catch (e) {
        if (e instanceof DashboardConfigError) process.exitCode = 2;
        throw e;
      }
      const logger = createLogger(config.logLevel);
      // A wrong URL or password fails here; later outages are ridden out (the API answers 503 meanwhile).
      await assertRedisReachable(config.redisUrl, { logger, tls: config.redisTls, giveUpAfterMs: config.redisConnectTimeoutMs });
      const connection = createRedisConnection(config.redisUrl, { logger, tls: config.redisTls });
      const overview = new QueueOverview(connection);
      const server = new DashboardServer(overview, access);
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
