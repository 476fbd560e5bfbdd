"""ONNX export with external data for large graphs and an optional float16 conversion."""
import os
import shutil
import tempfile
import warnings

import onnx
import torch
from onnx import TensorProto, numpy_helper

OPSET = 17
PROTOBUF_LIMIT_BYTES = 2 * 1024 ** 3


def export_onnx(module, args, path, input_names, output_names, dynamic_axes, fp16=False):
    """Export `module` to `path`; weights go to `<path>.data` when the model is over 2 GB.

    torch 1.13 writes one file per tensor for graphs over the protobuf limit, so the export
    goes to a scratch folder first and is then saved again with a single data file.
    Returns the list of files written (relative to the folder of `path`).
    """
    module.eval()
    param_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values())
    out_dir = os.path.dirname(os.path.abspath(path))
    scratch = tempfile.mkdtemp(prefix='.export-', dir=out_dir)
    try:
        tmp_path = os.path.join(scratch, 'model.onnx')
        with torch.no_grad(), warnings.catch_warnings():
            # Tracer and shape-inference warnings from torch 1.13 are expected for these graphs.
            warnings.simplefilter('ignore')
            torch.onnx.export(module, args, tmp_path, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True)
        model = onnx.load(tmp_path)
        if fp16:
            convert_to_float16(model)
        large = param_bytes // (2 if fp16 else 1) > PROTOBUF_LIMIT_BYTES * 0.9
        name = os.path.basename(path)
        for stale in (path, path + '.data'):
            if os.path.exists(stale):
                os.remove(stale)
        if large:
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=name + '.data', size_threshold=1024)
            return [name, name + '.data']
        onnx.save_model(model, path)
        return [name]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def convert_to_float16(model):
    """Store weights and compute in float16 while the graph inputs and outputs stay float32.

    Every float32 initializer, constant and Cast target becomes float16. Cast nodes are added
    after each float input and before each float output, so callers feed and read float32.
    """
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype('float16'), init.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype('float16'), attr.t.name))
            if node.op_type == 'Cast' and attr.name == 'to' and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = value.name + '_fp16'
            _rename_uses(graph, value.name, half)
            casts_in.append(onnx.helper.make_node('Cast', [value.name], [half], to=TensorProto.FLOAT16))
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = value.name + '_fp16'
            _rename_uses(graph, value.name, half, outputs=True)
            casts_out.append(onnx.helper.make_node('Cast', [half], [value.name], to=TensorProto.FLOAT))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]


def _rename_uses(graph, old, new, outputs=False):
    for node in graph.node:
        names = node.output if outputs else node.input
        for i, name in enumerate(names):
            if name == old:
                names[i] = new
        if outputs:
            # Later nodes that read the renamed output must follow it.
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
