#!/usr/bin/python3
"""Offline OLS reference for the online trial GLM (least-squares-separate or -all).

Builds the design independently of the TypeScript code: SPM canonical HRF (gamma densities via
math.lgamma, 32 s, unit sum on a fine grid of TR/16), boxcar convolution, Legendre drift over
the expected duration, then for every trial and every volume in its window solves OLS on the
rows from the run start up to that volume with numpy.linalg.pinv (relative cutoff 1e-6 on the
singular values of X, matching the online solver's 1e-12 on the eigenvalues of X^T X).

Usage: glm_reference.py SPEC.json DATA.f32 OUT.f64
SPEC: {"trSec", "windowSec", "driftOrder", "durationSec", "volumes", "voxels", "method",
       "trials": [{"onsetSec", "durationSec"}], "censored": [volIdx, ...]}
OUT: for each trial, for each volume in its window: V float64 betas, in that order.
"""
import json
import math
import sys

import numpy as np


def gamma_pdf(t, shape):
    if t <= 0:
        return 0.0
    return math.exp((shape - 1) * math.log(t) - t - math.lgamma(shape))


def spm_hrf(dt):
    n = int(math.floor(32.0 / dt)) + 1
    h = np.array([gamma_pdf(i * dt, 6) - gamma_pdf(i * dt, 16) / 6.0 for i in range(n)])
    return h / h.sum()


def regressor(hrf, dt, onset, duration, times):
    fine_len = int(round(times[-1] / dt)) + len(hrf) + 2
    box = np.zeros(fine_len)
    start = int(round(onset / dt))
    samples = max(1, int(round(duration / dt)))
    box[start:start + samples] = 1.0
    conv = np.convolve(box, hrf)[:fine_len]
    return np.array([conv[int(round(t / dt))] if t >= onset else 0.0 for t in times])


def legendre(order, x):
    out = [np.ones_like(x)]
    if order >= 1:
        out.append(x.copy())
    for n in range(1, order):
        out.append(((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1))
    return np.stack(out[: order + 1], axis=1)


def main():
    spec = json.load(open(sys.argv[1]))
    tr = spec["trSec"]
    T = spec["volumes"]
    V = spec["voxels"]
    y = np.fromfile(sys.argv[2], dtype="<f4").astype(np.float64).reshape(T, V)
    times = np.arange(T) * tr
    dt = tr / 16.0
    hrf = spm_hrf(dt)
    trials = spec["trials"]
    G = np.stack([regressor(hrf, dt, t["onsetSec"], t["durationSec"], times) for t in trials], axis=1)
    D = legendre(spec["driftOrder"], 2 * times / spec["durationSec"] - 1)
    keep = np.ones(T, dtype=bool)
    for c in spec.get("censored", []):
        keep[c] = False
    out = []
    for k, t in enumerate(trials):
        window_end = t["onsetSec"] + t["durationSec"] + spec["windowSec"]
        for v in range(T):
            if times[v] < t["onsetSec"] or times[v] > window_end + 1e-9:
                continue
            rows = np.nonzero(keep[: v + 1])[0]
            if spec["method"] == "lss":
                others = G.sum(axis=1) - G[:, k]
                X = np.column_stack([G[:, k], others, D])
            else:
                started = [j for j, s in enumerate(trials) if s["onsetSec"] <= times[v]]
                order = [k] + [j for j in started if j != k]
                X = np.column_stack([G[:, order], D])
            Xr = X[rows]
            beta = np.linalg.pinv(Xr, rcond=1e-6) @ y[rows]
            out.append(beta[0])
    np.asarray(out, dtype="<f8").tofile(sys.argv[3])


if __name__ == "__main__":
    main()
