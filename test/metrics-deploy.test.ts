import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { DashboardMetrics } from '../src/dashboard/dashboard-metrics.js';
import { WorkerMetrics } from '../src/worker/worker-metrics.js';

/** Docker cannot run here: the deployment files are checked by parsing them and reading what they say. */
const deploy = (name: string): string => readFileSync(fileURLToPath(new URL(`../../deploy/${name}`, import.meta.url)), 'utf8');

interface Service {
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  healthcheck?: { test: string[] };
  profiles?: string[];
  deploy?: { resources: { reservations: { devices: { driver: string; device_ids: string[]; capabilities: string[] }[] } } };
}

describe('deploy/', () => {
  const compose = parse(deploy('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };
  const services = compose.services;

  it('docker-compose.yml: Redis with AOF and a password, published on loopback only', () => {
    const redis = services.redis!;
    const cmd = redis.command!.join(' ');
    assert.match(cmd, /--appendonly yes/);
    assert.match(cmd, /--requirepass \$\{REDIS_PASSWORD:\?/);
    assert.deepEqual(redis.ports, ['127.0.0.1:6379:6379']);
    assert.ok(redis.healthcheck);
  });

  it('docker-compose.yml: one worker per GPU with its device reserved and a /healthz check; nothing published beyond the host', () => {
    const workers = Object.entries(services).filter(([name]) => name.startsWith('worker-gpu'));
    assert.ok(workers.length >= 2);
    for (const [name, w] of workers) {
      const gpu = name.slice('worker-gpu'.length);
      assert.equal(w.environment!.GENQUEUE_DEVICE, `cuda:${gpu}`, name);
      assert.match(w.environment!.REDIS_URL!, /^redis:\/\/:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379$/, name);
      assert.equal(w.environment!.GENQUEUE_METRICS_PORT, '9464');
      assert.deepEqual(w.deploy!.resources.reservations.devices, [{ driver: 'nvidia', device_ids: [gpu], capabilities: ['gpu'] }], name);
      assert.match(w.healthcheck!.test.join(' '), /9464\/healthz/, name);
    }
    const dashboard = services.dashboard!;
    assert.deepEqual(dashboard.command!.slice(-5), ['dashboard', '--host', '0.0.0.0', '--port', '8080']);
    assert.match(dashboard.environment!.DASHBOARD_PASSWORD!, /\$\{DASHBOARD_PASSWORD:\?/);
    assert.match(dashboard.healthcheck!.test.join(' '), /8080\/healthz/);
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) assert.match(p, /^127\.0\.0\.1:/, `${name} publishes ${p} beyond the host`);
    }
  });

  it('prometheus.yml scrapes the workers and, with basic auth, the dashboard', () => {
    const prom = parse(deploy('prometheus.yml')) as { scrape_configs: { job_name: string; basic_auth?: object; static_configs: { targets: string[] }[] }[] };
    const jobs = Object.fromEntries(prom.scrape_configs.map((j) => [j.job_name, j]));
    assert.deepEqual(jobs['genqueue-workers']!.static_configs[0]!.targets, ['worker-gpu0:9464', 'worker-gpu1:9464']);
    assert.ok(jobs['genqueue-dashboard']!.basic_auth);
    assert.match(services.dashboard!.environment!.DASHBOARD_ALLOWED_HOSTS!, /dashboard/, 'Prometheus sends Host: dashboard:8080');
  });

  it('grafana-dashboard.json is valid and every panel queries metrics genqueue exports', async () => {
    const dashboard = JSON.parse(deploy('grafana-dashboard.json')) as { panels: { id: number; title: string; targets: { expr: string }[] }[] };
    const exported = new Set<string>();
    for (const registry of [new WorkerMetrics({ worker: 'w', model: 'm', device: 'cpu' }).registry, new DashboardMetrics().registry]) {
      for (const m of await registry.getMetricsAsJSON()) {
        exported.add(m.name);
        if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
      }
    }
    assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique');
    for (const panel of dashboard.panels) {
      assert.ok(panel.targets.length > 0, panel.title);
      for (const { expr } of panel.targets) {
        const names = expr.match(/\b(genqueue|process)_[a-z_]+\b/g) ?? [];
        assert.ok(names.length > 0, `${panel.title}: ${expr}`);
        for (const n of names) assert.ok(exported.has(n), `${panel.title}: ${n} is not exported`);
      }
    }
  });

  it('genqueue-worker@.service runs one worker per GPU instance and stops it with SIGTERM', () => {
    const unit = deploy('genqueue-worker@.service');
    for (const section of ['[Unit]', '[Service]', '[Install]']) assert.ok(unit.includes(section), section);
    assert.match(unit, /^Environment=GENQUEUE_DEVICE=cuda:%i$/m);
    assert.match(unit, /^ExecStart=.*dist\/src\/cli\/main\.js worker --metrics-port \$\(\(9464 \+ %i\)\)'$/m);
    assert.match(unit, /^KillSignal=SIGTERM$/m);
  });
});
