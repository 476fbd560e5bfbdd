import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportCheckpoint, run as runExport } from '../../src/cli/export.ts';
import { MindeyeError } from '../../src/errors.ts';
import { loadManifest } from '../../src/decode/manifest.ts';
import { checkHeadShapes, createSession, loadHead, ort } from '../../src/decode/ort.ts';
import { makeCheckpoint, makeExportedModel, maxAbsDiff, type Fixture } from './export-fixture.ts';

function isError(code: string, ...fragments: string[]) {
  return (err: unknown) => {
    assert.ok(err instanceof MindeyeError, `expected a MindeyeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const fragment of fragments) assert.ok(err.message.includes(fragment), `message lacks "${fragment}":\n${err.message}`);
    return true;
  };
}

describe('export command and model loading guards', () => {
  let fixture: Fixture;
  const scratch = mkdtempSync(join(tmpdir(), 'mindeye-export-guards-'));

  before(async () => {
    fixture = await makeExportedModel(['--voxels', '120', '--hidden', '32', '--tokens', '3', '--clip', '16', '--sampling', 'ddim:5:1']);
  });

  after(() => {
    rmSync(scratch, { recursive: true, force: true });
    if (fixture) rmSync(fixture.dir, { recursive: true, force: true });
  });

  test('unexpected checkpoint key names the key and shape', async () => {
    const bad = makeCheckpoint(['--voxels', '120', '--hidden', '32', '--tokens', '3', '--clip', '16', '--sampling', 'ddim:5:1',
      '--extra-key', 'net.extra_adapter.weight']);
    try {
      await assert.rejects(
        exportCheckpoint({ checkpoint: bad.checkpoint, arch: 'mindeye1', subject: 1, out: join(bad.dir, 'model'), width: 32 }),
        isError('MODEL_SHAPE_MISMATCH', 'net.extra_adapter.weight', '[3, 4]', 'fix:'),
      );
    } finally {
      rmSync(bad.dir, { recursive: true, force: true });
    }
  });

  test('wrong architecture reports missing keys', async () => {
    await assert.rejects(
      exportCheckpoint({ checkpoint: fixture.checkpoint, arch: 'mindeye2', subject: 1, out: join(scratch, 'me2'), width: 32 }),
      isError('MODEL_SHAPE_MISMATCH', 'ridge.linears.0.weight', '--arch'),
    );
  });

  test('reduced checkpoint without --width is rejected', async () => {
    await assert.rejects(
      exportCheckpoint({ checkpoint: fixture.checkpoint, arch: 'mindeye1', subject: 1, out: join(scratch, 'full') }),
      isError('MODEL_SHAPE_MISMATCH', 'hidden width', '--width 32'),
    );
  });

  test('missing checkpoint file is reported', async () => {
    await assert.rejects(
      exportCheckpoint({ checkpoint: join(scratch, 'nope.pth'), arch: 'mindeye1', subject: 1, out: join(scratch, 'x'), width: 32 }),
      isError('MODEL_FILE_MISSING', 'nope.pth'),
    );
  });

  test('file that is not a checkpoint is reported', async () => {
    const file = join(scratch, 'notes.pth');
    writeFileSync(file, 'not a torch file');
    await assert.rejects(
      exportCheckpoint({ checkpoint: file, arch: 'mindeye1', subject: 1, out: join(scratch, 'y'), width: 32 }),
      isError('MODEL_MANIFEST_INVALID', 'torch.load', 'notes.pth'),
    );
  });

  test('python without torch names the apt packages', async () => {
    const python = join(scratch, 'python-without-site');
    // -S skips site-packages, where Debian's python3-torch lives, so torch cannot be imported.
    writeFileSync(python, '#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n');
    chmodSync(python, 0o755);
    await assert.rejects(
      exportCheckpoint({ checkpoint: fixture.checkpoint, arch: 'mindeye1', subject: 1, out: join(scratch, 'z'), width: 32, python }),
      isError('DEVICE_UNAVAILABLE', 'apt-get install python3-torch python3-onnx'),
    );
  });

  test('command line rejects invalid flags', async () => {
    await assert.rejects(runExport(['--checkpoint', 'a.pth', '--arch', 'mindeye3', '--subject', '1', '--out', 'x']), isError('CLI_USAGE', '--arch'));
    await assert.rejects(runExport(['--checkpoint', 'a.pth', '--arch', 'mindeye1', '--subject', '9', '--out', 'x']), isError('CLI_USAGE', '--subject'));
    await assert.rejects(runExport(['--arch', 'mindeye1', '--subject', '1', '--out', 'x']), isError('CLI_USAGE', '--checkpoint'));
    await assert.rejects(runExport(['--checkpoint', 'a.pth', '--arch', 'mindeye1', '--subject', '1', '--out', 'x', '--width', '0']), isError('CLI_USAGE', '--width'));
  });

  test('head wider than the mask is rejected', async () => {
    const head = await loadHead(loadManifest(fixture.modelDir), 'backbone', { device: 'cpu' });
    checkHeadShapes(head, 120);
    assert.throws(() => checkHeadShapes(head, 15724), isError('MODEL_VOXELS_MISMATCH', 'backbone.onnx', '[batch, 120]', '15724'));
  });

  test('manifest naming a missing file is rejected', () => {
    const copy = join(scratch, 'missing-file');
    cpSync(fixture.modelDir, copy, { recursive: true });
    rmSync(join(copy, 'prior.onnx'));
    assert.throws(() => loadManifest(copy), isError('MODEL_FILE_MISSING', 'heads.prior.file', 'prior.onnx'));
  });

  test('missing external data file is rejected', async () => {
    const copy = join(scratch, 'missing-data');
    cpSync(fixture.modelDir, copy, { recursive: true });
    const manifestPath = join(copy, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    manifest.heads.backbone.externalData = 'backbone.onnx.data';
    writeFileSync(manifestPath, JSON.stringify(manifest));
    await assert.rejects(loadHead(loadManifest(copy), 'backbone', { device: 'cpu' }), isError('MODEL_FILE_MISSING', 'externalData', 'backbone.onnx.data'));
  });

  test('cuda without provider libraries names the install command', async () => {
    await assert.rejects(
      createSession(join(fixture.modelDir, 'backbone.onnx'), { device: 'cuda' }),
      isError('DEVICE_UNAVAILABLE', 'libonnxruntime_providers_cuda.so', 'ONNXRUNTIME_NODE_INSTALL=cuda12', '--device cpu'),
    );
  });

  test('fp16 model on cpu is rejected', async () => {
    const out = join(scratch, 'fp16');
    await exportCheckpoint({ checkpoint: fixture.checkpoint, arch: 'mindeye1', subject: 1, out, width: 32, fp16: true });
    const model = loadManifest(out);
    assert.equal(model.manifest.heads.backbone.dtype, 'float16');
    await assert.rejects(loadHead(model, 'backbone', { device: 'cpu' }), isError('MODEL_DTYPE_UNSUPPORTED', 'float16', '--device cuda'));
  });

  test('fp16 graph keeps float32 inputs and outputs', async () => {
    // Uses the model the previous test exported. onnxruntime's CPU provider can still run the
    // graph, which checks the float16 conversion.
    const session = await createSession(join(scratch, 'fp16', 'backbone.onnx'), { device: 'cpu' });
    const input = session.inputMetadata[0];
    assert.ok(input.isTensor);
    assert.equal(input.type, 'float32');
    const { batch, voxels } = fixture.reference;
    const result = await session.run({ voxels: new ort.Tensor('float32', fixture.array('voxels'), [batch, voxels]) });
    const diff = maxAbsDiff(result.latent.data as Float32Array, fixture.array('backbone'));
    assert.ok(diff < 2e-2, `float16 max abs diff ${diff}`);
    assert.ok(diff > 0, 'the float16 graph rounds, so it differs from float32');
  });
});
