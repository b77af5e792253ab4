"""Per-frame J and F and per-object statistics, computed as the official DAVIS toolkit
(davis2017-evaluation) computes them (docs/method.md, "Scores").

Every function reproduces the toolkit's arithmetic, including its corner cases, so that the
scores printed by this project can be compared one-to-one with published numbers.
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

# The toolkit's boundary tolerance: a fraction of the image diagonal (a metric constant of the
# benchmark, not a tunable hyperparameter).
BOUNDARY_TOLERANCE = 0.008
RECALL_THRESHOLD = 0.5  # a frame "recalls" the object when its score is above this
DECAY_BINS = 4


def disk(radius: int) -> np.ndarray:
    """Disk structuring element as skimage.morphology.disk builds it.

    Returns a (2r+1, 2r+1) uint8 array with 1 at every (y, x) offset from the centre where
    y^2 + x^2 <= r^2 and 0 elsewhere.
    """
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    offsets = np.arange(-radius, radius + 1)
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    return (y * y + x * x <= radius * radius).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask, as the toolkit's `_seg2bmap`.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour
    (neighbours outside the image count as 0). The last row compares only with the east
    neighbour, the last column only with the south one, and the bottom-right pixel is 0.

    seg: (H, W), any dtype; non-zero is foreground. Returns (H, W) bool.
    """
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a 2-D mask (H, W), got shape {seg.shape}")
    seg = seg.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J: intersection over union of boolean masks; 1 where the union is empty.

    gt, pred: (H, W) or stacked (T, H, W); non-zero is foreground.
    Returns float64 of shape () for (H, W) input, (T,) for (T, H, W) input.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"region_similarity: mask shapes differ: gt {gt.shape}, pred {pred.shape}")
    gt = gt.astype(bool)
    pred = pred.astype(bool)
    inter = np.sum(gt & pred, axis=(-2, -1)).astype(np.float64)
    union = np.sum(gt | pred, axis=(-2, -1)).astype(np.float64)
    empty = union == 0
    return np.where(empty, 1.0, inter / np.where(empty, 1.0, union))


def boundary_tolerance_pixels(height: int, width: int, bound_th: float = BOUNDARY_TOLERANCE) -> int:
    """Dilation radius: bound_th itself when >= 1 (pixels), else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUNDARY_TOLERANCE) -> float:
    """F of one frame: boundary precision/recall within a disk-shaped tolerance.

    gt, pred: (H, W); non-zero is foreground. Precision is the share of predicted boundary
    pixels within tolerance of the true boundary, recall the reverse. An empty predicted
    boundary gives P=1, R=0; an empty true boundary P=0, R=1; both empty P=R=1.
    """
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(f"boundary_measure expects two (H, W) masks of one shape, got {gt.shape} and {pred.shape}")
    radius = boundary_tolerance_pixels(gt.shape[0], gt.shape[1], bound_th)
    kernel = disk(radius)
    pred_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    n_pred = int(pred_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
        gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
        precision = np.count_nonzero(pred_boundary & gt_dilated) / n_pred
        recall = np.count_nonzero(gt_boundary & pred_dilated) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def boundary_measure_frames(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUNDARY_TOLERANCE) -> np.ndarray:
    """F of every frame of stacked masks. gt, pred: (T, H, W). Returns (T,) float64."""
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"boundary_measure_frames expects two (T, H, W) stacks of one shape, "
                         f"got {gt.shape} and {pred.shape}")
    return np.array([boundary_measure(g, p, bound_th) for g, p in zip(gt, pred)], dtype=np.float64)


def decay_bin_starts(num_frames: int) -> np.ndarray:
    """Bin edges of the decay statistic: round(linspace(1, T, 5) + 1e-10) - 1 as uint8.

    The toolkit casts the edges to uint8, so for sequences longer than 256 scored frames the
    edges wrap around modulo 256. That is kept on purpose: published numbers include it. The
    cast goes through int64 so the wrap is the same on every platform (a direct float -> uint8
    cast of out-of-range values is undefined in C; on x86 it wraps like this).
    """
    edges = np.round(np.linspace(1, num_frames, DECAY_BINS + 1) + 1e-10) - 1
    return edges.astype(np.int64).astype(np.uint8)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores, as the toolkit's db_statistics.

    values: (T,) per-frame J or F; NaN frames are ignored by the mean, and count as below the
    threshold for the recall (NaN > 0.5 is False). Decay = mean of the first of four bins minus
    mean of the last; bins overlap by one frame as in the toolkit.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"statistics expects per-frame values of shape (T,), got {values.shape}")
    edges = decay_bin_starts(len(values))
    bins = [values[edges[i]:edges[i + 1] + 1] for i in range(DECAY_BINS)]
    with warnings.catch_warnings():
        # All-NaN or empty inputs give NaN, as in the toolkit; no need to warn about it.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > RECALL_THRESHOLD))
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return mean, recall, decay
