/**
 * Philips PAR/REC (PAR versions 4 to 4.2): a text header (.PAR) and raw 16-bit images (.REC),
 * as the real-time "Research image export tool" writes one pair per dynamic.
 *
 * Values are PAR "displayed values" (DV = PV x RS + RI, per image). A REC that contains several
 * image types (for example magnitude and phase) yields the type of its first image, the
 * magnitude in standard exports. NIfTI slice k is the image with slice number k + 1, stored as in
 * the REC (x fastest, no flip).
 *
 * The affine follows PARRECHeader.get_affine of nibabel 5.0 (Debian's python3-nibabel) in five
 * steps. (1) Centre the voxel grid. (2) Scale by pixel spacing and slice thickness + gap.
 * (3) Permute the slice orientation to Philips PSL axes. (4) Rotate by the general-information
 * angulation as Rz(rl) Rx(ap) Ry(fh), then add the off-centre (ap, fh, rl). (5) Map PSL to RAS.
 * NOTE: the fixture has zero angulation, so the rotation order is checked against nibabel only
 * for that case; nibabel itself describes the order as found by trial.
 */
import { MindeyeError } from '../../errors.ts';
import type { VolumeFile } from './types.ts';

interface ImageLine {
  slice: number;
  dynamic: number;
  imageType: number;
  recIndex: number;
  bits: number;
  reconX: number;
  reconY: number;
  rescaleIntercept: number;
  rescaleSlope: number;
  sliceThicknessMm: number;
  sliceGapMm: number;
  sliceOrientation: number;
  pixelSpacingMm: [number, number];
  dynamicBeginSec: number;
}

export interface ParHeader {
  general: Map<string, string>;
  images: ImageLine[];
}

export function isParText(bytes: Uint8Array): boolean {
  const head = Buffer.from(bytes.subarray(0, Math.min(bytes.length, 512))).toString('latin1');
  return head.startsWith('#') && /DATA DESCRIPTION FILE/i.test(head);
}

export function parsePar(text: string, file: string): ParHeader {
  const general = new Map<string, string>();
  const images: ImageLine[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('.')) {
      const colon = line.indexOf(':');
      if (colon > 0) general.set(line.slice(1, colon).trim().replace(/\s+/g, ' '), line.slice(colon + 1).trim());
      continue;
    }
    const v = line.split(/\s+/).map(Number);
    if (v.length < 33 || v.some((x) => !Number.isFinite(x))) {
      throw new MindeyeError('DICOM_INVALID', 'A PAR image line could not be read.', {
        file, field: `image line ${images.length + 1}`, value: line.slice(0, 60),
        expected: 'at least 33 numbers (PAR version 4 to 4.2)', fix: 'export the PAR/REC pair again',
      });
    }
    // Column order of PAR 4.x image lines: sl ec dyn ph ty seq idx pix scan% recx recy RI RS SS wc ww
    // ang(3) off(3) thick gap display_orientation slice_orientation fmri ed_es spacing(2) echo dtime ...
    images.push({
      slice: v[0], dynamic: v[2], imageType: v[4], recIndex: v[6], bits: v[7], reconX: v[9], reconY: v[10],
      rescaleIntercept: v[11], rescaleSlope: v[12], sliceThicknessMm: v[22], sliceGapMm: v[23],
      sliceOrientation: v[25], pixelSpacingMm: [v[28], v[29]], dynamicBeginSec: v[31],
    });
  }
  if (images.length === 0) {
    throw new MindeyeError('DICOM_INVALID', 'The PAR file lists no images.', {
      file, field: 'IMAGE INFORMATION', value: 'no image lines', fix: 'the PAR file is truncated: export it again',
    });
  }
  return { general, images };
}

function generalNumbers(par: ParHeader, prefix: string): number[] {
  for (const [key, value] of par.general) {
    if (key.startsWith(prefix)) return value.split(/\s+/).map(Number).filter(Number.isFinite);
  }
  return [];
}

const ACQ_TO_PSL: Record<number, number[][]> = {
  1: [[0, 1, 0], [0, 0, 1], [1, 0, 0]], // transverse
  2: [[1, 0, 0], [0, -1, 0], [0, 0, -1]], // sagittal
  3: [[0, 0, 1], [0, -1, 0], [1, 0, 0]], // coronal
};

function matmul(a: number[][], b: number[][]): number[][] {
  return a.map((row) => b[0].map((_, j) => row.reduce((sum, x, k) => sum + x * b[k][j], 0)));
}

/** Decodes a PAR/REC pair. `recBytes` must hold every image the PAR lists. */
export function decodeParRec(parText: string, recBytes: Uint8Array, parFile: string, recFile: string): VolumeFile[] {
  const par = parsePar(parText, parFile);
  const type = par.images.reduce((a, b) => (b.recIndex < a.recIndex ? b : a)).imageType;
  const chosen = par.images.filter((im) => im.imageType === type);
  const { reconX, reconY, bits } = chosen[0];
  if (bits !== 16 && bits !== 8) {
    throw new MindeyeError('DICOM_INVALID', 'Unsupported PAR image pixel size.', {
      file: parFile, field: 'image pixel size', value: bits, expected: '8 or 16 bits',
    });
  }
  const bytesPerPixel = bits / 8;
  const imageBytes = reconX * reconY * bytesPerPixel;
  const needed = (Math.max(...par.images.map((im) => im.recIndex)) + 1) * imageBytes;
  if (recBytes.length < needed) {
    throw new MindeyeError('DICOM_INVALID', 'The REC file is shorter than its PAR header requires.', {
      file: recFile, field: 'file size', value: `${recBytes.length} bytes`, expected: `${needed} bytes`,
      fix: 'the REC file is truncated or still being written',
    });
  }
  const slices = [...new Set(chosen.map((im) => im.slice))].sort((a, b) => a - b);
  const dynamics = [...new Set(chosen.map((im) => im.dynamic))].sort((a, b) => a - b);
  const acquisition = generalNumbers(par, 'Acquisition nr')[0] ?? 1;
  const trMs = generalNumbers(par, 'Repetition time')[0] ?? 0;
  const first = chosen[0];
  const zooms = [first.pixelSpacingMm[0], first.pixelSpacingMm[1], first.sliceThicknessMm + first.sliceGapMm];
  const affine = parAffine(par, [reconX, reconY, slices.length], zooms, first.sliceOrientation, parFile);
  const view = new DataView(recBytes.buffer, recBytes.byteOffset, recBytes.byteLength);

  return dynamics.map((dynamic, d) => {
    const data = new Float32Array(reconX * reconY * slices.length);
    for (const im of chosen.filter((x) => x.dynamic === dynamic)) {
      const k = slices.indexOf(im.slice);
      const src = im.recIndex * imageBytes;
      const dst = k * reconX * reconY;
      for (let i = 0; i < reconX * reconY; i++) {
        const pv = bytesPerPixel === 2 ? view.getUint16(src + i * 2, true) : view.getUint8(src + i);
        data[dst + i] = pv * im.rescaleSlope + im.rescaleIntercept;
      }
    }
    return {
      kind: 'volume' as const,
      format: 'philips' as const,
      file: parFile,
      // Real-time dumps carry no series number ("Acquisition nr" counts dumps), so every dump is series 0.
      seriesNumber: 0,
      seriesDescription: par.general.get('Protocol name') || undefined,
      manufacturer: 'Philips',
      // NOTE: real-time dumps hold one dynamic each and count volumes in "Acquisition nr".
      volIdx: dynamics.length === 1 ? acquisition - 1 : d,
      shape: [reconX, reconY, slices.length],
      affine,
      voxelSizeMm: [zooms[0], zooms[1], zooms[2]],
      data,
      // A TR under 10 ms is a placeholder (the real-time dumps write 1), not an EPI repetition time.
      trSec: trMs >= 10 ? trMs / 1000 : 0,
    };
  });
}

function parAffine(par: ParHeader, shape: number[], zooms: number[], orientation: number, file: string): Float64Array {
  const permute = ACQ_TO_PSL[orientation];
  if (permute === undefined) {
    throw new MindeyeError('DICOM_INVALID', 'Unknown PAR slice orientation.', {
      file, field: 'slice orientation', value: orientation, expected: '1 (transverse), 2 (sagittal) or 3 (coronal)',
    });
  }
  const [ap, fh, rl] = (generalNumbers(par, 'Angulation midslice').concat([0, 0, 0])).slice(0, 3).map((deg) => (deg * Math.PI) / 180);
  const offCentre = generalNumbers(par, 'Off Centre midslice').concat([0, 0, 0]).slice(0, 3);
  const rx = [[1, 0, 0], [0, Math.cos(ap), -Math.sin(ap)], [0, Math.sin(ap), Math.cos(ap)]];
  const ry = [[Math.cos(fh), 0, Math.sin(fh)], [0, 1, 0], [-Math.sin(fh), 0, Math.cos(fh)]];
  const rz = [[Math.cos(rl), -Math.sin(rl), 0], [Math.sin(rl), Math.cos(rl), 0], [0, 0, 1]];
  const scaled = permute.map((row) => row.map((x, j) => x * zooms[j]));
  const linear = matmul(matmul(matmul(rz, rx), ry), scaled);
  const centre = shape.map((n) => -(n - 1) / 2);
  const translation = linear.map((row, i) => row.reduce((sum, x, j) => sum + x * centre[j], 0) + offCentre[i]);
  // PSL to RAS: R = -L (row 2), A = -P (row 0), S = S (row 1).
  const psl = linear.map((row, i) => [...row, translation[i]]);
  const ras = [psl[2].map((x) => -x), psl[0].map((x) => -x), psl[1]];
  const affine = new Float64Array(16);
  for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) affine[r * 4 + c] = ras[r][c] + 0;
  affine[15] = 1;
  return affine;
}
