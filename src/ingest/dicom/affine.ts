/**
 * From DICOM patient coordinates (LPS+) to the NIfTI voxel-to-RAS+ affine, as dcm2niix writes it.
 *
 * A DICOM image has rows along ImageOrientationPatient[0:3] (column index increases) and columns
 * along [3:6] (row index increases). dcm2niix stores NIfTI x = DICOM column, NIfTI y = DICOM row
 * counted from the bottom (rows reversed), and NIfTI slices in increasing position along the
 * slice normal (row direction x column direction). RAS+ is LPS+ with x and y negated.
 */

export type Vec3 = [number, number, number];

export interface PlaneGeometry {
  /** ImageOrientationPatient[0:3]: direction of increasing column index, LPS+. */
  rowCosines: Vec3;
  /** ImageOrientationPatient[3:6]: direction of increasing row index, LPS+. */
  columnCosines: Vec3;
  /** PixelSpacing: [between rows, between columns] in mm. */
  pixelSpacingMm: [number, number];
  rows: number;
  columns: number;
}

export function cross(a: Vec3, b: Vec3): Vec3 {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

export function dot(a: Vec3, b: Vec3): number {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

export function sliceNormal(geom: PlaneGeometry): Vec3 {
  return cross(geom.rowCosines, geom.columnCosines);
}

/**
 * Builds the row-major RAS+ affine for a stack of slices.
 * @param firstSliceLps ImagePositionPatient (centre of the top-left pixel) of NIfTI slice 0, mm.
 * @param sliceStepLps displacement from one NIfTI slice to the next, mm.
 */
export function stackAffine(geom: PlaneGeometry, firstSliceLps: Vec3, sliceStepLps: Vec3): Float64Array {
  const [rowSpacing, columnSpacing] = geom.pixelSpacingMm;
  const r = geom.rowCosines;
  const c = geom.columnCosines;
  // NIfTI y = rows - 1 - DICOM row, so the y column points against the column cosines and the
  // origin moves to the bottom-left pixel.
  const xCol: Vec3 = [r[0] * columnSpacing, r[1] * columnSpacing, r[2] * columnSpacing];
  const yCol: Vec3 = [-c[0] * rowSpacing, -c[1] * rowSpacing, -c[2] * rowSpacing];
  const shift = (geom.rows - 1) * rowSpacing;
  const origin: Vec3 = [firstSliceLps[0] + c[0] * shift, firstSliceLps[1] + c[1] * shift, firstSliceLps[2] + c[2] * shift];
  const lps = [xCol, yCol, sliceStepLps, origin];
  const affine = new Float64Array(16);
  for (let col = 0; col < 4; col++) {
    affine[0 * 4 + col] = -lps[col][0];
    affine[1 * 4 + col] = -lps[col][1];
    affine[2 * 4 + col] = lps[col][2];
  }
  affine[15] = 1;
  return affine;
}

/**
 * Copies one DICOM frame (rows x columns, row-major, top row first) into NIfTI slice `slice` of
 * `out`, reversing the rows.
 */
export function copyFrameToSlice(
  frame: Float32Array,
  frameOffset: number,
  frameRowStride: number,
  rows: number,
  columns: number,
  out: Float32Array,
  slice: number,
): void {
  const sliceOffset = slice * rows * columns;
  for (let j = 0; j < rows; j++) {
    const src = frameOffset + (rows - 1 - j) * frameRowStride;
    out.set(frame.subarray(src, src + columns), sliceOffset + j * columns);
  }
}
