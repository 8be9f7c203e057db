import type { ArchitectureBuilder } from './decoder-graph.js';
import { gpt2Architecture } from './gpt2.js';

const BUILDERS: readonly ArchitectureBuilder[] = [gpt2Architecture];

/** Picks the graph builder for a checkpoint's model_type; new architectures register here. */
export function architectureFor(modelType: string): ArchitectureBuilder {
  const builder = BUILDERS.find((b) => b.modelTypes.includes(modelType));
  if (!builder) {
    const known = BUILDERS.flatMap((b) => b.modelTypes).join(', ');
    throw new Error(`model_type "${modelType}" is not supported yet (supported: ${known})`);
  }
  return builder;
}
