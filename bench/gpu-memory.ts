import { execFileSync } from 'node:child_process';

/** The GPU's name from nvidia-smi, or undefined where there is none. */
export function gpuName(): string | undefined {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' }).trim().split('\n')[0];
  } catch {
    return undefined;
  }
}

/** GPU memory (MiB) held by each process, from nvidia-smi; empty where there is no GPU. */
export function gpuMemoryByPid(): Map<number, number> {
  const out = new Map<number, number>();
  try {
    const text = execFileSync('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'], { encoding: 'utf8' });
    for (const line of text.trim().split('\n')) {
      const [pid, mib] = line.split(',').map((x) => Number(x.trim()));
      if (Number.isFinite(pid) && Number.isFinite(mib)) out.set(pid!, mib!);
    }
  } catch {
    // no nvidia-smi: CPU machine
  }
  return out;
}

export function gpuMemoryOf(pid: number = process.pid): number | undefined {
  return gpuMemoryByPid().get(pid);
}
