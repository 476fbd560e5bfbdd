/**
 * Checks that a path given by a client, a manifest or a watched folder stays inside the folder it
 * belongs to. Used by the model loader (src/decode/manifest.ts) and meant for the folder watcher.
 */
import { lstatSync, realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';

/** True when `path` (relative paths resolve against `dir`) is `dir` itself or lies below it, textually. */
export function isInsideDir(dir: string, path: string): boolean {
  const rel = relative(resolve(dir), resolve(dir, path));
  return !rel.startsWith('..') && !isAbsolute(rel);
}

/**
 * Returns the real path of the link's target when `file` is a symbolic link whose target
 * resolves outside `dir` (after following every link), else undefined. A broken link
 * counts as outside. Errors other than a missing file are thrown.
 */
export function symlinkTargetOutside(file: string, dir: string): string | undefined {
  if (!lstatSync(file).isSymbolicLink()) return undefined;
  let target: string;
  try {
    target = realpathSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '(broken link)';
    throw err;
  }
  return isInsideDir(realpathSync(dir), target) ? undefined : target;
}
