/** Paths of the real data files committed under data/. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const HAXBY = join(ROOT, 'data/haxby2001-sub001/sub001');
export const HAXBY_MASK = join(HAXBY, 'masks/1slice/brain.nii.gz');

export function haxbyRun(run: number): { bold: string; events: string } {
  const dir = join(HAXBY, 'BOLD', `task001_run${String(run).padStart(3, '0')}`);
  return { bold: join(dir, 'bold_1slice.nii.gz'), events: join(dir, 'bold_events.tsv') };
}
