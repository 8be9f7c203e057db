import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The built CLI's entry. */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const run = promisify(execFile);

/** Runs the built CLI to its end; resolves with its output and exit code instead of throwing on a non-zero exit. */
export async function genqueue(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** A CLI child process with its output so far. */
export class Cli {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly watchers: { re: RegExp; resolve: () => void }[] = [];

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      for (const w of this.watchers.filter((w) => w.re.test(this.stderr))) w.resolve();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Resolves when stderr matches re; rejects if the process exits first. */
  async waitFor(re: RegExp): Promise<void> {
    if (re.test(this.stderr)) return;
    const seen = new Promise<void>((resolve) => this.watchers.push({ re, resolve }));
    const code = await Promise.race([seen.then(() => 'seen' as const), this.exited]);
    if (code !== 'seen') throw new Error(`exited (${code}) before ${re}:\n${this.stderr}`);
  }

  /** The exit code, or null if it had to be killed after timeoutMs. */
  async exit(timeoutMs: number): Promise<number | null> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

export async function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<{ code: number | null; out: string; stderr: string }> {
  const cli = new Cli(args, env);
  const code = await cli.exit(timeoutMs);
  return { code, out: cli.stdout + cli.stderr, stderr: cli.stderr };
}

/** stderr holds pino's JSON lines and exactly one `genqueue: …` line, which is returned: no raw errors or stacks. */
export function oneClearLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  const raw = lines.filter((l) => {
    try {
      JSON.parse(l);
      return false;
    } catch {
      return true;
    }
  });
  assert.equal(raw.length, 1, `one plain line expected, got:\n${stderr}`);
  assert.match(raw[0]!, /^genqueue: /);
  return raw[0]!;
}

