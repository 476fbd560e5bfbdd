/**
 * Writes small linear ONNX models (y = x W + b) with the onnx-proto definitions, so that models
 * fitted in a session run through the same onnxruntime path as exported networks.
 *
 * Graph: input `inputName` float32 [batch, inDim] -> MatMul(W [inDim, outDim]) -> Add(b [outDim])
 * -> output `outputName` float32 [batch, outDim]. Opset 13, IR version 7.
 */
import { writeFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export interface LinearModelSpec {
  inputName: string;
  outputName: string;
  inDim: number;
  outDim: number;
  /** Row-major [inDim, outDim]. */
  weights: Float32Array;
  bias: Float32Array;
  docString?: string;
}

function tensor(name: string, dims: number[], values: Float32Array) {
  return onnx.TensorProto.create({
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)),
  });
}

function valueInfo(name: string, dims: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) => (typeof d === 'number'
            ? onnx.TensorShapeProto.Dimension.create({ dimValue: d })
            : onnx.TensorShapeProto.Dimension.create({ dimParam: d }))),
        }),
      }),
    }),
  });
}

export function encodeLinearModel(spec: LinearModelSpec): Uint8Array {
  if (spec.weights.length !== spec.inDim * spec.outDim || spec.bias.length !== spec.outDim) {
    throw new RangeError(`linear model: weights ${spec.weights.length} / bias ${spec.bias.length} do not fit [${spec.inDim}, ${spec.outDim}]`);
  }
  const graph = onnx.GraphProto.create({
    name: 'linear',
    node: [
      onnx.NodeProto.create({ name: 'matmul', opType: 'MatMul', input: [spec.inputName, 'W'], output: ['xw'] }),
      onnx.NodeProto.create({ name: 'add', opType: 'Add', input: ['xw', 'b'], output: [spec.outputName] }),
    ],
    initializer: [tensor('W', [spec.inDim, spec.outDim], spec.weights), tensor('b', [spec.outDim], spec.bias)],
    input: [valueInfo(spec.inputName, ['batch', spec.inDim])],
    output: [valueInfo(spec.outputName, ['batch', spec.outDim])],
  });
  const model = onnx.ModelProto.create({
    irVersion: 7,
    producerName: 'mindeye-rt',
    docString: spec.docString ?? '',
    opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: 13 })],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

export function writeLinearModel(file: string, spec: LinearModelSpec): void {
  writeFileSync(file, encodeLinearModel(spec));
}
