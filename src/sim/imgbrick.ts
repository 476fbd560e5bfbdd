/**
 * Writes NSD's stimulus file layout: HDF5 dataset `/imgBrick`, uint8, (N, 425, 425, 3), row =
 * image id - 1. One chunk per image, written row by row, so memory stays at one image.
 */
import h5wasm from 'h5wasm/node';

export async function writeImgBrick(file: string, count: number, size: number, row: (index: number) => Uint8Array): Promise<void> {
  await h5wasm.ready;
  const h5 = new h5wasm.File(file, 'w');
  try {
    const dataset = h5.create_dataset({
      name: 'imgBrick',
      data: new Uint8Array(0),
      shape: [0, size, size, 3],
      maxshape: [null, size, size, 3],
      chunks: [1, size, size, 3],
      dtype: '<B',
    });
    dataset.resize([count, size, size, 3]);
    for (let i = 0; i < count; i++) dataset.write_slice([[i, i + 1]], row(i));
  } finally {
    h5.close();
  }
}
