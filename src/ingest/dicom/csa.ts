/**
 * Siemens CSA header (the "SV10" binary format in private elements (0029,xx10) image header and
 * (0029,xx20) series header, private creator "SIEMENS CSA HEADER").
 *
 * Layout, with every integer a little-endian 32-bit word:
 *   header:    "SV10", 4 bytes (04 03 02 01), tag count, one unused word (77)
 *   each tag:  name (64 bytes, NUL-padded), VM, VR (4 bytes), SyngoDT, item count, check word (77 or 205)
 *   each item: 4 words (word 1 is the value length), then the value bytes padded to a multiple of 4
 * Every value is a NUL-terminated string, whatever its VR. The older format without the "SV10"
 * signature starts directly with the tag count.
 */
import { MindeyeError } from '../../errors.ts';

export type CsaHeader = Map<string, string[]>;

export function parseCsaHeader(bytes: Uint8Array, file: string): CsaHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (detail: string): never => {
    throw new MindeyeError('DICOM_INVALID', 'The Siemens CSA header is malformed.', {
      file, field: 'CSA image header (0029,1010)', value: detail,
      fix: 'export the series again without anonymisation tools that rewrite private elements',
    });
  };
  let pos = 0;
  const signature = Buffer.from(bytes.subarray(0, 4)).toString('latin1');
  if (signature === 'SV10') pos = 8;
  if (bytes.length < pos + 8) fail(`${bytes.length} bytes`);
  const tagCount = view.getUint32(pos, true);
  pos += 8;
  if (tagCount < 1 || tagCount > 1000) fail(`tag count ${tagCount}`);
  const out: CsaHeader = new Map();
  for (let t = 0; t < tagCount; t++) {
    if (pos + 84 > bytes.length) fail(`tag ${t} starts at byte ${pos}, past the end (${bytes.length})`);
    const nameBytes = bytes.subarray(pos, pos + 64);
    const nul = nameBytes.indexOf(0);
    const name = Buffer.from(nameBytes.subarray(0, nul < 0 ? 64 : nul)).toString('latin1');
    const itemCount = view.getInt32(pos + 76, true);
    pos += 84;
    if (itemCount < 0 || itemCount > 100000) fail(`tag ${name} has ${itemCount} items`);
    const values: string[] = [];
    for (let i = 0; i < itemCount; i++) {
      if (pos + 16 > bytes.length) fail(`item ${i} of ${name} starts past the end`);
      const length = view.getInt32(pos + 4, true);
      pos += 16;
      if (length < 0 || pos + length > bytes.length) fail(`item ${i} of ${name} has length ${length}`);
      const raw = bytes.subarray(pos, pos + length);
      const end = raw.indexOf(0);
      const text = Buffer.from(raw.subarray(0, end < 0 ? length : end)).toString('latin1').trim();
      // Items past the tag's multiplicity are empty padding; keep only real values.
      if (text !== '') values.push(text);
      pos += Math.ceil(length / 4) * 4;
    }
    out.set(name, values);
  }
  return out;
}

export function csaNumbers(csa: CsaHeader | undefined, name: string): number[] {
  return (csa?.get(name) ?? []).map(Number).filter(Number.isFinite);
}
