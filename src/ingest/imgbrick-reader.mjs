// Child process that reads rows of NSD's stimulus file (HDF5 dataset `/imgBrick`, uint8,
// (N, H, W, 3)) for src/ingest/stimuli.ts over an IPC channel with advanced serialization.
//
//   request:  { id, row }                 reply: { id, width, height, rgb: Uint8Array }
//   request:  { id, info: true }          reply: { id, count, height, width }
//   any failure:                          reply: { id, error: message }
//
// It runs in its own process because h5wasm's WebAssembly heap takes about 650 MB of resident
// memory (h5wasm 0.10, Node 20), which a replay process would never get back. Plain JavaScript
// needs no TypeScript loader.
import h5wasm from 'h5wasm/node';

const file = process.argv[2];
await h5wasm.ready;
let h5;
let dataset;
let openError;
try {
  h5 = new h5wasm.File(file, 'r');
  dataset = h5.get('imgBrick');
  if (!(dataset instanceof h5wasm.Dataset)) openError = `no /imgBrick dataset in ${file}`;
} catch (err) {
  openError = `cannot open ${file}: ${err.message}`;
}

process.on('message', (msg) => {
  if (openError) {
    process.send({ id: msg.id, error: openError });
    return;
  }
  const shape = dataset.shape ?? [];
  if (msg.info) {
    process.send({ id: msg.id, count: shape[0], height: shape[1], width: shape[2], channels: shape[3], rank: shape.length });
    return;
  }
  try {
    const data = dataset.slice([[msg.row, msg.row + 1], [], [], []]);
    process.send({ id: msg.id, width: shape[2], height: shape[1], rgb: Uint8Array.from(data) });
  } catch (err) {
    process.send({ id: msg.id, error: err.message });
  }
});
process.on('disconnect', () => {
  h5?.close();
  process.exit(0);
});
