"""Dense initialisation from the training views alone: plane-sweep stereo with known poses
(``plane_sweep``), geometric consistency check and fusion (``fusion``), the stage behind
``python -m mvs`` (``stage``). No learned weights; docs/COLMAP.md, "Dense initialisation".
"""
