import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One repository the fake hub serves: one commit, named by any of its refs. */
export interface FakeRepo {
  readonly commit: string;
  readonly refs: Record<string, string>;
  /** path → contents; `lfs` files are served with X-Linked-Etag (sha256) as the hub does for LFS. */
  readonly files: Map<string, { data: Buffer; lfs: boolean }>;
  /** When set, requests must carry `Authorization: Bearer <token>`. */
  readonly token?: string;
}

export interface HubRequest {
  readonly method: string;
  readonly path: string;
  readonly range?: string;
  readonly authorization?: string;
}

/**
 * A local HTTP server with the hub's URL layout and headers, for the routes @huggingface/hub requests:
 * api/models/<id>/revision/<rev> (the commit), api/models/<id>/tree/<rev> (the file list), and
 * <id>/resolve/<rev>/<file> with ETag / X-Linked-Etag / X-Linked-Size / X-Repo-Commit and Range requests.
 */
export class FakeHub {
  readonly requests: HubRequest[] = [];
  /** The next full download of this file sends this many bytes, then waits for cutHeldDownload(). */
  cut: { path: string; bytes: number } | undefined;
  private held: ServerResponse | undefined;

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(repos: Record<string, FakeRepo>): Promise<FakeHub> {
    let hub: FakeHub | undefined;
    const server = createServer((req, res) => hub!.handle(repos, req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    hub = new FakeHub(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return hub;
  }

  /** Cuts the connection of the download held by `cut`, as a network failure would. */
  cutHeldDownload(): void {
    this.held?.socket?.destroy();
    this.held = undefined;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(repos: Record<string, FakeRepo>, req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url!, this.url);
    const path = decodeURIComponent(url.pathname);
    this.requests.push({
      method: req.method!,
      path,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    });
    const notFound = (code: string): void => {
      res.writeHead(404, { 'Content-Type': 'application/json', 'X-Error-Code': code });
      res.end(JSON.stringify({ error: code }));
    };
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(path);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const repoId = api?.[1] ?? resolve?.[1];
    const repo = repoId ? repos[repoId] : undefined;
    if (!repo) return notFound('RepoNotFound');
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      res.writeHead(401, { 'Content-Type': 'application/json', 'X-Error-Code': 'GatedRepo' });
      res.end(JSON.stringify({ error: 'Access to this model is restricted' }));
      return;
    }
    const rev = api?.[3] ?? resolve![2]!;
    const commit = rev === repo.commit ? rev : repo.refs[rev];
    if (!commit) return notFound('RevisionNotFound');
    if (api?.[2] === 'revision') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ _id: createHash('sha1').update(repoId!).digest('hex').slice(0, 24), id: repoId, sha: commit, private: Boolean(repo.token) }));
      return;
    }
    if (api?.[2] === 'tree') {
      const entries = [...repo.files].map(([p, f]) => ({
        type: 'file',
        oid: gitOid(f.lfs ? pointer(f.data) : f.data),
        size: f.lfs ? pointer(f.data).length : f.data.length,
        path: p,
        ...(f.lfs ? { lfs: { oid: sha256(f.data), size: f.data.length, pointerSize: pointer(f.data).length } } : {}),
      }));
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(entries));
      return;
    }
    const file = repo.files.get(resolve![3]!);
    if (!file) return notFound('EntryNotFound');
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: `"${file.lfs ? gitOid(pointer(file.data)) : gitOid(file.data)}"`,
      'X-Repo-Commit': commit,
      ...(file.lfs ? { 'X-Linked-Etag': `"${sha256(file.data)}"`, 'X-Linked-Size': String(file.data.length) } : {}),
    };
    const size = file.data.length;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Length': String(end - start + 1) });
      res.end(file.data.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(size) });
    if (this.cut && this.cut.path === resolve![3]) {
      const { bytes } = this.cut;
      this.cut = undefined;
      res.write(file.data.subarray(0, bytes));
      this.held = res;
      return;
    }
    res.end(file.data);
  }
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const gitOid = (data: Buffer): string => createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
const pointer = (data: Buffer): Buffer =>
  Buffer.from(`version lfs-pointer\noid sha256:${sha256(data)}\nsize ${data.length}\n`);
