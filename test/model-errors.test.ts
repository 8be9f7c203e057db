import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildModel } from '../src/model/model-builder.js';
import { fixturePath } from './harness/fixtures.js';

/** A copy of a fixture with its config.json edited. */
function withConfig(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'genqueue-bad-')), name);
  cpSync(fixturePath(name), dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

describe('the builder refuses bad checkpoints with the reason', () => {
  const made: string[] = [];
  const build = (dir: string): unknown => {
    made.push(dir);
    const out = mkdtempSync(join(tmpdir(), 'genqueue-bad-out-'));
    made.push(out);
    return buildModel(dir, out, { precision: 'fp32' });
  };
  after(() => {
    for (const d of made) rmSync(d, { recursive: true, force: true });
  });

  it('an unsupported model_type names itself and the supported list', () => {
    const dir = withConfig('mistral-tiny', (c) => (c.model_type = 'falcon'));
    assert.throws(() => build(dir), { name: 'UnsupportedModelError', message: /model_type "falcon" is not supported \(supported: gpt2, llama, mistral, qwen2\)/ });
  });

  it('a config missing a required field names the field', () => {
    const dir = withConfig('mistral-tiny', (c) => delete c.num_hidden_layers);
    assert.throws(() => build(dir), { name: 'ModelConfigError', message: /config\.json: num_hidden_layers: required field is missing/ });
  });

  it('an unsupported rope type and activation are named', () => {
    assert.throws(() => build(withConfig('mistral-tiny', (c) => (c.rope_parameters = { rope_type: 'yarn', rope_theta: 10000, factor: 2 }))), /rope_parameters\.rope_type "yarn" is not supported/);
    assert.throws(() => build(withConfig('mistral-tiny', (c) => (c.hidden_act = 'gelu'))), /hidden_act: only "silu"/);
  });

  it('reads transformers 4 configs (top-level rope_theta, rope_scaling) as transformers 5 ones', () => {
    const dir = withConfig('llama-linear-tiny', (c) => {
      const p = c.rope_parameters as Record<string, unknown>;
      delete c.rope_parameters;
      c.rope_theta = p.rope_theta;
      c.rope_scaling = { type: 'linear', factor: p.factor };
    });
    const out = build(dir) as { spec: { rope: unknown } };
    assert.deepEqual(out.spec.rope, { type: 'linear', theta: 10000, dim: 8, factor: 2 });
  });

  it('tensors that do not match the config name the tensor and both shapes', () => {
    const dir = withConfig('mistral-tiny', (c) => (c.intermediate_size = 96));
    assert.throws(() => build(dir), { name: 'TensorShapeError', message: /tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[64, 32\], expected \[96, 32\]/ });
  });
});
