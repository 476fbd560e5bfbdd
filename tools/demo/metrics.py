"""Evaluation metrics, with MindEye's settings: PixCorr and SSIM on 425x425 images."""
import numpy as np
from PIL import Image
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

EVAL_SIZE = 425


def _to_eval_size(image_uint8: np.ndarray) -> np.ndarray:
    if image_uint8.shape[:2] == (EVAL_SIZE, EVAL_SIZE):
        return image_uint8
    return np.asarray(Image.fromarray(image_uint8).resize((EVAL_SIZE, EVAL_SIZE), Image.BILINEAR))


def pix_corr(reconstruction: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation of the flattened RGB pixels, both resized to 425x425."""
    a = _to_eval_size(reconstruction).astype(np.float64).ravel()
    b = _to_eval_size(truth).astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def ssim(reconstruction: np.ndarray, truth: np.ndarray) -> float:
    """SSIM of grayscale 425x425 images in [0, 1], Gaussian weights (sigma 1.5), population covariance."""
    a = rgb2gray(_to_eval_size(reconstruction))
    b = rgb2gray(_to_eval_size(truth))
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0))


def retrieval_top1(query: np.ndarray, bank: np.ndarray, truth_index: np.ndarray) -> float:
    """Fraction of queries whose most similar bank row (cosine) is the true one."""
    scores = _normalize(query) @ _normalize(bank).T
    return float(np.mean(scores.argmax(axis=1) == truth_index))


def two_way(query: np.ndarray, bank: np.ndarray, truth_index: np.ndarray) -> float:
    """Mean over queries of the fraction of wrong bank rows scored below the true one."""
    scores = _normalize(query) @ _normalize(bank).T
    true_scores = scores[np.arange(len(query)), truth_index][:, None]
    wins = (scores < true_scores).sum(axis=1)
    return float(np.mean(wins / (bank.shape[0] - 1)))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
