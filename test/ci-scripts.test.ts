import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const exec = promisify(execFile);

async function bash(args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    // SHLVL: bash reads ~/.bashrc when its stdin is a socket (as node's pipes are) at the first shell level.
    const { stdout, stderr } = await exec('/bin/bash', args, { env: { SHLVL: '1', ...env }, cwd });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** A PATH of stubs: each logs its argv (and DEBIAN_FRONTEND) to $STUB_LOG; real tools only where named. */
function stubPath(dir: string, uid: number, real: string[]): string {
  mkdirSync(dir, { recursive: true });
  const stub = (name: string, body: string): void => {
    writeFileSync(join(dir, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  const log = (name: string): string => `echo "${name} $* [DEBIAN_FRONTEND=\${DEBIAN_FRONTEND:-}]" >> "$STUB_LOG"`;
  stub('id', `[ "$1" = -u ] && echo ${uid} || echo tester`);
  stub('apt-get', log('apt-get'));
  stub('npm', log('npm') + '\necho "GENQUEUE_REQUIRE_NATIVE=${GENQUEUE_REQUIRE_NATIVE:-}" >> "$STUB_LOG"');
  // Like sudo, it takes leading VAR=value words as assignments.
  stub('sudo', `echo "sudo $1" >> "$STUB_LOG"\nexec env "$@"`);
  for (const tool of real) symlinkSync(`/usr/bin/${tool}`, join(dir, tool));
  return dir;
}

describe('CI scripts on a fresh machine', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'genqueue-ci-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('.ci/run and native/build.sh parse (bash -n)', async () => {
    for (const script of ['.ci/run', 'native/build.sh']) {
      const r = await bash(['-n', script], process.env);
      assert.equal(r.code, 0, `${script}: ${r.stderr}`);
    }
  });

  for (const [who, uid] of [
    ['root without sudo', 0],
    ['a sudo user', 1000],
  ] as const) {
    it(`.ci/run installs redis-server, openssl, g++ and chromium as ${who}, then runs the suite`, async () => {
      // None of them is on this PATH, so every install line runs (against the apt-get stub).
      const path = stubPath(join(dir, `bin-${uid}`), uid, ['dirname', 'env']);
      const logFile = join(dir, `log-${uid}`);
      const r = await bash(['.ci/run'], { PATH: path, STUB_LOG: logFile, HOME: dir });
      assert.equal(r.code, 0, r.stderr);
      const log = readFileSync(logFile, 'utf8').trim().split('\n');
      assert.equal(log.filter((l) => l.startsWith('sudo ')).length, uid === 0 ? 0 : 8, 'sudo exactly for the apt-get lines of a user');
      const install = (pkg: string): string[] => ['apt-get update -qq [DEBIAN_FRONTEND=]', `apt-get install -y -qq ${pkg} [DEBIAN_FRONTEND=noninteractive]`];
      assert.deepEqual(log.filter((l) => !l.startsWith('sudo ')), [
        ...install('redis-server'),
        ...install('openssl'),
        ...install('g++'),
        ...install('--no-install-recommends chromium fonts-liberation'),
        'npm ci --no-audit --no-fund [DEBIAN_FRONTEND=]',
        'GENQUEUE_REQUIRE_NATIVE=',
        'npm run build:native [DEBIAN_FRONTEND=]',
        'GENQUEUE_REQUIRE_NATIVE=',
        'npm test [DEBIAN_FRONTEND=]',
        'GENQUEUE_REQUIRE_NATIVE=1',
      ]);
    });
  }

  it('native/build.sh names no mirror: it takes the one of the machine’s own apt sources', () => {
    assert.doesNotMatch(readFileSync(join(ROOT, 'native/build.sh'), 'utf8'), /[a-z]+:\/\//);
  });

  /** A fake root with os-release and apt sources; prints what debian_mirror finds there (or its error). */
  async function mirrorOf(name: string, files: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
    const root = join(dir, name);
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    // Only what debian_mirror needs is on PATH, so nothing else of the script can run by accident.
    const path = stubPath(join(dir, `bin-${name}`), 0, ['awk', 'dirname']);
    return bash(['-c', `source "${join(ROOT, 'native/build.sh')}" && debian_mirror "$1"`, 'test', root], { PATH: path }, dir);
  }

  const bookworm = { 'etc/os-release': 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n' };

  it('debian_mirror reads deb822 sources: the stanza serving the release, not -security or third-party ones', async () => {
    const r = await mirrorOf('deb822', {
      ...bookworm,
      'etc/apt/sources.list.d/other.sources': 'Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n',
      'etc/apt/sources.list.d/debian.sources': [
        'Types: deb',
        'URIs: http://security.example/debian-security',
        'Suites: bookworm-security',
        'Components: main',
        '',
        'Types: deb deb-src',
        'Enabled: no',
        'URIs: http://disabled.example/debian',
        'Suites: bookworm',
        '',
        'Types: deb',
        '# a comment line',
        'URIs: http://mirror.example/debian/',
        'Suites: bookworm bookworm-updates',
        'Components: main',
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
      ].join('\n'),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'http://mirror.example/debian');
  });

  it('debian_mirror reads one-line sources.list entries, options in brackets included', async () => {
    const r = await mirrorOf('one-line', {
      ...bookworm,
      'etc/apt/sources.list': [
        '# deb http://commented.example/debian bookworm main',
        'deb http://security.example/debian-security bookworm-security main',
        'deb-src http://src.example/debian bookworm main',
        'deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main',
      ].join('\n'),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'http://mirror.example/debian');
  });

  it('debian_mirror without a source for the release fails with a message naming the override', async () => {
    const r = await mirrorOf('none', { ...bookworm, 'etc/apt/sources.list': 'deb http://vendor.example/apt stable main\n' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no apt source for Debian bookworm .*GENQUEUE_DEBIAN_MIRROR/);
  });
});
