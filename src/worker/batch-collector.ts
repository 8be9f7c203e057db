export interface BatchCollectorOptions<T, R> {
  /** Most items one batch carries. */
  readonly maxBatch: number;
  /** How long the oldest waiting item may wait for company while the runner is idle. */
  readonly maxWaitMs: number;
  /**
   * Runs one batch; returns one outcome per item, in order (an Error fails only that item). The runner may call
   * `release` once the device is free and only host-side work is left (decoding text): the next batch then
   * starts while this one's outcomes are prepared. Without that call the runner is released at the end.
   */
  readonly run: (items: T[], release: () => void) => Promise<(R | Error)[]>;
  /**
   * Asked before a partial batch runs: true when more items are on their way (jobs waiting in Redis that the
   * consumer has not taken yet). A run costs about the same for 1 row as for 256 on a GPU, so the batch then
   * waits another maxWaitMs, up to holdLimitMs in all.
   */
  readonly moreComing?: () => Promise<boolean>;
  /** Longest a partial batch is held for moreComing (default 1000 ms). */
  readonly holdLimitMs?: number;
}

interface Waiting<T, R> {
  readonly item: T;
  readonly since: number;
  readonly resolve: (r: R) => void;
  readonly reject: (e: Error) => void;
}

/**
 * Groups submitted items by a compatibility key into batches for one serial runner (one GPU session).
 * A group runs when it is full, or when its oldest item has waited maxWaitMs and the runner is free; while
 * a batch runs, new items keep collecting, so the next batch is ready the moment the runner frees up.
 */
export class BatchCollector<T, R> {
  private readonly groups = new Map<string, Waiting<T, R>[]>();
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: BatchCollectorOptions<T, R>) {}

  submit(key: string, item: T): Promise<R> {
    if (this.closed) return Promise.reject(new Error('batch collector is closed'));
    return new Promise<R>((resolve, reject) => {
      const group = this.groups.get(key) ?? [];
      group.push({ item, since: Date.now(), resolve, reject });
      this.groups.set(key, group);
      this.schedule();
    });
  }

  /** Items waiting (not yet in a running batch). */
  get waiting(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.length;
    return n;
  }

  /** Rejects everything still waiting; a running batch finishes. */
  close(reason = 'worker is shutting down'): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const g of this.groups.values()) for (const w of g) w.reject(new Error(reason));
    this.groups.clear();
  }

  private asking = false;

  private schedule(): void {
    if (this.running || this.asking) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const now = Date.now();
    let pick: string | undefined;
    let pickSince = Infinity;
    let nextDeadline = Infinity;
    for (const [key, group] of this.groups) {
      const oldest = group[0]!.since;
      const due = group.length >= this.options.maxBatch || now - oldest >= this.options.maxWaitMs;
      if (due && oldest < pickSince) {
        pick = key;
        pickSince = oldest;
      }
      nextDeadline = Math.min(nextDeadline, oldest + this.options.maxWaitMs);
    }
    if (pick !== undefined) {
      const group = this.groups.get(pick)!;
      const holdLimit = this.options.holdLimitMs ?? 1000;
      if (group.length < this.options.maxBatch && this.options.moreComing && now - pickSince < holdLimit) {
        this.holdOrRun(pick, pickSince + holdLimit - now);
        return;
      }
      void this.runGroup(pick);
      return;
    }
    if (nextDeadline < Infinity) this.timer = setTimeout(() => this.schedule(), Math.max(0, nextDeadline - now));
  }

  /** A partial batch is due: run it now, unless more items are on their way (then look again shortly). */
  private holdOrRun(key: string, holdLeftMs: number): void {
    this.asking = true;
    this.options.moreComing!()
      .catch(() => false) // when in doubt, run: a lost answer must not stall the batch
      .then((more) => {
        this.asking = false;
        if (this.running || !this.groups.has(key)) return this.schedule();
        if (!more) return void this.runGroup(key);
        this.timer = setTimeout(() => this.schedule(), Math.min(this.options.maxWaitMs || 10, holdLeftMs));
      });
  }

  private async runGroup(key: string): Promise<void> {
    const group = this.groups.get(key)!;
    const batch = group.splice(0, this.options.maxBatch);
    if (group.length === 0) this.groups.delete(key);
    this.running = true;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.running = false;
      this.schedule();
    };
    try {
      const outcomes = await this.options.run(
        batch.map((w) => w.item),
        release,
      );
      batch.forEach((w, i) => {
        const o = outcomes[i];
        if (o === undefined) w.reject(new Error('batch runner returned no outcome for this item'));
        else if (o instanceof Error) w.reject(o);
        else w.resolve(o);
      });
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      for (const w of batch) w.reject(err);
    } finally {
      release();
    }
  }
}
