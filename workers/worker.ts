/**
 * Container / process-manager entry point for one worker: everything comes from the environment
 * (REDIS_URL, GENQUEUE_MODEL, GENQUEUE_DEVICE, GENQUEUE_MAX_BATCH, GENQUEUE_PRECISION, GENQUEUE_CONFIG, …),
 * so `node dist/workers/worker.js` is all a Dockerfile or systemd unit needs. One process per GPU:
 * GENQUEUE_DEVICE=cuda:N pins it.
 */
import { loadConfig } from '../src/config/load-config.js';
import { createLogger } from '../src/cli/logger.js';
import { runWorkerProcess, shutdownExitCode } from '../src/worker/worker-process.js';

const config = loadConfig();
const logger = createLogger(config.logLevel);
runWorkerProcess(config, {}, logger).then(
  (report) => process.exit(shutdownExitCode(report)),
  (e: unknown) => {
    logger.fatal({ err: e instanceof Error ? e.message : String(e) }, 'worker failed to start');
    process.exit(1);
  },
);
