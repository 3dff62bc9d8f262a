"""2D priors: multi-level segment masks, a binary region of interest, monocular metric depth.

Each module is plain functions over arrays; the scripts ``extract_mask.py`` and
``predepth.py`` are thin command lines over them, and ``scene/priors.py`` loads what they
write. Model packages (``sam2``, ``transformers``) are imported lazily inside the functions
that need them: ``import sam2`` initialises Hydra globally, and ``torchvision`` (which sam2
and the Depth Pro image processor need) is only present on GPU machines here.

Modules:
    io          image listing and loading, atomic writes, scene discovery
    masks       the multi-level mask format (``masks/<stem>.npz`` + label preview)
    classical   weight-free fallbacks: felzenszwalb hierarchy, GrabCut ROI
    sam2_backend  SAM 2.1 checkpoints, automatic multi-level masks, video propagation
    prompts     ROI prompts: JSON files, the interactive OpenCV window
    depth_pro   Depth Pro through transformers, focal-length handling
"""

from scene.errors import SceneError


class PriorError(SceneError):
    """Bad input for a prior stage: one line naming the file and the fix.

    A ``SceneError``, so that a script that loads priors while building its scene reports
    both the same way (``error: <message>``, exit 1).
    """
