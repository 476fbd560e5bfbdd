/**
 * Siemens classic mosaic DICOM: one file per volume, every slice a tile of one 2D image.
 *
 * Tile count: CSA image header NumberOfImagesInMosaic, else (0019,xx0A) of creator
 * "SIEMENS MR HEADER". With neither the file is rejected, because a guess from the square grid
 * would silently pick up blank tiles. The grid is ceil(sqrt(n)) tiles on a side, so Rows and Columns
 * must be multiples of it.
 *
 * Geometry (as dcm2niix and nibabel do): ImagePositionPatient refers to the top-left pixel of the
 * whole mosaic, so tile 0 sits (mosaic size - tile size) / 2 pixels further along the row and
 * column directions. Tiles step by SpacingBetweenSlices along the CSA SliceNormalVector. When that
 * vector points against row x column cosines, the mosaic was stored head to foot (H>>F): tile i is
 * NIfTI slice n-1-i, so NIfTI slices always run along the positive normal.
 *
 * Slice timing: CSA MosaicRefAcqTimes (ms, in tile order), else (0019,xx29).
 */
import { MindeyeError } from '../../errors.ts';
import { copyFrameToSlice, dot, sliceNormal, stackAffine, type PlaneGeometry, type Vec3 } from './affine.ts';
import { csaNumbers, parseCsaHeader, type CsaHeader } from './csa.ts';
import {
  type DataSet, num, numbers, pixelFormat, privateTag, readPixels, requireNumber, requireNumbers, str, tag,
} from './dataset.ts';
import type { VolumeFile } from './types.ts';

export function isMosaic(ds: DataSet): boolean {
  const imageType = (str(ds, tag(0x0008, 0x0008)) ?? '').toUpperCase();
  const frames = num(ds, tag(0x0028, 0x0008), 'IS') ?? 1;
  return frames <= 1 && imageType.split('\\').includes('MOSAIC');
}

export function readCsaImageHeader(ds: DataSet, file: string): CsaHeader | undefined {
  const key = privateTag(ds, 0x0029, 'SIEMENS CSA HEADER', 0x10) ?? tag(0x0029, 0x1010);
  const el = ds.elements[key];
  if (el === undefined || el.length === 0) return undefined;
  return parseCsaHeader(ds.byteArray.subarray(el.dataOffset, el.dataOffset + el.length), file);
}

/** Reads the tile count from the CSA header or (0019,xx0A); undefined when both are missing. */
export function mosaicImageCount(ds: DataSet, csa: CsaHeader | undefined): number | undefined {
  const fromCsa = csaNumbers(csa, 'NumberOfImagesInMosaic')[0];
  if (fromCsa !== undefined && fromCsa > 0) return fromCsa;
  const key = privateTag(ds, 0x0019, 'SIEMENS MR HEADER', 0x0a);
  const fromPrivate = key === undefined ? undefined : num(ds, key, 'US');
  return fromPrivate !== undefined && fromPrivate > 0 ? fromPrivate : undefined;
}

export function planeGeometry(ds: DataSet, file: string, rows: number, columns: number): PlaneGeometry {
  const iop = requireNumbers(ds, tag(0x0020, 0x0037), 'ImageOrientationPatient', file, 6);
  const spacing = requireNumbers(ds, tag(0x0028, 0x0030), 'PixelSpacing', file, 2);
  return {
    rowCosines: [iop[0], iop[1], iop[2]],
    columnCosines: [iop[3], iop[4], iop[5]],
    pixelSpacingMm: [spacing[0], spacing[1]],
    rows,
    columns,
  };
}

/** Decodes one mosaic file into a volume. `volIdx` comes from AcquisitionNumber (1-based in the file). */
export function decodeSiemensMosaic(ds: DataSet, file: string): VolumeFile {
  const csa = readCsaImageHeader(ds, file);
  const count = mosaicImageCount(ds, csa);
  const format = pixelFormat(ds, file);
  if (count === undefined) {
    throw new MindeyeError('DICOM_INVALID', 'The mosaic slice count is missing.', {
      file, field: 'NumberOfImagesInMosaic (CSA image header) and (0019,100A)', value: 'both absent',
      expected: 'the slice count in either place',
      fix: 'export the series with its private Siemens elements (anonymisers often strip them); the count is not guessed from the grid',
    });
  }
  const grid = Math.ceil(Math.sqrt(count));
  if (format.rows % grid !== 0 || format.columns % grid !== 0) {
    throw new MindeyeError('DICOM_INVALID', 'The mosaic image count does not fit its matrix.', {
      file, field: 'NumberOfImagesInMosaic', value: count,
      expected: `a count whose grid (ceil(sqrt(${count})) = ${grid} tiles a side) divides Rows ${format.rows} and Columns ${format.columns}`,
      fix: 'the private header and the image disagree: export the series again',
    });
  }
  const tileRows = format.rows / grid;
  const tileColumns = format.columns / grid;
  const stored = readPixels(ds, file, format, 1);
  const slope = num(ds, tag(0x0028, 0x1053)) ?? 1;
  const intercept = num(ds, tag(0x0028, 0x1052)) ?? 0;

  const geom = planeGeometry(ds, file, tileRows, tileColumns);
  const ipp = requireNumbers(ds, tag(0x0020, 0x0032), 'ImagePositionPatient', file, 3);
  const [rowSpacing, columnSpacing] = geom.pixelSpacingMm;
  const r = geom.rowCosines;
  const c = geom.columnCosines;
  const dRows = ((format.rows - tileRows) / 2) * rowSpacing;
  const dColumns = ((format.columns - tileColumns) / 2) * columnSpacing;
  const tile0: Vec3 = [
    ipp[0] + c[0] * dRows + r[0] * dColumns,
    ipp[1] + c[1] * dRows + r[1] * dColumns,
    ipp[2] + c[2] * dRows + r[2] * dColumns,
  ];
  const normal = sliceNormal(geom);
  const csaNormal = csaNumbers(csa, 'SliceNormalVector');
  const tileDirection: Vec3 = csaNormal.length === 3 ? [csaNormal[0], csaNormal[1], csaNormal[2]] : normal;
  const headToFoot = dot(tileDirection, normal) < 0;
  const spacingMm = num(ds, tag(0x0018, 0x0088)) ?? requireNumber(ds, tag(0x0018, 0x0050), 'SliceThickness', file);
  const step: Vec3 = [tileDirection[0] * spacingMm, tileDirection[1] * spacingMm, tileDirection[2] * spacingMm];
  const first: Vec3 = headToFoot
    ? [tile0[0] + step[0] * (count - 1), tile0[1] + step[1] * (count - 1), tile0[2] + step[2] * (count - 1)]
    : tile0;
  const niftiStep: Vec3 = headToFoot ? [-step[0], -step[1], -step[2]] : step;

  const data = new Float32Array(tileRows * tileColumns * count);
  for (let t = 0; t < count; t++) {
    const tileOffset = Math.floor(t / grid) * tileRows * format.columns + (t % grid) * tileColumns;
    const slice = headToFoot ? count - 1 - t : t;
    copyFrameToSlice(stored, tileOffset, format.columns, tileRows, tileColumns, data, slice);
  }
  if (slope !== 1 || intercept !== 0) for (let i = 0; i < data.length; i++) data[i] = data[i] * slope + intercept;

  let timesMs = csaNumbers(csa, 'MosaicRefAcqTimes');
  if (timesMs.length !== count) {
    const key = privateTag(ds, 0x0019, 'SIEMENS MR HEADER', 0x29);
    timesMs = key === undefined ? [] : numbers(ds, key, 'FD');
  }
  const sliceTimingSec = timesMs.length === count ? timesMs.map((ms) => ms / 1000) : undefined;
  if (sliceTimingSec !== undefined && headToFoot) sliceTimingSec.reverse();

  return {
    kind: 'volume',
    format: 'siemens',
    file,
    seriesNumber: num(ds, tag(0x0020, 0x0011), 'IS') ?? 0,
    seriesDescription: str(ds, tag(0x0008, 0x103e)),
    manufacturer: str(ds, tag(0x0008, 0x0070)),
    volIdx: acquisitionIndex(ds, file),
    shape: [tileColumns, tileRows, count],
    affine: stackAffine(geom, first, niftiStep),
    voxelSizeMm: [columnSpacing, rowSpacing, spacingMm],
    data,
    trSec: (num(ds, tag(0x0018, 0x0080)) ?? 0) / 1000,
    sliceTimingSec,
  };
}

/** 0-based volume index from AcquisitionNumber, else InstanceNumber, else the `_VVVVVV` in a Siemens export name. */
export function acquisitionIndex(ds: DataSet, file: string): number {
  const acquisition = num(ds, tag(0x0020, 0x0012), 'IS') ?? num(ds, tag(0x0020, 0x0013), 'IS');
  if (acquisition !== undefined && acquisition >= 1) return acquisition - 1;
  const m = /_(\d{6})\.dcm$/i.exec(file);
  if (m !== null && Number(m[1]) >= 1) return Number(m[1]) - 1;
  throw new MindeyeError('DICOM_INVALID', 'The volume number of the file is unknown.', {
    file, field: 'AcquisitionNumber (0020,0012) and InstanceNumber (0020,0013)', value: acquisition ?? 'absent',
    expected: 'a positive integer, or a file name ending in _VVVVVV.dcm', fix: 'export the series with full headers',
  });
}
