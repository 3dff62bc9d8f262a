"""Segmentation scores from ONE confusion matrix accumulated over every evaluated view.

Why one matrix: averaging per-view IoUs over-weights views where a class covers a few pixels;
summing the counts first (as Semantic Gaussians / SAS do for ScanNet) weights every pixel the
same. The matrix is ``conf[g, p]`` = number of pixels with ground-truth label ``g`` and
predicted cluster ``p``.

Clusters from KMeans are unnamed (cluster 3 means nothing), so they are first matched to
ground-truth labels:

- ``hungarian``: one cluster per label, the assignment maximising the matched pixels
  (``scipy.optimize.linear_sum_assignment``). Surplus clusters stay unmatched and all their
  pixels count as errors, so over-segmentation is penalised.
- ``majority``: every cluster goes to the label it overlaps most (many-to-one): the score of
  an over-segmentation whose parts are each pure.
- ``none``: cluster ids already are label ids (named clusters).

Then, over the G ground-truth labels, with TP_c the matched pixels of label c:

    IoU_c = TP_c / (TP_c + FP_c + FN_c)      Acc_c = TP_c / (pixels of label c)
    mIoU = mean_c IoU_c                      mAcc = mean_c Acc_c

Labels absent from the ground truth of every evaluated view are left out of the means.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCHING = ("hungarian", "majority", "none")


def confusion_matrix(
    gt: np.ndarray,  # [H, W] int ground-truth labels (< 0: ignored)
    pred: np.ndarray,  # [H, W] int predicted clusters (< 0: ignored)
    n_gt: int,
    n_pred: int,
) -> np.ndarray:  # [n_gt, n_pred] int64
    """Pixel counts of (gt label, predicted cluster) pairs in one view."""
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in size: gt {gt.shape} vs pred {pred.shape}")
    g = np.asarray(gt, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    ok = (g >= 0) & (p >= 0) & (g < n_gt) & (p < n_pred)
    flat = np.bincount(g[ok] * n_pred + p[ok], minlength=n_gt * n_pred)
    return flat.reshape(n_gt, n_pred)


def match_clusters(conf: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """Label of every predicted cluster: [n_pred] int, -1 for an unmatched cluster.

    ``conf`` is [n_gt, n_pred]; see the module docstring for the methods.
    """
    n_gt, n_pred = conf.shape
    if method == "none":
        return np.where(np.arange(n_pred) < n_gt, np.arange(n_pred), -1)
    if method == "majority":
        out = conf.argmax(0).astype(np.int64)
        out[conf.sum(0) == 0] = -1  # a cluster that never shows up matches nothing
        return out
    if method != "hungarian":
        raise ValueError(f"unknown matching {method!r}; choose one of {MATCHING}")
    rows, cols = linear_sum_assignment(-conf.astype(np.float64))  # maximise matched pixels
    out = np.full(n_pred, -1, dtype=np.int64)
    out[cols] = rows
    return out


def scores_from_confusion(conf: np.ndarray, mapping: np.ndarray) -> dict:
    """mIoU, mAcc, overall accuracy and per-label IoU/Acc from [n_gt, n_pred] counts and a
    cluster -> label ``mapping`` [n_pred] (-1: unmatched, every pixel of it an error)."""
    n_gt = conf.shape[0]
    merged = np.zeros((n_gt, n_gt + 1), dtype=np.int64)  # last column: unmatched clusters
    for p, label in enumerate(mapping):
        merged[:, label if label >= 0 else n_gt] += conf[:, p]
    tp = np.diag(merged[:, :n_gt]).astype(np.float64)
    gt_total = merged.sum(1).astype(np.float64)  # pixels of each label
    pred_total = merged[:, :n_gt].sum(0).astype(np.float64)  # pixels predicted as each label
    present = gt_total > 0
    union = gt_total + pred_total - tp
    iou = np.divide(tp, union, out=np.zeros(n_gt), where=union > 0)
    acc = np.divide(tp, gt_total, out=np.zeros(n_gt), where=gt_total > 0)
    total = merged.sum()
    return {
        "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
        "mAcc": float(acc[present].mean()) if present.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "per_label_iou": {int(c): float(iou[c]) for c in np.flatnonzero(present)},
        "per_label_acc": {int(c): float(acc[c]) for c in np.flatnonzero(present)},
        "mapping": {int(p): int(m) for p, m in enumerate(mapping)},
    }


def segmentation_scores(
    gts: list[np.ndarray], preds: list[np.ndarray], n_pred: int, method: str = "hungarian"
) -> dict:
    """Scores over a list of views: one confusion matrix, one matching, one set of numbers.

    ``gts[i]`` and ``preds[i]`` are [H, W] int maps of view i (negative values ignored);
    ``n_pred`` is the number of predicted clusters.
    """
    if not gts:
        raise ValueError("no views to score")
    n_gt = int(max(int(g.max()) for g in gts)) + 1
    conf = sum(confusion_matrix(g, p, n_gt, n_pred) for g, p in zip(gts, preds))
    mapping = match_clusters(conf, method)
    out = scores_from_confusion(conf, mapping)
    out["matching"] = method
    out["confusion"] = conf.tolist()
    return out


def foreground_iou(gt_masks: list[np.ndarray], pred_masks: list[np.ndarray]) -> float:
    """IoU of the union of predicted foreground pixels with the binary ground truth, summed
    over every view before dividing (one global ratio, like the confusion matrix)."""
    inter = union = 0
    for g, p in zip(gt_masks, pred_masks):
        g, p = np.asarray(g, bool), np.asarray(p, bool)
        if g.shape != p.shape:
            raise ValueError(f"mask sizes differ: gt {g.shape} vs pred {p.shape}")
        inter += int(np.count_nonzero(g & p))
        union += int(np.count_nonzero(g | p))
    return inter / union if union else float("nan")


def foreground_clusters(
    gt_masks: list[np.ndarray], preds: list[np.ndarray], n_pred: int
) -> np.ndarray:
    """Clusters that are foreground: [n_pred] bool, true where more than half of a cluster's
    rendered pixels lie inside the binary ground-truth mask (majority matching to {bg, fg})."""
    conf = sum(
        confusion_matrix(np.asarray(g, np.int64), p, 2, n_pred) for g, p in zip(gt_masks, preds)
    )
    return conf[1] > conf[0]
