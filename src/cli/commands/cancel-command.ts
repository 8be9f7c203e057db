import type { Command } from 'commander';
import { loadConfig } from '../../config/load-config.js';
import { JobCanceller } from '../../queue/job-canceller.js';
import { closeRedis } from '../../queue/redis-connection.js';
import { distinctRefs, readJobRefs } from '../../queue/result-collector.js';
import { configOption } from '../options.js';
import { ProgressBar } from '../progress-bar.js';
import { connectRedisClient } from '../redis-client.js';

interface CancelOptions {
  idsFrom: string;
  config?: string;
}

export function registerCancelCommand(program: Command): void {
  program
    .command('cancel')
    .description('cancel jobs enqueued earlier: waiting ones are removed, active ones end as cancelled when their batch ends')
    .requiredOption('--ids-from <file.jsonl>', 'lines with an "id" (the enqueued file, or the --ids-out file of enqueue)')
    .addOption(configOption())
    .action(async (o: CancelOptions) => {
      const config = loadConfig({ file: o.config });
      const refs = distinctRefs(await readJobRefs(o.idsFrom));
      const connection = connectRedisClient(config);
      const canceller = new JobCanceller({ connection });
      const bar = new ProgressBar('cancel');
      let r;
      try {
        r = await canceller.cancel(refs, (d, t) => bar.update(d, t));
      } finally {
        bar.stop();
        await canceller.close();
        await closeRedis(connection);
      }
      process.stderr.write(
        `jobs ${refs.length}: removed ${r.removed} (waiting), marked ${r.marked} (active: they end as cancelled), ` +
          `already finished ${r.finished}, missing ${r.missing}\n`,
      );
    });
}
