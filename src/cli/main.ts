#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerBuildCommand } from './commands/build-command.js';
import { registerGenerateCommand } from './commands/generate-command.js';
import { registerWorkerCommand } from './commands/worker-command.js';
import { registerEnqueueCommand } from './commands/enqueue-command.js';
import { registerResultsCommand } from './commands/results-command.js';
import { registerDemoCommand } from './commands/demo-command.js';
import { registerDashboardCommand } from './commands/dashboard-command.js';
import { registerWorkersCommand } from './commands/workers-command.js';
import { registerDoctorCommand } from './commands/doctor-command.js';
import { registerInstallCudaCommand } from './commands/install-cuda-command.js';
import { redisClientFailure } from './redis-client.js';
import { registerCancelCommand } from './commands/cancel-command.js';





const program = new Command()
  .name('genqueue')
  .description('bulk text generation with decoder transformers on ONNX Runtime, fed by a Redis (BullMQ) queue')
  .version('0.1.0')
  .showHelpAfterError();


registerDemoCommand(program);
registerBuildCommand(program);
registerGenerateCommand(program);
registerWorkerCommand(program);
registerWorkersCommand(program);
registerEnqueueCommand(program);
registerResultsCommand(program);
registerCancelCommand(program);
registerDashboardCommand(program);
registerDoctorCommand(program);
registerInstallCudaCommand(program);

// A reader that stops early (`genqueue enqueue --wait | head -1`) closes the pipe: stop quietly, as other CLI tools
// do, with the exit code chosen so far; the jobs themselves stay in Redis.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') process.stderr.write(`genqueue: cannot write to stdout: ${e.message}\n`);
  process.exit(typeof process.exitCode === 'number' ? process.exitCode : e.code === 'EPIPE' ? 0 : 1);
});


program.parseAsync(process.argv).catch((caught: unknown) => {
  if (caught instanceof CommanderError) process.exit(caught.exitCode);
  const e = redisClientFailure() ?? caught;
  process.stderr.write(`genqueue: ${e instanceof Error ? e.message : String(e)}\n`);
  // A command may have chosen a more specific code (2: refused input) before failing.
  process.exit(typeof process.exitCode === 'number' && process.exitCode !== 0 ? process.exitCode : 1);
});
