import type { GenqueueConfig } from '../config/config-schema.js';
import { loadConfig } from '../config/load-config.js';

/** What every library entry point takes to find its settings. */
export interface ConfigOptions {
  /**
   * A loaded config, or the path of a config file. Default: `loadConfig()` (embedded defaults ← the file named
   * by GENQUEUE_CONFIG ← environment), as the CLI does.
   */
  readonly config?: GenqueueConfig | string;
  /** Where built models are cached (overrides the config's cacheDir). */
  readonly cacheDir?: string;
}

export function configFrom(options: ConfigOptions): GenqueueConfig {
  const config = typeof options.config === 'object' ? options.config : loadConfig({ file: options.config });
  return options.cacheDir === undefined ? config : { ...config, cacheDir: options.cacheDir };
}
