import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isMindeyeError } from '../../../src/errors.ts';
import { parseDicomFile, IncompleteFileError } from '../../../src/ingest/dicom/dataset.ts';
import { decodeScannerFile, sniffLayout, type VolumeFile } from '../../../src/ingest/dicom/index.ts';
import { readCsaImageHeader } from '../../../src/ingest/dicom/siemens-mosaic.ts';
import { fixture } from '../helpers.ts';

const MOSAIC = fixture('siemens-mosaic/ep2d_Asc_2/IM-0001-0001.dcm');

function mosaicBytes(): Buffer {
  return Buffer.from(readFileSync(MOSAIC));
}

/** Offset of the only occurrence of `needle` in `bytes`. */
function findOnce(bytes: Buffer, needle: Buffer | string): number {
  const first = bytes.indexOf(needle);
  assert.ok(first >= 0, `${String(needle)} not found`);
  assert.equal(bytes.indexOf(needle, first + 1), -1, `${String(needle)} found twice`);
  return first;
}

/** Renames the CSA tag NumberOfImagesInMosaic so that readers no longer find it. */
function hideCsaCount(bytes: Buffer): void {
  bytes.write('X', findOnce(bytes, 'NumberOfImagesInMosaic'), 'latin1');
}

/** Moves (0019,100A) NumberOfImagesInMosaic to the unused element (0019,10EE). */
function hidePrivateCount(bytes: Buffer): void {
  const at = findOnce(bytes, Buffer.from([0x19, 0x00, 0x0a, 0x10, 0x55, 0x53]));
  bytes[at + 2] = 0xee;
}

function decodeBytes(bytes: Uint8Array): VolumeFile {
  return decodeScannerFile(bytes, 'mutated.dcm', { format: 'auto' })[0] as VolumeFile;
}

describe('Siemens CSA header', () => {
  it('reads the mosaic fields of a real file', () => {
    const csa = readCsaImageHeader(parseDicomFile(readFileSync(MOSAIC), MOSAIC), MOSAIC);
    assert.deepEqual(csa?.get('NumberOfImagesInMosaic'), ['36']);
    assert.equal(csa?.get('SliceNormalVector')?.length, 3);
    assert.equal(csa?.get('MosaicRefAcqTimes')?.length, 36);
  });
});

describe('mosaic image count', () => {
  it('falls back to (0019,100A) without the CSA count', () => {
    const original = decodeBytes(mosaicBytes());
    const bytes = mosaicBytes();
    hideCsaCount(bytes);
    const fallback = decodeBytes(bytes);
    assert.deepEqual(fallback.shape, original.shape);
    assert.deepEqual(Array.from(fallback.affine), Array.from(original.affine));
    assert.deepEqual(fallback.data, original.data);
  });

  it('uses the CSA count without (0019,100A)', () => {
    const bytes = mosaicBytes();
    hidePrivateCount(bytes);
    assert.deepEqual(decodeBytes(bytes).shape, [64, 64, 36]);
  });

  it('rejects a mosaic with neither count', () => {
    const bytes = mosaicBytes();
    hideCsaCount(bytes);
    hidePrivateCount(bytes);
    assert.throws(() => decodeBytes(bytes), (err: unknown) => {
      assert.ok(isMindeyeError(err));
      assert.equal(err.code, 'DICOM_INVALID');
      assert.match(err.message, /^The mosaic slice count is missing\./);
      assert.match(err.message, /field: NumberOfImagesInMosaic \(CSA image header\) and \(0019,100A\)/);
      assert.match(err.message, /the count is not guessed from the grid/);
      return true;
    });
  });

  it('rejects a count that does not fit the matrix', () => {
    const bytes = mosaicBytes();
    // The CSA value sits 84 bytes (tag header) + 16 bytes (item header) after the tag name.
    const value = findOnce(bytes, 'NumberOfImagesInMosaic') + 84 + 16;
    assert.equal(bytes.toString('latin1', value, value + 2), '36');
    bytes.write('25', value, 'latin1');
    assert.throws(() => decodeBytes(bytes), /The mosaic image count does not fit its matrix\.[\s\S]*value: 25[\s\S]*ceil\(sqrt\(25\)\) = 5 tiles a side\) divides Rows 384 and Columns 384/);
  });
});

describe('file checks', () => {
  it('reports a truncated DICOM as incomplete', () => {
    const bytes = readFileSync(fixture('rtcloud-sample/001_000013_000001.dcm'));
    for (const cut of [100, 140, 2000, 162110, 307200, bytes.length - 1]) {
      assert.throws(() => decodeScannerFile(bytes.subarray(0, cut), 'cut.dcm', { format: 'auto' }), IncompleteFileError, `cut at ${cut}`);
    }
  });

  it('rejects a text file as not scanner output', () => {
    const text = Buffer.from('Operator notes: subject moved during run 2.\n'.repeat(20));
    assert.equal(sniffLayout(text), undefined);
    assert.throws(() => decodeScannerFile(text, 'notes.txt', { format: 'auto' }), /neither DICOM, NIfTI nor a Philips PAR header[\s\S]*fix: keep only scanner output in the watched folder/);
  });

  it('rejects a DICOM of another format than requested', () => {
    assert.throws(() => decodeScannerFile(readFileSync(MOSAIC), MOSAIC, { format: 'ge' }), /does not have the requested format[\s\S]*value: "ge"[\s\S]*use --format siemens/);
  });

  it('never cuts a multi-frame image into tiles', () => {
    const file = fixture('siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/6_1.dcm');
    const bytes = Buffer.from(readFileSync(file));
    // Claim MOSAIC in the top-level ImageType, the first occurrence (frame types repeat it):
    // ORIGINAL\PRIMARY\M\NONE becomes ORIGINAL\PRIMARY\MOSAIC, the same length.
    const at = bytes.indexOf('ORIGINAL\\PRIMARY\\M\\NONE');
    assert.ok(at > 0, 'ImageType found');
    assert.ok(at < 2000, `top-level ImageType at ${at}`);
    bytes.write('ORIGINAL\\PRIMARY\\MOSAIC', at, 'latin1');
    const [volume] = decodeScannerFile(bytes, file, { format: 'auto' }) as VolumeFile[];
    assert.equal(volume.format, 'siemens-xa');
    assert.deepEqual(volume.shape, [64, 64, 6]);
  });
});
