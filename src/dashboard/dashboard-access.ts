import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';

/** The dashboard's settings cannot be served safely (refused at start). */
export class DashboardConfigError extends Error {
  override name = 'DashboardConfigError';
}

export interface DashboardCredentials {
  readonly user: string;
  readonly password: string;
}

export interface DashboardAccessOptions {
  /** The address the server binds. */
  readonly host: string;
  /** Basic-auth credentials (DASHBOARD_USER / DASHBOARD_PASSWORD); required unless bound to loopback. */
  readonly credentials?: DashboardCredentials;
  /** Further names the dashboard is reached by (a DNS name, a reverse proxy's host). */
  readonly allowedHosts?: readonly string[];
}

/** The double-submit token: a cookie the page's scripts read and echo in a header on every action. */
export const CSRF_COOKIE = 'XSRF-TOKEN';
/** bull-board's UI (axios) echoes a cookie of that name in this header by itself, on same-origin requests. */
export const CSRF_HEADER = 'x-xsrf-token';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];
const WILDCARDS = ['0.0.0.0', '::', ''];

export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

/** Reads DASHBOARD_USER and DASHBOARD_PASSWORD; both or neither. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv): DashboardCredentials | undefined {
  const user = env.DASHBOARD_USER ?? '';
  const password = env.DASHBOARD_PASSWORD ?? '';
  if (!user && !password) return undefined;
  if (!user || !password) throw new DashboardConfigError('set both DASHBOARD_USER and DASHBOARD_PASSWORD, or neither');
  if (user.includes(':')) throw new DashboardConfigError('DASHBOARD_USER cannot contain ":" (basic auth separates user and password with it)');
  return { user, password };
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
/** Equal strings, compared in time independent of where they differ. */
const same = (a: string, b: string): boolean => timingSafeEqual(digest(a), digest(b));

/** The host name of a Host header or an Origin's authority, lower case, without port or IPv6 brackets. */
function hostName(authority: string): string {
  const a = authority.trim().toLowerCase();
  if (a.startsWith('[')) return a.slice(1, a.indexOf(']'));
  const colon = a.lastIndexOf(':');
  return colon >= 0 && a.indexOf(':') === colon ? a.slice(0, colon) : a;
}

function cookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Who may use the dashboard, checked on every request before anything else:
 * - Host: only the bound address, the configured names and (bound to loopback) the loopback names, or (bound
 *   to every interface) this machine's addresses and host name. A page on another site whose name was rebound
 *   to this address sends its own name as Host, so DNS rebinding gets 403.
 * - Basic auth when credentials are set (401 with a challenge otherwise); /healthz answers without them.
 * - Actions (any method but GET/HEAD/OPTIONS, genqueue's and bull-board's alike) must echo the XSRF-TOKEN
 *   cookie in an X-XSRF-TOKEN header (double submit: another site can neither read the cookie nor set the
 *   header), and an Origin header, where the browser sends one, must be this dashboard's own.
 */
export class DashboardAccess {
  private readonly allowedHosts: Set<string>;

  constructor(private readonly options: DashboardAccessOptions) {
    if (!options.credentials && !isLoopback(options.host)) {
      throw new DashboardConfigError(
        `refusing to serve on ${options.host || 'every interface'} without credentials: set DASHBOARD_USER and DASHBOARD_PASSWORD, or bind 127.0.0.1`,
      );
    }
    const names = [...(options.allowedHosts ?? []), options.host];
    if (isLoopback(options.host)) names.push(...LOOPBACK_NAMES);
    if (WILDCARDS.includes(options.host)) {
      names.push(...LOOPBACK_NAMES, hostname());
      for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) names.push(a.address);
    }
    this.allowedHosts = new Set(names.filter((n) => !WILDCARDS.includes(n)).map(hostName));
  }

  /** Answers the request itself (403/401) and returns false when it may not go further. */
  admit(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const host = req.headers.host;
    if (!host || !this.allowedHosts.has(hostName(host))) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`host not allowed: ${host ?? '(none)'} (add it with --allowed-hosts)\n`);
      return false;
    }
    if (path === '/healthz') return true;
    if (this.options.credentials && !this.authorized(req.headers.authorization)) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="genqueue", charset="UTF-8"', 'content-type': 'text/plain' }).end('authentication required\n');
      return false;
    }
    const method = req.method ?? 'GET';
    if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') {
      if (!cookie(req, CSRF_COOKIE)) {
        res.setHeader('set-cookie', `${CSRF_COOKIE}=${randomBytes(24).toString('hex')}; Path=/; SameSite=Strict`);
      }
      return true;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !this.sameOrigin(origin, host)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`cross-origin request refused (Origin ${origin})\n`);
      return false;
    }
    const token = cookie(req, CSRF_COOKIE);
    const echoed = req.headers[CSRF_HEADER];
    if (!token || typeof echoed !== 'string' || !same(token, echoed)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`missing or wrong ${CSRF_HEADER} header (it must echo the ${CSRF_COOKIE} cookie)\n`);
      return false;
    }
    return true;
  }

  private authorized(header: string | undefined): boolean {
    const { user, password } = this.options.credentials!;
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
    if (!m) return false;
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    // Both halves always compared, so the time taken does not tell which one was wrong.
    const userOk = same(decoded.slice(0, colon), user);
    const passwordOk = same(decoded.slice(colon + 1), password);
    return userOk && passwordOk;
  }

  private sameOrigin(origin: string, host: string): boolean {
    try {
      return new URL(origin).host === host.toLowerCase();
    } catch {
      return false;
    }
  }
}
