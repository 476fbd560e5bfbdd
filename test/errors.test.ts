import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MindeyeError, oneLineMessage } from '../src/errors.ts';

describe('oneLineMessage', () => {
  it('joins details after the summary sentence', () => {
    const err = new MindeyeError('NIFTI_HEADER_INVALID', 'Not a NIfTI-1 or NIfTI-2 file.', {
      file: '/data/vol_0006.nii', field: 'magic', value: 'xx1', fix: 'check the path',
    });
    const line = oneLineMessage(err.message);
    assert.equal(line, 'Not a NIfTI-1 or NIfTI-2 file. file: /data/vol_0006.nii; field: magic; value: "xx1"; fix: check the path');
    assert.doesNotMatch(line, /\.;/);
  });

  it('ends a summary without a period', () => {
    const err = new MindeyeError('CLI_USAGE', 'Invalid option', { field: '--tr' });
    assert.equal(oneLineMessage(err.message), 'Invalid option. field: --tr');
  });

  it('keeps a one-line message unchanged', () => {
    assert.equal(oneLineMessage('volume 3 arrived late; dropped'), 'volume 3 arrived late; dropped');
    assert.equal(oneLineMessage(''), '');
  });
});
