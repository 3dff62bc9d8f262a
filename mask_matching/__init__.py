"""Mask matching (RegSegField, seeds digest section 1): segments of the training views
matched across views, as learned multi-level descriptors and as a union-find baseline.

Each training view's masks (``masks/<stem>.npz``) are numbered per view; a descriptor
network maps every pixel's mask-membership vector to L = 4 levels of D = 16 unit
descriptors shared by all views, trained so that COLMAP-matched pixels get equal
descriptors and, within a view, pixels sharing more than l masks group at level l while
the rest separate. ``python -m mask_matching -s <scene> --n_views N`` writes the model, the
per-view descriptor maps, previews and a report under ``<scene>/mask_matching/``.

Modules (pure functions; only ``stage`` and ``__main__`` write files):
    inputs      multi-hot membership codes of a view (eroded "uncovered" channel first)
    network     ``DescriptorNet``: per-view heads, shared trunk, identity-initialised levels
    losses      per-level distance / agreement, the match loss, the pull/push hierarchy loss
    union_find  the discrete matching (variant A), fast baseline and diagnostic
    data        a scene's training views, masks and matches (bad input -> SceneError)
    fit         full-batch training (Adam 1e-3, ExponentialLR 0.995, 500 epochs)
    maps        the output folder, and the loaders for training
    report      agreement per level, global segments, preview pictures
    stage       the CLI's whole run

API for training (issue 14, items 2-5)::

    maps = load_descriptor_maps(scene, train_names, sizes={name: (H, W)}, device=dev)
    desc, inside = maps[name].sample(xy)        # [N, L, D], [N] bool
    dense = maps[name].dense()                  # [L, D, H, W]
    level_distance(f, g)                        # [..., L]  mean_D (f - g)^2
    level_agreement(f, g, tol=0.02)             # [..., L]  bool
    views_agree(f, g, tol=0.02)                 # [...]     bool, best level
    target_views(scene, train_names, source, k=6)   # most matches first, never the source
    net, views = load_descriptor_model(scene, train_names, device=dev)   # refinement
    tables = descriptor_tables(net, views, dev)  # per view [U, L, D]; map = table[code_index]
"""

from mask_matching.data import MatchingInput, load_matching_input, resolve_train_views
from mask_matching.fit import FitSettings, descriptor_tables, fit
from mask_matching.inputs import MaskMatchingWarning, ViewMasks, resize_index, view_masks
from mask_matching.losses import (
    AGREE_TOL,
    hierarchy_loss,
    hierarchy_terms,
    level_agreement,
    level_distance,
    match_loss,
    views_agree,
)
from mask_matching.maps import (
    DescriptorMap,
    check_meta,
    load_descriptor_maps,
    load_descriptor_model,
    load_meta,
    target_views,
)
from mask_matching.network import DescriptorNet
from mask_matching.union_find import UnionFind, union_find_labels, union_find_views

__all__ = [
    "AGREE_TOL",
    "DescriptorMap",
    "DescriptorNet",
    "FitSettings",
    "MaskMatchingWarning",
    "MatchingInput",
    "UnionFind",
    "ViewMasks",
    "check_meta",
    "descriptor_tables",
    "fit",
    "hierarchy_loss",
    "hierarchy_terms",
    "level_agreement",
    "level_distance",
    "load_descriptor_maps",
    "load_descriptor_model",
    "load_matching_input",
    "load_meta",
    "match_loss",
    "resize_index",
    "resolve_train_views",
    "target_views",
    "union_find_labels",
    "union_find_views",
    "view_masks",
    "views_agree",
]
