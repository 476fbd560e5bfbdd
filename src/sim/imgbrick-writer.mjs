// Child process that writes NSD's stimulus file: HDF5 dataset `/imgBrick`, uint8,
// (COUNT, SIZE, SIZE, 3), one chunk per image. Started by src/sim/imgbrick.ts.
//
//   node imgbrick-writer.mjs FILE COUNT SIZE   < frames
//
// Each frame on stdin is a little-endian uint32 row index followed by SIZE x SIZE x 3 bytes.
// The file is closed when stdin ends; the exit status is 0 only if every row was written once.
// It runs in its own process because h5wasm's WebAssembly heap takes about 650 MB of resident
// memory (h5wasm 0.10, Node 20). In the caller's process, such as a demo replay with a 1 GB
// budget, that memory would never be returned. Plain JavaScript needs no TypeScript loader.
import h5wasm from 'h5wasm/node';

const [file, countText, sizeText] = process.argv.slice(2);
const count = Number(countText);
const size = Number(sizeText);
if (file === undefined || !Number.isInteger(count) || count < 1 || !Number.isInteger(size) || size < 1) {
  process.stderr.write(`imgbrick-writer: invalid arguments ${JSON.stringify(process.argv.slice(2))}; expected FILE COUNT SIZE\n`);
  process.exit(2);
}
const rowBytes = size * size * 3;
const frameBytes = 4 + rowBytes;

await h5wasm.ready;
const h5 = new h5wasm.File(file, 'w');
const dataset = h5.create_dataset({
  name: 'imgBrick',
  data: new Uint8Array(0),
  shape: [0, size, size, 3],
  maxshape: [null, size, size, 3],
  chunks: [1, size, size, 3],
  dtype: '<B',
});
dataset.resize([count, size, size, 3]);

const written = new Uint8Array(count);
let pending = Buffer.alloc(0);
let failure;
for await (const chunk of process.stdin) {
  pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
  while (pending.length >= frameBytes && failure === undefined) {
    const row = pending.readUInt32LE(0);
    if (row >= count || written[row] === 1) {
      failure = `row ${row} is out of range or written twice (rows 0 to ${count - 1})`;
      break;
    }
    dataset.write_slice([[row, row + 1]], pending.subarray(4, frameBytes));
    written[row] = 1;
    pending = pending.subarray(frameBytes);
  }
}
h5.close();
const missing = written.reduce((n, flag) => n + (flag === 0 ? 1 : 0), 0);
if (failure === undefined && pending.length > 0) failure = `stdin ended inside a frame (${pending.length} bytes left)`;
if (failure === undefined && missing > 0) failure = `${missing} of ${count} rows were not written`;
if (failure !== undefined) {
  process.stderr.write(`imgbrick-writer: ${file}: ${failure}\n`);
  process.exit(1);
}
