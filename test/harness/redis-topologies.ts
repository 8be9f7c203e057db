import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A free loopback port (a race with other processes is possible but rare; a bind failure fails the start). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A redis-server child that has said it accepts connections. */
class ServerChild {
  private constructor(readonly child: ChildProcess) {}

  /** Resolves once the server logs that it is ready; rejects (and kills it) if it exits or takes longer than timeoutMs. */
  static async start(args: string[], cwd: string, timeoutMs = 20_000): Promise<ServerChild> {
    const child = spawn('redis-server', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server ${args.join(' ')} not ready in time:\n${log}`)), timeoutMs);
      const onData = (d: Buffer): void => {
        log += d.toString();
        if (/Ready to accept connections/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code}) before it was ready:\n${log}`));
      });
    });
    try {
      await ready;
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    // Its output is not needed any more, but the pipes must keep draining.
    child.stdout!.resume();
    child.stderr!.resume();
    return new ServerChild(child);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGKILL');
    await exited;
  }
}

const EPHEMERAL = ['--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'];

/** Files a test CA made: the CA, a server certificate for 127.0.0.1 and localhost, and a client certificate. */
export interface TestCertificates {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** Makes a CA and certificates signed by it with openssl (EC keys: quick), valid for a day. */
export async function makeCertificates(dir: string): Promise<TestCertificates> {
  mkdirSync(dir, { recursive: true });
  const f = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '1', '-subj', '/CN=genqueue test CA']);
  // A cluster node also presents its certificate as a client, to the other nodes' bus ports.
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    await run('openssl', ['req', '-new', ...ec, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`), '-subj', `/CN=genqueue test ${who}`]);
    await run('openssl', ['x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-out', f(`${who}.crt`), '-extfile', f(`${who}.ext`)]);
  }
  return { ca: f('ca.crt'), serverCert: f('server.crt'), serverKey: f('server.key'), clientCert: f('client.crt'), clientKey: f('client.key') };
}

export interface TestTopology {
  /** The URL genqueue is given (with the password). */
  readonly url: string;
  stop(): Promise<void>;
}

/** A redis-server that speaks only TLS (no plain port), asks clients for a certificate, and requires a password. */
export async function startTlsRedis(dir: string, certs: TestCertificates, password: string): Promise<TestTopology> {
  const port = await freePort();
  const server = await ServerChild.start(
    [
      '--port', '0',
      '--tls-port', String(port),
      '--tls-cert-file', certs.serverCert,
      '--tls-key-file', certs.serverKey,
      '--tls-ca-cert-file', certs.ca,
      '--tls-auth-clients', 'yes',
      '--requirepass', password,
      ...EPHEMERAL,
    ],
    dir,
  );
  return { url: `rediss://:${encodeURIComponent(password)}@127.0.0.1:${port}`, stop: () => server.stop() };
}

/**
 * A Redis Cluster of `masters` masters (no replicas) on loopback ports, each requiring the password, created with
 * `redis-cli --cluster create`; resolves once every node reports cluster_state:ok. With certificates, nodes speak
 * only TLS, to clients and to each other (the URL is then rediss+cluster://).
 */
export async function startRedisCluster(
  dir: string,
  password: string,
  options: { masters?: number; certs?: TestCertificates } = {},
): Promise<TestTopology & { readonly ports: number[] }> {
  const { masters = 3, certs } = options;
  const tlsArgs = certs
    ? ['--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca, '--tls-cluster', 'yes', '--tls-replication', 'yes']
    : [];
  const cliTls = certs ? ['--tls', '--cacert', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey] : [];
  const nodes: ServerChild[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    const ports: number[] = [];
    for (let i = 0; i < masters; i++) {
      const [port, bus] = [await freePort(), await freePort()];
      const nodeDir = join(dir, `node-${port}`);
      mkdirSync(nodeDir, { recursive: true });
      ports.push(port);
      nodes.push(
        await ServerChild.start(
          [
            ...(certs ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)]),
            ...tlsArgs,
            '--cluster-enabled', 'yes',
            '--cluster-port', String(bus),
            '--cluster-config-file', join(nodeDir, 'nodes.conf'),
            '--cluster-node-timeout', '5000',
            '--requirepass', password,
            '--masterauth', password,
            '--dir', nodeDir,
            ...EPHEMERAL,
          ],
          nodeDir,
        ),
      );
    }
    const env = { ...process.env, REDISCLI_AUTH: password };
    await run('redis-cli', [...cliTls, '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { env });
    const deadline = Date.now() + 30_000;
    for (const port of ports) {
      for (;;) {
        const { stdout } = await run('redis-cli', [...cliTls, '-p', String(port), 'cluster', 'info'], { env });
        if (/cluster_state:ok/.test(stdout)) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${port} not ok in time:\n${stdout}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const url = `redis${certs ? 's' : ''}+cluster://:${encodeURIComponent(password)}@${ports.map((p) => `127.0.0.1:${p}`).join(',')}`;
    return { url, ports, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
