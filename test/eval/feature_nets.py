"""Builds small random image -> feature ONNX networks for the feature metric tests, and computes
reference two-way identification and correlation distance with numpy and scipy on given images,
following MindEye's definitions (np.corrcoef between real and reconstruction features; scipy's
correlation distance).

Usage: feature_nets.py OUT_DIR IMAGES.u8 COUNT SIZE
IMAGES.u8 contains COUNT reconstructions then COUNT ground truths, each SIZE x SIZE x 3 uint8 RGB.
With COUNT 0 it only writes the networks (IMAGES.u8 is not read).
Writes static.onnx (input fixed at 1x3xSIZExSIZE), dynamic.onnx (any height and width) and
gray.onnx (one input channel), and prints the reference values as JSON.
"""
import json
import sys

import numpy as np
import scipy.spatial.distance
import torch

out_dir, images_path, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)


class Static(torch.nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class Dynamic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=2, padding=2)

    def forward(self, x):
        # Global mean over height and width, so that any input size gives 16 features.
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


static, dynamic, gray = Static().eval(), Dynamic().eval(), Static(channels=1).eval()
example = torch.zeros(1, 3, size, size)
torch.onnx.export(static, example, f'{out_dir}/static.onnx', input_names=['image'], output_names=['features'], opset_version=17)
torch.onnx.export(dynamic, example, f'{out_dir}/dynamic.onnx', input_names=['image'], output_names=['features'],
                  dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'}}, opset_version=17)
torch.onnx.export(gray, torch.zeros(1, 1, size, size), f'{out_dir}/gray.onnx', input_names=['image'], output_names=['features'], opset_version=17)

if count == 0:
    print(json.dumps({}))
    sys.exit(0)

pixels = np.fromfile(images_path, dtype=np.uint8).reshape(2 * count, size, size, 3)
mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
batch = ((pixels.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)


def features(net):
    with torch.no_grad():
        return np.stack([net(torch.from_numpy(np.ascontiguousarray(batch[i:i + 1]))).flatten().numpy() for i in range(2 * count)])


def two_way(preds, reals):
    r = np.corrcoef(reals.astype(np.float64), preds.astype(np.float64))[:len(reals), len(reals):]
    congruents = np.diag(r)
    return float(np.mean(np.sum(r < congruents, 0)) / (len(reals) - 1))


result = {}
for name, net in [('static', static), ('dynamic', dynamic)]:
    f = features(net)
    preds, reals = f[:count], f[count:]
    result[name] = {
        'twoWay': two_way(preds, reals),
        'correlationDistance': float(np.mean([scipy.spatial.distance.correlation(reals[i], preds[i]) for i in range(count)])),
        'firstFeatures': f[0].tolist(),
    }
print(json.dumps(result))
