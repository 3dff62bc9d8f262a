"""3D segmentation of a trained Gaussian model (``segment.py``; docs/SEGMENTATION.md).

The stage works on a FROZEN RGB model: it never moves a Gaussian, it only attaches a feature
vector to each one and groups Gaussians by those features and by their positions.

Modules (each a set of functions over arrays/tensors; ``segment.py`` is the thin CLI):

=================  ==========================================================================
``errors``         ``SegmentationError``: one-line bad-input errors (a ``SceneError``)
``params``         the flag groups of segment.py (ParamGroup subclasses)
``features``       ``python -m segmentation.features``: weight-free 2D feature maps from the
                   mask hierarchy of extract_mask.py; loading ``features/<stem>.npy``
``pca``            a joint PCA over every pixel of every view (torch), and PCA-to-RGB
``distill``        per-Gaussian features trained through ``render(..., features=f)`` (one
                   pass for all channels), Adam on the features only
``sources``        feature sources per Gaussian (distilled, feature-field side file, npz)
                   and their softmax-weighted fusion (SAS-style, per source / per cluster)
``cluster``        opacity-weighted (MiniBatch)KMeans on [w_x xyz / scale, w_f f]
``region_grow``    kNN graph (cKDTree on CPU, torch on GPU) and ISRF bilateral growing as a
                   vectorised BFS frontier; picking the Gaussian under a 2D click
``metrics``        one confusion matrix, Hungarian / majority matching, mIoU, mAcc, fg IoU
``outputs``        label renders, overlays, per-cluster PLYs, the selected segment
=================  ==========================================================================
"""

from segmentation.errors import SegmentationError

__all__ = ["SegmentationError"]
