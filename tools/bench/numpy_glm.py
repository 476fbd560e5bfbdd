#!/usr/bin/python3
"""numpy peer for `mindeye-rt bench`: one trial's OLS fit with numpy.linalg.lstsq.

Usage: numpy_glm.py X.f64 Y.f32 ROWS COLUMNS VOXELS OUT.f64 --repeats N
X: the design, float64 row-major [ROWS, COLUMNS], the trial's own regressor first.
Y: the masked data, float32 row-major [ROWS, VOXELS]; converted to float64 before timing.
OUT: the first coefficient row (the trial's betas), float64 [VOXELS].
Prints JSON: {"numpy": version, "lstsqMs": [per repeat, after one warm-up]}.
Exit status 3: numpy is not installed.
"""
import argparse
import json
import sys
import time

try:
    import numpy as np
except ImportError:
    print("missing Python module: numpy", file=sys.stderr)
    sys.exit(3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("design")
    parser.add_argument("data")
    parser.add_argument("rows", type=int)
    parser.add_argument("columns", type=int)
    parser.add_argument("voxels", type=int)
    parser.add_argument("out")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    x = np.fromfile(args.design, dtype=np.float64).reshape(args.rows, args.columns)
    y = np.fromfile(args.data, dtype=np.float32).reshape(args.rows, args.voxels).astype(np.float64)
    coefficients = np.linalg.lstsq(x, y, rcond=None)[0]  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        coefficients = np.linalg.lstsq(x, y, rcond=None)[0]
        times.append((time.perf_counter() - start) * 1000)
    coefficients[0].astype(np.float64).tofile(args.out)
    print(json.dumps({"numpy": np.__version__, "lstsqMs": times}))


if __name__ == "__main__":
    main()
