import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import h5wasm from 'h5wasm/node';
import { ImgBrickWriter } from '../../src/sim/imgbrick.ts';

const SIZE = 8;

function image(value: number): Uint8Array {
  return new Uint8Array(SIZE * SIZE * 3).fill(value);
}

describe('imgBrick writer', () => {
  let root: string;

  before(() => { root = mkdtempSync(join(tmpdir(), 'mindeye-imgbrick-')); });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('writes rows in any order', async () => {
    const file = join(root, 'ok.hdf5');
    const writer = new ImgBrickWriter(file, 3, SIZE);
    await writer.write(2, image(30));
    await writer.write(0, image(10));
    await writer.write(1, image(20));
    await writer.close();
    await h5wasm.ready;
    const h5 = new h5wasm.File(file, 'r');
    try {
      const brick = h5.get('imgBrick') as InstanceType<typeof h5wasm.Dataset>;
      assert.deepEqual(brick.shape, [3, SIZE, SIZE, 3]);
      for (const row of [0, 1, 2]) {
        const values = brick.slice([[row, row + 1]]) as Uint8Array;
        assert.ok(values.every((v) => v === 10 * (row + 1)), `row ${row}`);
      }
    } finally {
      h5.close();
    }
  });

  test('missing rows fail on close', async () => {
    const writer = new ImgBrickWriter(join(root, 'missing.hdf5'), 2, SIZE);
    await writer.write(0, image(1));
    await assert.rejects(writer.close(), /HDF5|stimulus file[\s\S]*1 of 2 rows were not written/);
  });

  test('duplicate rows fail on close', async () => {
    const writer = new ImgBrickWriter(join(root, 'twice.hdf5'), 2, SIZE);
    await writer.write(1, image(1));
    await writer.write(1, image(2));
    await assert.rejects(writer.close(), /row 1 is out of range or written twice/);
  });

  test('wrong image size is rejected', async () => {
    const writer = new ImgBrickWriter(join(root, 'size.hdf5'), 1, SIZE);
    await assert.rejects(writer.write(0, new Uint8Array(10)), /10 bytes, expected 192/);
    await writer.write(0, image(5));
    await writer.close();
  });

  test('unwritable path fails on close', async () => {
    const writer = new ImgBrickWriter(join(root, 'no-such-folder', 'x.hdf5'), 1, SIZE);
    await writer.write(0, image(5)).catch(() => undefined);
    await assert.rejects(writer.close(), /Writing the stimulus file failed[\s\S]*no-such-folder/);
  });
});
