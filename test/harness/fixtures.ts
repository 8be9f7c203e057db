import { fileURLToPath } from 'node:url';

/** Fixtures live in test/fixtures (the compiled tests run from dist/test, so resolve from the source tree). */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url));
}
