"""An open_clip checkpoint's weights: read whole or in part, and parts of a model whose weights can be dropped
and read back from the checkpoint when next needed.

Two parts of the model are needed only sometimes. The text tower (about 440 MB on BiomedCLIP) turns prompts
into text directions, which are cached on disk (`meddx.model.zero_shot`): it is not read at load at all
(`meddx.model.encoder.build_encoder`) and is read from the checkpoint by its first forward, i.e. on a first
start or for a custom label. The PyTorch stem (`meddx.model.stem`) is dropped once an inference-runtime stem
serves the scoring pass, and read back by the first whole-tower method. Both use `ReleasableWeights`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from meddx.errors import ModelError
from meddx.memory import return_freed_memory

if TYPE_CHECKING:
    from meddx.model.encoder import Encoder

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_RELEASABLE: weakref.WeakKeyDictionary[nn.Module, ReleasableWeights] = weakref.WeakKeyDictionary()


def read_checkpoint(
    path: Path, keep: Callable[[str], bool] | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors whose keys ``keep`` accepts (default all), read into memory, and the keys
    left out (not read at all). Keys lose a ``module.`` prefix.

    Read, not memory-mapped: the model then never depends on the file staying as it was. A PyTorch
    ``.bin`` is mapped only while the kept tensors are copied out of it (a legacy-format file is read whole).
    """
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", backend="pread") as f:
            stored = {k.removeprefix("module."): k for k in f.keys()}  # noqa: SIM118
            kept = {k for k in stored if keep is None or keep(k)}
            tensors = {k: f.get_tensor(v) for k, v in stored.items() if k in kept}
            return tensors, [k for k in stored if k not in kept]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        mapped = True
    except RuntimeError:  # the legacy (pre-zip) format cannot be mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = False
    state = {k.removeprefix("module."): v for k, v in state.get("state_dict", state).items()}
    kept = {k for k in state if keep is None or keep(k)}
    tensors = {k: v.clone() if mapped else v for k, v in state.items() if k in kept}
    return tensors, [k for k in state if k not in kept]


class ReleasableWeights:
    """Parameters of one part of the model that can be dropped and read back from the checkpoint.

    Args:
        encoder: the loaded model (its checkpoint is where the weights come back from).
        owner: the module the parameter ``names`` are relative to.
        names: the parameters to release.
        entry: the module whose forward needs them: a pre-hook on it reads them back first.
        released: the parameters were never read (they are on the meta device).
    """

    def __init__(
        self, encoder: Encoder, owner: nn.Module, names: list[str], entry: nn.Module, *, released: bool
    ) -> None:
        self.owner = owner
        self.names = names
        self.prefix = next(k for k, m in encoder.model.named_modules() if m is owner)  # e.g. "visual.trunk"
        self.encoder = weakref.ref(encoder)  # read back onto the device the encoder is on (`device`)
        self.checkpoint = encoder.checkpoint
        # the weights come back only from the file they were read from (none: a sharded checkpoint)
        self.stamp = _stamp(self.checkpoint) if self.checkpoint is not None else None
        self.released = released
        self.lock = threading.Lock()
        entry.register_forward_pre_hook(lambda module, args: self.restore())

    def _set(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            path, _, attr = name.rpartition(".")
            module = self.owner.get_submodule(path) if path else self.owner
            old = module._parameters[attr]
            module._parameters[attr] = nn.Parameter(tensor, requires_grad=old.requires_grad)

    def release(self) -> None:
        """Drop the weights (a no-op if they are not in memory, or if there is no single checkpoint file to
        read them back from: a sharded checkpoint)."""
        if self.checkpoint is None:
            return
        with self.lock, torch.inference_mode(False):
            if not self.released:
                params = dict(self.owner.named_parameters())
                self._set({n: torch.empty_like(params[n], device="meta") for n in self.names})
                self.released = True
                del params
                return_freed_memory()
                owner = self.encoder()
                if owner is not None and owner.device.type == "cuda":
                    torch.cuda.empty_cache()  # hand the freed blocks back to the GPU, not only to PyTorch

    def restore(self) -> None:
        """Read the weights back from the checkpoint (a no-op if they are in memory).

        Raises:
            ModelError: the checkpoint changed or disappeared since the model was loaded.
        """
        # Read outside inference mode (a caller may be in it): inference tensors cannot be parameters that a
        # later attribution backpropagates through.
        with self.lock, torch.inference_mode(False):
            if not self.released:
                return
            if _stamp(self.checkpoint) != self.stamp:
                raise ModelError(
                    f"The model's weights file {self.checkpoint.name} changed or disappeared since meddx "
                    "loaded it, so its released weights cannot be read back: restart meddx."
                )
            keys = {f"{self.prefix}.{n}" if self.prefix else n: n for n in self.names}
            stored, _ = read_checkpoint(self.checkpoint, keep=keys.__contains__)
            owner = self.encoder()
            device = owner.device if owner is not None else torch.device("cpu")
            self._set({keys[k]: tensor.to(device) for k, tensor in stored.items()})
            self.released = False
            log.info(
                "%s weights read from the checkpoint (first use since loaded or released)",
                self.prefix or "text",
            )


def releasable(
    encoder: Encoder,
    owner: nn.Module,
    names: Callable[[], list[str]],
    entry: nn.Module,
    *,
    released: bool = False,
) -> ReleasableWeights:
    """The `ReleasableWeights` of ``owner`` (made on first call, with ``names()`` and ``released``)."""
    with _LOCK:
        if owner not in _RELEASABLE:
            _RELEASABLE[owner] = ReleasableWeights(encoder, owner, names(), entry, released=released)
        return _RELEASABLE[owner]


def resident(owner: nn.Module | None) -> bool:
    """Whether ``owner``'s releasable weights are in memory (True for a module that never released any)."""
    weights = _RELEASABLE.get(owner) if owner is not None else None
    return weights is None or not weights.released


def restore(owner: nn.Module | None) -> None:
    """Read ``owner``'s weights back now, if they were released."""
    weights = _RELEASABLE.get(owner) if owner is not None else None
    if weights is not None:
        weights.restore()


def _stamp(path: Path) -> tuple[int, int] | None:
    """Size and modification time of a file (None: gone), to tell that it is still the one read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
