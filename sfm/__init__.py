"""The COLMAP stage (colmap_match.py): pycolmap pipelines, train-only matches and points,
SPARS3R test-camera registration, and dataset converters.

Import order matters: the pycolmap 4.2.1 wheel links a private copy of zlib and exports its
symbols. If pycolmap loads before the system libz, libz's internal calls bind to that copy
and later compression (np.savez_compressed, PNG writing in Pillow, gzip) corrupts the heap
and aborts the process. Importing Python's zlib first binds libz to itself; every module of
this package imports pycolmap only after this file ran. Code outside the package that
imports pycolmap directly should ``import zlib`` (or torch, which does) first.
"""

import zlib  # noqa: F401  (must precede any pycolmap import; see above)
