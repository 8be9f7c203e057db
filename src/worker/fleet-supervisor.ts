import { type ChildProcess, spawn } from 'node:child_process';
import type { Logger } from 'pino';

/** One supervised worker process: a name for logs and the arguments it is started with. */
export interface ChildSpec {
  readonly name: string;
  readonly args: readonly string[];
}

export interface RestartBackoff {
  /** Wait before the first restart of a crashed child. Default 1 s. */
  readonly initialMs: number;
  /** The wait doubles per crash up to this. Default 60 s. */
  readonly maxMs: number;
  /** A child that ran this long before crashing counts as healthy: its wait starts over. Default 60 s. */
  readonly resetAfterMs: number;
}

export interface FleetSupervisorOptions {
  /** The executable (process.execPath: `npx` would not forward signals). */
  readonly command: string;
  readonly children: readonly ChildSpec[];
  readonly env?: NodeJS.ProcessEnv;
  readonly backoff?: Partial<RestartBackoff>;
  readonly logger: Logger;
}

const DEFAULT_BACKOFF: RestartBackoff = { initialMs: 1_000, maxMs: 60_000, resetAfterMs: 60_000 };

interface Slot {
  readonly spec: ChildSpec;
  process: ChildProcess | undefined;
  startedAt: number;
  /** The wait before the next restart. */
  delayMs: number;
  restarts: number;
  restartTimer: NodeJS.Timeout | undefined;
  /** How the process exited after a stop was forwarded to it. */
  stopped: { code: number | null; signal: NodeJS.Signals | null } | undefined;
}

/**
 * Keeps one worker process per slot running: restarts a child that exits on its own after an exponential
 * backoff (reset once a child has run for a while), forwards SIGTERM/SIGINT to every child and waits for them
 * to drain (each worker bounds its own shutdown). Children run in their own process groups, so a terminal's
 * Ctrl-C reaches them once, through the supervisor, not twice.
 */
export class FleetSupervisor {
  private readonly slots: Slot[];
  private readonly backoff: RestartBackoff;
  private stopping = false;
  private resolveDone!: (clean: boolean) => void;
  /** Resolves once stop() was called and every child has exited: true when each exited with code 0. */
  readonly done = new Promise<boolean>((resolve) => (this.resolveDone = resolve));

  constructor(private readonly options: FleetSupervisorOptions) {
    if (options.children.length === 0) throw new Error('no worker processes to supervise');
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.slots = options.children.map((spec) => ({
      spec,
      process: undefined,
      startedAt: 0,
      delayMs: this.backoff.initialMs,
      restarts: 0,
      restartTimer: undefined,
      stopped: undefined,
    }));
  }

  start(): void {
    for (const slot of this.slots) this.spawn(slot);
  }

  /** The running children's pids by name. */
  pids(): Map<string, number> {
    return new Map(this.slots.flatMap((s) => (s.process?.pid !== undefined ? [[s.spec.name, s.process.pid] as const] : [])));
  }

  /**
   * Stops restarting and forwards the signal to every running child; a second call forwards it again (a
   * worker may take a second signal as "stop now"). Resolves like `done`.
   */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<boolean> {
    if (!this.stopping) {
      this.stopping = true;
      this.options.logger.info({ signal, children: this.pids().size }, 'stopping: forwarding the signal and waiting for the workers to drain');
    }
    for (const slot of this.slots) {
      clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      if (slot.process && slot.process.exitCode === null && slot.process.signalCode === null) slot.process.kill(signal);
    }
    this.settleIfDone();
    return this.done;
  }

  private spawn(slot: Slot): void {
    const { logger } = this.options;
    const child = spawn(this.options.command, [...slot.spec.args], {
      env: this.options.env ?? process.env,
      stdio: ['ignore', 'inherit', 'inherit'],
      detached: true,
    });
    slot.process = child;
    slot.startedAt = Date.now();
    logger.info({ child: slot.spec.name, pid: child.pid, restarts: slot.restarts }, 'worker process started');
    let exited = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null, error?: Error): void => {
      if (exited) return;
      exited = true;
      slot.process = undefined;
      if (this.stopping) {
        slot.stopped = { code, signal };
        logger.info({ child: slot.spec.name, code, signal }, 'worker process exited');
        this.settleIfDone();
        return;
      }
      const ranMs = Date.now() - slot.startedAt;
      if (ranMs >= this.backoff.resetAfterMs) slot.delayMs = this.backoff.initialMs;
      const delayMs = slot.delayMs;
      slot.delayMs = Math.min(slot.delayMs * 2, this.backoff.maxMs);
      logger.warn({ child: slot.spec.name, code, signal, err: error?.message, ranMs, restartInMs: delayMs }, 'worker process exited: restarting');
      slot.restartTimer = setTimeout(() => {
        slot.restartTimer = undefined;
        slot.restarts++;
        this.spawn(slot);
      }, delayMs);
    };
    child.once('exit', (code, signal) => onExit(code, signal));
    // A process that could not start at all reports 'error' and may never report 'exit'.
    child.once('error', (e) => onExit(null, null, e));
  }

  private settleIfDone(): void {
    if (!this.stopping || this.slots.some((s) => s.process !== undefined)) return;
    // A child waiting for its restart when the stop came has nothing to drain.
    this.resolveDone(this.slots.every((s) => s.stopped === undefined || s.stopped.code === 0));
  }
}
