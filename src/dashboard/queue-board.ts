import type { IncomingMessage, ServerResponse } from 'node:http';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';

/** Where bull-board is mounted. */
export const BOARD_PATH = '/queues';

/**
 * bull-board (job lists by state, job detail with data, return value, failure reason and logs; retry, clean,
 * pause/resume, promote) for every genqueue queue, served from the dashboard's own HTTP server behind its
 * access checks. Queues join as the overview finds them.
 */
export class QueueBoard {
  private readonly adapter = new ExpressAdapter();
  private readonly board: ReturnType<typeof createBullBoard>;
  private readonly mounted = new Set<string>();
  /** The express app the adapter builds (typed `any` by @bull-board/express). */
  private readonly app: (req: IncomingMessage, res: ServerResponse) => void;

  constructor() {
    this.adapter.setBasePath(BOARD_PATH);
    this.board = createBullBoard({
      queues: [],
      serverAdapter: this.adapter,
      options: { uiConfig: { boardTitle: 'genqueue', miscLinks: [{ text: 'Fleet', url: '/' }], hideDocsLink: true } },
    });
    this.app = this.adapter.getRouter() as (req: IncomingMessage, res: ServerResponse) => void;
  }

  /** Adds the queues not shown yet. */
  show(queues: readonly Queue[]): void {
    for (const q of queues) {
      if (this.mounted.has(q.name)) continue;
      this.board.addQueue(new BullMQAdapter(q));
      this.mounted.add(q.name);
    }
  }

  /** Serves a request under BOARD_PATH (the board's routes are relative to it). */
  handle(req: IncomingMessage, res: ServerResponse): void {
    req.url = req.url!.slice(BOARD_PATH.length) || '/';
    this.app(req, res);
  }
}
