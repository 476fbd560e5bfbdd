/** Helpers for tests that compare against Debian's Python packages (/usr/bin/python3). */
import { spawnSync } from 'node:child_process';

export const PYTHON = '/usr/bin/python3';

/** Returns undefined when every module imports, else a reason to skip the test. */
export function pythonSkipReason(modules: string[]): string | undefined {
  const r = spawnSync(PYTHON, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
  if (r.error) return `${PYTHON} not found: run sh scripts/setup.sh`;
  if (r.status !== 0) return `${PYTHON} lacks ${modules.join(', ')}: run sh scripts/setup.sh (${r.stderr.trim().split('\n').pop()})`;
  return undefined;
}

export function runPython(args: string[], timeoutMs = 120_000): string {
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${PYTHON} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}
