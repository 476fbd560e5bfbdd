#!/usr/bin/python3
"""PyTorch peer for `mindeye-rt bench`: a model's backbone ONNX run by torch on the same weights.

The ONNX graph is executed node by node with torch operations. Weights come from the graph's
initializers through onnx.numpy_helper, so torch computes the same function as onnxruntime.
Supported operators: Gemm, MatMul, Add, Sub, Mul, Div, Erf, Relu, Sigmoid, Tanh, Gelu,
LayerNormalization, Constant, Identity. Another operator exits with status 4 and its name.

Usage: torch_backbone.py BACKBONE.onnx INPUT.f32 OUT.f32 --repeats N
INPUT: float32 voxels of one sample [1, V]. OUT: the latent of the last forward pass.
Prints JSON: {"torch": version, "threads": n, "forwardMs": [per repeat, after one warm-up]}.
Exit status 3: torch or onnx is not installed.
"""
import argparse
import json
import sys
import time

try:
    import numpy as np
    import onnx
    from onnx import numpy_helper
    import torch
except ImportError as err:  # the caller reports the peer as skipped
    print(f"missing Python module: {err.name}", file=sys.stderr)
    sys.exit(3)

SUPPORTED = {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Erf", "Relu", "Sigmoid", "Tanh", "Gelu",
             "LayerNormalization", "Constant", "Identity"}


def attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def run_graph(graph, weights, inputs):
    values = dict(weights)
    values.update(inputs)
    for node in graph.node:
        attrs = attributes(node)
        args = [values[name] for name in node.input if name]
        op = node.op_type
        if op == "Gemm":
            a, b = args[0], args[1]
            if attrs.get("transA", 0):
                a = a.t()
            if attrs.get("transB", 0):
                b = b.t()
            out = attrs.get("alpha", 1.0) * (a @ b)
            if len(args) > 2:
                out = out + attrs.get("beta", 1.0) * args[2]
        elif op == "MatMul":
            out = args[0] @ args[1]
        elif op == "Add":
            out = args[0] + args[1]
        elif op == "Sub":
            out = args[0] - args[1]
        elif op == "Mul":
            out = args[0] * args[1]
        elif op == "Div":
            out = args[0] / args[1]
        elif op == "Erf":
            out = torch.erf(args[0])
        elif op == "Relu":
            out = torch.relu(args[0])
        elif op == "Sigmoid":
            out = torch.sigmoid(args[0])
        elif op == "Tanh":
            out = torch.tanh(args[0])
        elif op == "Gelu":
            out = torch.nn.functional.gelu(args[0])
        elif op == "LayerNormalization":
            axis = attrs.get("axis", -1)
            shape = args[0].shape[axis:]
            out = torch.nn.functional.layer_norm(args[0], shape, args[1], args[2] if len(args) > 2 else None,
                                                 attrs.get("epsilon", 1e-5))
        elif op == "Constant":
            out = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
        elif op == "Identity":
            out = args[0]
        else:
            raise KeyError(op)
        values[node.output[0]] = out
    return values[graph.output[0].name]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("out")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model = onnx.load(args.model)
    unsupported = sorted({n.op_type for n in model.graph.node} - SUPPORTED)
    if unsupported:
        print(f"unsupported ONNX operators: {', '.join(unsupported)}", file=sys.stderr)
        sys.exit(4)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    voxels = np.fromfile(args.input, dtype=np.float32)
    input_name = model.graph.input[0].name
    feed = {input_name: torch.from_numpy(voxels.reshape(1, -1))}

    times = []
    with torch.inference_mode():
        latent = run_graph(model.graph, weights, feed)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            latent = run_graph(model.graph, weights, feed)
            times.append((time.perf_counter() - start) * 1000)
    latent.numpy().astype(np.float32).tofile(args.out)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "forwardMs": times}))


if __name__ == "__main__":
    main()
