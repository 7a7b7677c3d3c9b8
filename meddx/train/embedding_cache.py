"""Image embeddings for training and evaluation, computed once in batches and cached on disk.

An embedding is stored at ``ROOT/<model>/<ab>/<digest>.safetensors`` (a float32 ``embedding`` of shape
(D,)), where ``<model>`` hashes the encoder's identity (`meddx.model.head.EncoderIdentity.key`: Hub repo and
revision, or the weights' sha256 for an unversioned folder) with the cache format, and ``<digest>`` is
the sha256 of the image file's bytes. Renaming or moving files keeps their embeddings; changing a file,
the model or its revision does not. ``ROOT`` is `meddx.config.Settings.embedding_cache_dir`
(``$MEDDX_CACHE_DIR/embeddings``, default ``~/.cache/meddx/embeddings``) unless given. Files are
written atomically; an unreadable entry is computed again. Nothing but digests and numbers is stored.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from meddx.errors import InputError
from meddx.io import load_study
from meddx.model.encoder import Encoder
from meddx.model.head import EncoderIdentity, encoder_identity

CACHE_FORMAT = "meddx-embedding-v1"


class EmbeddingCache:
    """Embeddings on disk, keyed by encoder identity and image content.

    Args:
        root: The cache folder (`meddx.config.Settings.embedding_cache_dir`).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def _path(self, identity: EncoderIdentity, digest: str) -> Path:
        model = hashlib.sha256(f"{CACHE_FORMAT}\n{identity.key}".encode()).hexdigest()[:24]
        return self.root / model / digest[:2] / f"{digest}.safetensors"

    def get(self, identity: EncoderIdentity, digest: str) -> torch.Tensor | None:
        """The cached embedding of an image, or None."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(identity, digest)
        try:
            embedding = load_file(str(path))["embedding"]
        except (OSError, SafetensorError, KeyError):
            return None
        return embedding if embedding.shape == (identity.embed_dim,) else None

    def put(self, identity: EncoderIdentity, digest: str, embedding: torch.Tensor) -> None:
        """Store an embedding (atomically: a reader sees the old state or the whole new file)."""
        from safetensors.torch import save_file

        path = self._path(identity, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            save_file({"embedding": embedding.detach().to(torch.float32).contiguous().clone()}, temporary)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)


def content_digest(source: Path | bytes, name: str) -> str:
    """sha256 of an image file's bytes (streamed from disk for paths)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    try:
        with open(source, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"Cannot read image {name!r} ({exc.strerror}).") from exc


def _pixels(encoder: Encoder, source: Path | bytes, name: str) -> torch.Tensor:
    try:
        study = load_study(source, filename=name)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc
    return encoder.preprocess(study.to_pil("RGB"))[0]


def embed_sources(
    encoder: Encoder,
    sources: Sequence[Path | bytes],
    *,
    names: Sequence[str] | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """Unit image embeddings (N, D) for image files or bytes, in order.

    Images are read with `meddx.io.load_study` (so DICOM works) and preprocessed like the pipeline.
    Cached embeddings are reused; the rest are computed in batches (a tqdm bar on stderr when
    ``progress``) and cached. Identical files are embedded once.

    Raises:
        InputError: an image cannot be read (the message names it).
    """
    from tqdm.auto import tqdm

    names = list(names) if names is not None else [f"image {i}" for i in range(1, len(sources) + 1)]
    identity = encoder_identity(encoder)
    digests = [content_digest(s, n) for s, n in zip(sources, names, strict=True)]
    found: dict[str, torch.Tensor] = {}
    if cache is not None:
        for digest in dict.fromkeys(digests):
            embedding = cache.get(identity, digest)
            if embedding is not None:
                found[digest] = embedding
    first = {d: i for i, d in reversed(list(enumerate(digests)))}
    missing = [first[d] for d in dict.fromkeys(digests) if d not in found]
    with tqdm(
        total=len(missing), desc="embedding", unit="image", file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            pixels = torch.stack([_pixels(encoder, sources[i], names[i]) for i in batch])
            with torch.inference_mode():
                embeddings = encoder.embed_images(pixels)
            for i, embedding in zip(batch, embeddings, strict=True):
                found[digests[i]] = embedding.clone()
                if cache is not None:
                    cache.put(identity, digests[i], embedding)
            bar.update(len(batch))
    if not digests:
        return torch.empty(0, identity.embed_dim)
    return torch.stack([found[d] for d in digests]).to(torch.float32)
