import { Worker } from 'node:worker_threads';

/**
 * Starts a worker thread that hosts an engine and waits for its `{ type: 'ready', ... }` message (resolved with
 * it); `{ type: 'warning', message }` goes to onWarning meanwhile. It rejects, and ends the thread, when the
 * thread sends `{ type: 'failed', message }`, errors, or exits before it is ready. `what` names the thread in
 * those errors ("generator thread", "slot thread").
 */
export function startEngineThread<Ready extends { type: 'ready' }>(
  entry: URL,
  workerData: unknown,
  what: string,
  onWarning?: (message: string) => void,
): Promise<{ thread: Worker; ready: Ready }> {
  return new Promise((resolve, reject) => {
    const thread = new Worker(entry, { workerData });
    const settle = (error?: Error): void => {
      thread.off('message', onMessage);
      thread.off('error', onError);
      thread.off('exit', onExit);
      if (error) {
        thread.on('error', () => undefined); // whatever else it reports while it ends
        void thread.terminate();
        reject(error);
      }
    };
    const onMessage = (msg: { type: string; message?: string }): void => {
      if (msg.type === 'warning') onWarning?.(msg.message ?? '');
      else if (msg.type === 'ready') {
        settle();
        resolve({ thread, ready: msg as Ready });
      } else if (msg.type === 'failed') settle(new Error(msg.message));
    };
    const onError = (e: Error): void => settle(e);
    const onExit = (code: number): void => settle(new Error(`${what} exited with code ${code} before it was ready`));
    thread.on('message', onMessage);
    thread.on('error', onError);
    thread.on('exit', onExit);
  });
}

/**
 * A fresh engine thread after a crash, started once however many callers ask while it starts. A thread that comes
 * up after its owner closed is ended and the callers get closedError(); otherwise attach() takes it first.
 */
export class ThreadRespawn {
  private starting: Promise<Worker> | undefined;

  constructor(
    private readonly spawn: () => Promise<Worker>,
    private readonly isClosed: () => boolean,
    private readonly closedError: () => Error,
    private readonly attach: (thread: Worker) => void,
  ) {}

  get(): Promise<Worker> {
    this.starting ??= this.spawn()
      .then((thread) => {
        if (this.isClosed()) {
          void thread.terminate();
          throw this.closedError();
        }
        this.attach(thread);
        return thread;
      })
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  /** A thread still starting, settled whatever becomes of it (nothing when none is). */
  settled(): Promise<unknown> | undefined {
    return this.starting?.catch(() => undefined);
  }
}
