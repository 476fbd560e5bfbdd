// `watch` reads only files inside --dir: a symbolic link whose target lies outside the folder
// is reported and skipped, while the other volumes go on in order (docs/limits.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAXBY_MASK, ROOT } from '../helpers/data.ts';

const VOLUME = join(ROOT, 'test/fixtures/bad-input/good-volume.nii');

test('watch skips a link out of the folder', () => {
  const root = mkdtempSync(join(tmpdir(), 'watch-link-'));
  const exportDir = join(root, 'export');
  mkdirSync(exportDir);
  mkdirSync(join(root, 'outside'));
  copyFileSync(VOLUME, join(root, 'outside', 'private.nii'));
  copyFileSync(VOLUME, join(exportDir, 'vol_0000.nii'));
  symlinkSync(join(root, 'outside', 'private.nii'), join(exportDir, 'vol_0001.nii'));
  copyFileSync(VOLUME, join(exportDir, 'vol_0002.nii'));
  const report = join(root, 'report.json');
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/mindeye-rt.js'), 'watch', '--dir', exportDir, '--format', 'nifti', '--include-existing',
    '--expected-volumes', '3', '--tr', '2.5', '--mask', HAXBY_MASK, '--motion', 'off', '--gap-timeout-ms', '300',
    '--no-dashboard', '--report', report, '--record-to', join(root, 'record')], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MINDEYE_LOG_LEVEL: 'error' } });
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(readFileSync(report, 'utf8')).summary;
  assert.equal(summary.volumesProcessed, 2, 'the linked file is not read');
  assert.ok((summary.problems as string[]).some((p) => /vol_0001\.nii/.test(p) && /outside the watched folder/.test(p)), JSON.stringify(summary.problems));
});
