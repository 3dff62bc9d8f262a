"""The browser viewer behind view.py.

``viewer.core`` holds everything that needs no browser or server (model folder checks,
PLY -> splat arrays, cameras, segment labels, cluster subsets and their export, picking a
Gaussian under a click ray) as plain functions over arrays; ``viewer.app`` is the thin viser
layer that puts them on screen.
"""
