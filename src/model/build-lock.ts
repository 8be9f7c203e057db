import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';

const LockOwner = z.object({ pid: z.number().int(), host: z.string() });

const POLL_MS = 100;

/**
 * A lock file that lets one process build a model while the others wait for it, across processes and hosts
 * sharing a cache directory. It only saves a second build: correctness never depends on it (builds are
 * published with an atomic rename that keeps the first), so a waiter that runs out of patience builds anyway.
 */
export class BuildLock {
  private released = false;

  private constructor(private readonly path: string) {}

  /**
   * Takes the lock at `path`, or returns undefined when `done()` turns true while waiting (another process built
   * it) or `waitMs` passes. A lock whose owner is a dead process on this host is taken over.
   */
  static async acquire(path: string, done: () => boolean, waitMs: number): Promise<BuildLock | undefined> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (tryCreate(path)) return new BuildLock(path);
      if (done()) return undefined;
      if (ownerIsDead(path)) {
        rmSync(path, { force: true });
        continue;
      }
      if (Date.now() >= deadline) return undefined;
      await sleep(POLL_MS);
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    rmSync(this.path, { force: true });
  }
}

/** Writes the owner beside the lock and links it into place: the lock appears atomically with its content. */
function tryCreate(path: string): boolean {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, JSON.stringify({ pid: process.pid, host: hostname() }));
  try {
    linkSync(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(tmp);
  }
}

function ownerIsDead(path: string): boolean {
  let owner: z.infer<typeof LockOwner>;
  try {
    owner = LockOwner.parse(JSON.parse(readFileSync(path, 'utf8')));
  } catch {
    return false; // gone meanwhile (the next attempt takes it) or foreign: wait for it like any other
  }
  if (owner.host !== hostname()) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
