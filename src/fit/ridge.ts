/**
 * Ridge regression in closed form (float64), in its dual form because calibration data have far
 * fewer trials than voxels: W = X^T (X X^T + alpha I)^-1 Y, with X centred per column and the
 * intercept fitted separately. Used by `fit` for a ridge classifier (targets +1/-1 per label,
 * one-vs-rest, as scikit-learn's RidgeClassifier) and for ridge maps to embeddings.
 *
 * Closed-form ridge needs no iterative training, so TensorFlow.js is not involved here.
 */

export interface RidgeModel {
  inDim: number;
  outDim: number;
  /** Row-major [inDim, outDim]. */
  weights: Float64Array;
  bias: Float64Array;
}

/** X: n x d (row-major), Y: n x k. */
export function fitRidge(X: Float64Array, Y: Float64Array, n: number, d: number, k: number, alpha: number): RidgeModel {
  const xMean = new Float64Array(d);
  const yMean = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) xMean[j] += X[i * d + j] / n;
    for (let j = 0; j < k; j++) yMean[j] += Y[i * k + j] / n;
  }
  const Xc = new Float64Array(n * d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) Xc[i * d + j] = X[i * d + j] - xMean[j];
  // K = Xc Xc^T + alpha I (n x n)
  const K = new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = a; b < n; b++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += Xc[a * d + j] * Xc[b * d + j];
      K[a * n + b] = s;
      K[b * n + a] = s;
    }
    K[a * n + a] += alpha;
  }
  const Yc = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) Yc[i * k + j] = Y[i * k + j] - yMean[j];
  const A = choleskySolve(K, Yc, n, k); // n x k dual coefficients
  const weights = new Float64Array(d * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) {
    const x = Xc[i * d + j];
    for (let c = 0; c < k; c++) weights[j * k + c] += x * A[i * k + c];
  }
  const bias = new Float64Array(k);
  for (let c = 0; c < k; c++) {
    let s = yMean[c];
    for (let j = 0; j < d; j++) s -= xMean[j] * weights[j * k + c];
    bias[c] = s;
  }
  return { inDim: d, outDim: k, weights, bias };
}

export function predictRidge(model: RidgeModel, x: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(model.bias);
  for (let j = 0; j < model.inDim; j++) {
    const v = x[j];
    for (let c = 0; c < model.outDim; c++) out[c] += v * model.weights[j * model.outDim + c];
  }
  return out;
}

/** Solves A X = B for symmetric positive definite A (n x n), B (n x k). */
function choleskySolve(A: Float64Array, B: Float64Array, n: number, k: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j];
      for (let m = 0; m < j; m++) s -= L[i * n + m] * L[j * n + m];
      if (i === j) {
        if (s <= 0) throw new Error('ridge: matrix not positive definite; increase alpha');
        L[i * n + i] = Math.sqrt(s);
      } else {
        L[i * n + j] = s / L[j * n + j];
      }
    }
  }
  const X = Float64Array.from(B);
  for (let c = 0; c < k; c++) {
    for (let i = 0; i < n; i++) {
      let s = X[i * k + c];
      for (let m = 0; m < i; m++) s -= L[i * n + m] * X[m * k + c];
      X[i * k + c] = s / L[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = X[i * k + c];
      for (let m = i + 1; m < n; m++) s -= L[m * n + i] * X[m * k + c];
      X[i * k + c] = s / L[i * n + i];
    }
  }
  return X;
}
