#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerBuildCommand } from './commands/build-command.js';
import { registerGenerateCommand } from './commands/generate-command.js';





const program = new Command()
  .name('genqueue')
  .description('bulk text generation with decoder transformers on ONNX Runtime, fed by a Redis (BullMQ) queue')
  .version('0.1.0')
  .showHelpAfterError();


registerBuildCommand(program);
registerGenerateCommand(program);




program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  process.stderr.write(`genqueue: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
