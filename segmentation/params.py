"""The flag groups of segment.py (argparse groups; run ``python segment.py --help``).

They live here rather than in arguments/ because only segment.py reads them; names avoid the
training flags stored in ``<model>/cfg_args`` (segment.py merges that file under the command
line, 3DGS style), except ``--eval``, which segment.py reads from the command line alone.
"""

from __future__ import annotations

from argparse import ArgumentParser


def add_segmentation_args(parser: ArgumentParser) -> None:
    """Add the Feature, Fusion, Clustering, Region-growing and Evaluation groups."""
    f = parser.add_argument_group("Segmentation Features")
    f.add_argument(
        "--feature_sources",
        nargs="+",
        default=["auto"],
        help="per-Gaussian feature sources, in order: distilled (2D maps of "
        "<scene>/features distilled into the model), field (features_group of "
        "point_cloud_extras.npz, the issue-14 feature field), npz:<path>:<key>; "
        "auto = distilled when <scene>/features exists, else field",
    )
    f.add_argument(
        "--feature_dim",
        type=int,
        default=32,
        help="channels kept by the joint PCA of the 2D maps (16-64)",
    )
    f.add_argument("--feature_iters", type=int, default=1500, help="distillation steps")
    f.add_argument("--feature_lr", type=float, default=0.01, help="Adam lr of the features")
    f.add_argument("--feature_loss", choices=["l1", "l2"], default="l1")
    f.add_argument(
        "--redistill",
        action="store_true",
        help="ignore segments/features_distilled.npz and distil again",
    )
    f.add_argument(
        "--field_level",
        type=int,
        default=-1,
        help="level of the feature field (-1: all levels concatenated)",
    )

    u = parser.add_argument_group("Segmentation Fusion")
    u.add_argument(
        "--source_weights",
        type=float,
        nargs="+",
        default=None,
        help="one logit per feature source (softmax with --fusion_temperature)",
    )
    u.add_argument("--fusion_temperature", type=float, default=1.0, help="softmax temperature")
    u.add_argument(
        "--cluster_source_weights",
        default="",
        help=".npy [K', S] per-cluster logits added to --source_weights, looked "
        "up through a first KMeans (K' clusters) of the equally weighted fusion",
    )
    u.add_argument("--fusion", choices=["concat", "sum"], default="concat")

    c = parser.add_argument_group("Segmentation Clustering")
    c.add_argument("--k", type=int, default=10, help="number of clusters (geometric: 1 + objects)")
    c.add_argument(
        "--cluster",
        choices=["kmeans", "geometric"],
        default="kmeans",
        help="kmeans: KMeans on [xyz, features]; geometric: the support plane (RANSAC) and "
        "the k-1 largest connected objects on it (DBSCAN), no features needed "
        "(segmentation/geometric.py)",
    )
    c.add_argument(
        "--plane_threshold",
        type=float,
        default=0.01,
        help="geometric: distance to the support plane, as a fraction of the scene scale",
    )
    c.add_argument(
        "--object_eps",
        type=float,
        default=0.02,
        help="geometric: DBSCAN radius joining Gaussians of one object (fraction of the scene "
        "scale)",
    )
    c.add_argument("--w_xyz", type=float, default=1.0, help="weight of xyz / scene_scale")
    c.add_argument("--w_feat", type=float, default=1.0, help="weight of the features")
    c.add_argument(
        "--minibatch_above",
        type=int,
        default=200_000,
        help="MiniBatchKMeans above this many Gaussians",
    )
    c.add_argument("--cluster_seed", type=int, default=0, help="KMeans random state")
    c.add_argument(
        "--select",
        type=int,
        default=-1,
        help="cluster to extract as the selected segment (-1: none)",
    )

    g = parser.add_argument_group("Segmentation Region Growing (ISRF)")
    g.add_argument(
        "--click",
        nargs=3,
        metavar=("VIEW", "X", "Y"),
        default=None,
        help="grow from the Gaussian under pixel (X, Y) of VIEW (image name, stem "
        "or index in the sorted train+test list); pixels at training resolution",
    )
    g.add_argument(
        "--seed_point",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="grow from the Gaussian nearest to this 3D point",
    )
    g.add_argument(
        "--seed_cluster",
        type=int,
        default=-1,
        help="grow from every Gaussian of this KMeans cluster",
    )
    g.add_argument("--knn", type=int, default=16, help="neighbours per Gaussian")
    g.add_argument("--sigma_f", type=float, default=0.5, help="feature bandwidth")
    g.add_argument(
        "--sigma_d",
        type=float,
        default=2.0,
        help="distance bandwidth, in median nearest-neighbour spacings",
    )
    g.add_argument("--grow_threshold", type=float, default=0.1, help="join when m_c > this")
    g.add_argument(
        "--grow_min_opacity",
        type=float,
        default=0.005,
        help="Gaussians below this opacity never join",
    )

    g.add_argument(
        "--click_seed",
        choices=["cluster", "gaussian"],
        default="cluster",
        help="what a --click seeds: cluster = the clicked Gaussian's KMeans cluster, in the "
        "clicked one's 3D connected piece (ISRF seeds with every voxel of similar feature); "
        "gaussian = the clicked Gaussian and its most similar neighbours",
    )
    g.add_argument(
        "--keep_component",
        type=float,
        default=2.0,
        help="the selected segment keeps one 3D connected piece: Gaussians closer than this "
        "many median spacings are linked; the piece holding the click, else the most opaque "
        "(segmentation/cleanup.py; 0: off)",
    )

    e = parser.add_argument_group("Segmentation Evaluation")
    e.add_argument(
        "--gt_labels",
        default="",
        help="folder of ground-truth label maps <stem>.png (default <scene>/masks_gt when present)",
    )
    e.add_argument(
        "--match",
        choices=["hungarian", "majority", "none"],
        default="hungarian",
        help="cluster-to-label matching (none: cluster ids are label ids)",
    )
    e.add_argument(
        "--void_label",
        type=int,
        default=0,
        help="ground-truth label of pixels where nothing is rendered (-1: treat "
        "them as one more unnamed cluster)",
    )
    e.add_argument(
        "--min_alpha",
        type=float,
        default=0.5,
        help="pixels below this accumulated opacity are void",
    )
    e.add_argument(
        "--skip_train_renders",
        action="store_true",
        help="render label maps for the test views only",
    )
