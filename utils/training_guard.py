"""Stopping a training run without losing it: Ctrl-C / SIGTERM, and divergence.

train.py's loop uses three pieces, none of which waits for the GPU on its own:

- ``StopSignals.iterations``: the loop's iteration numbers, which end early once SIGINT or
  SIGTERM has arrived. The handler only records the signal; the loop sees it at the next
  iteration boundary (one Python attribute read), leaves, and saves the Gaussians and a
  checkpoint outside the handler. The previous handlers are back as soon as the loop ends,
  so a second Ctrl-C while that state is being saved stops the process as usual.
- ``param_norms``: the L2 norm of each parameter tensor as device scalars (one fused
  ``torch._foreach_norm`` launch on the GPU, a vectorised pass per tensor on the CPU),
  stacked into the loss read-back that train.py makes once per log interval anyway. A NaN
  or an infinity anywhere in a tensor makes its norm non-finite. (So would a sum of
  squares beyond float32's range, about 3e38, which takes values near 1e15: diverged
  anyway. The max norm cannot overflow, but PyTorch's CPU kernel for it is 30 times slower.)
- ``LastGoodState``: device-side copies of the parameters taken at each check that found
  everything finite (``torch._foreach_copy_``, new buffers only when densification changed
  the count), so that a diverged run can still save the last state known to be good.

``TrainingStopped`` carries what train.py's ``main`` prints (one line) and its exit status:
``128 + signal number`` after a signal (130 for SIGINT, 143 for SIGTERM), 1 after
divergence.
"""

from __future__ import annotations

import math
import shlex
import signal
import threading
from collections.abc import Iterator

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """A run stopped early after saving its state; ``checkpoint`` resumes it."""

    def __init__(self, message: str, exit_code: int, checkpoint: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint = checkpoint


class StopSignals:
    """Turns SIGINT and SIGTERM into a request to stop at the next iteration boundary.

    ``received`` is the number of the first such signal, or None; ``stopped_before`` the
    iteration that ``iterations`` did not start because of it (None when the loop ran to
    its end). Handlers are installed only from the main thread (Python delivers signals
    there alone); elsewhere the loop runs unguarded.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped_before: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum

    def iterations(self, first: int, last: int) -> Iterator[int]:
        """``first, ..., last`` while no stop signal has arrived; the handlers are
        installed for exactly as long as the loop runs."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            for iteration in range(first, last + 1):
                if self.received is not None:
                    self.stopped_before = iteration
                    return
                yield iteration
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + int(self.received or 0)


def param_norms(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The L2 norm of each tensor, as 0-d tensors on its device (no host sync): NaN when
    it holds a NaN, inf when it holds an infinity, finite otherwise."""
    names = list(tensors)
    if not names:
        return {}
    return dict(zip(names, torch._foreach_norm([tensors[k].detach() for k in names])))


def first_nonfinite(values: dict[str, float]) -> str | None:
    """``"<name> is NaN"`` (or ``is infinite``) for the first non-finite value, else None."""
    for name, value in values.items():
        if not math.isfinite(value):
            return f"{name} is {'NaN' if math.isnan(value) else 'infinite'}"
    return None


class LastGoodState:
    """A device-side copy of a model's parameters and extras at one iteration.

    ``take`` copies into buffers kept from the previous call (one fused copy), allocating
    new ones only when a tensor's shape or dtype changed (densification, pruning);
    ``capture`` gives the copy in ``GaussianModel.capture``'s format.
    """

    def __init__(self) -> None:
        self.iteration: int | None = None
        self.max_sh_degree = 0
        self.active_sh_degree = 0
        self.params: dict[str, torch.Tensor] = {}
        self.extras: dict[str, torch.Tensor] = {}

    @staticmethod
    def _copy_into(buffers: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> dict:
        out = {}
        for key, src in source.items():
            buf = buffers.get(key)
            same = buf is not None and buf.shape == src.shape and buf.dtype == src.dtype
            out[key] = buf if same else torch.empty_like(src, requires_grad=False)
        if out:
            torch._foreach_copy_(list(out.values()), [t.detach() for t in source.values()])
        return out

    @torch.no_grad()
    def take(self, model, iteration: int, active_sh_degree: int) -> None:
        """Copy ``model``'s tensors as the state after ``iteration`` iterations, whose SH
        degree was ``active_sh_degree``."""
        self.params = self._copy_into(self.params, model.params)
        self.extras = self._copy_into(self.extras, model.extras)
        self.iteration = iteration
        self.max_sh_degree = model.max_sh_degree
        self.active_sh_degree = active_sh_degree

    def capture(self) -> dict:
        if self.iteration is None:
            raise RuntimeError("LastGoodState.capture before any take()")
        return {
            "max_sh_degree": self.max_sh_degree,
            "active_sh_degree": self.active_sh_degree,
            "params": dict(self.params),
            "extras": dict(self.extras),
        }


def resume_command(argv: list[str], checkpoint: str, model_path: str) -> str:
    """``python train.py <argv> --start_checkpoint <checkpoint>``, shell-quoted: ``argv``
    without an earlier ``--start_checkpoint``, and with ``-m`` when it had none (the model
    folder then got a random name)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--start_checkpoint":
            skip = True
        elif not arg.startswith("--start_checkpoint="):
            kept.append(arg)
    if not any(a in ("-m", "--model_path") or a.startswith("--model_path=") for a in kept):
        kept += ["-m", model_path]
    return shlex.join(["python", "train.py", *kept, "--start_checkpoint", checkpoint])
