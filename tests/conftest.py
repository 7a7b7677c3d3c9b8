"""Shared fixtures: every Hugging Face cache in a temp dir, offline; tiny models built once per session;
tiny `Settings`; the live app and a `gradio_client` for it, once per test module. Helpers are in
``tests/helpers.py``; no test module imports another."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub: no real cache, no network, no telemetry.
_SESSION_HOME = tempfile.mkdtemp(prefix="meddx-test-hf-")
os.environ["HF_HOME"] = _SESSION_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["MEDDX_CACHE_DIR"] = os.path.join(_SESSION_HOME, "meddx-cache")
os.environ.pop("MEDDX_MODEL", None)
os.environ.pop("MEDDX_PROBE", None)
os.environ.pop("MEDDX_DEVICE", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # on a shared 2-core machine, 2 threads ran tests 20-60x slower (DESIGN.md)


@pytest.fixture(autouse=True)
def cpu_unless_marked_gpu(request, monkeypatch):
    """Every test runs on the CPU, with the same numbers on any machine, unless it is marked ``gpu``
    (tests/test_device_gpu.py): ``auto`` means the CPU here even where a GPU is present."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path, monkeypatch):
    """Point the Hugging Face hub cache at a per-test temp dir and force offline mode."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A seeded, untrained tiny model folder (``local-dir:`` layout)."""
    from meddx.dev.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """A second tiny model, seeded differently: "another encoder" for heads that must be refused."""
    from meddx.dev.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("other-model"), seed=1)


@pytest.fixture(scope="session")
def planted_model_dir(tmp_path_factory) -> Path:
    """A tiny model trained for seconds to call a planted bright blob a lung nodule."""
    from meddx.dev.tiny import make_tiny_model, train_planted_signal

    folder = make_tiny_model(tmp_path_factory.mktemp("planted-model"), seed=0)
    train_planted_signal(folder, seed=0)
    return folder


OTHER_FAMILIES = ("open_clip", "siglip", "clip")
"""The model families besides the default open_clip + Hugging Face text tower (`meddx.model.families`)."""


@pytest.fixture(scope="session")
def family_model_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """A seeded tiny model of every family, each with its own config and tokenizer files (``local-dir:``)."""
    from meddx.dev.tiny import make_tiny_model

    dirs = {"open_clip_hf": tiny_model_dir}
    for family in OTHER_FAMILIES:
        dirs[family] = make_tiny_model(tmp_path_factory.mktemp(f"family-{family}"), seed=0, family=family)
    return dirs


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs (and the machine's GPUs, where Ray finds any) for one test module."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(
        num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, logging_level=logging.WARNING
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def gradio_tmp(tmp_path_factory) -> Path:
    """Gradio's upload and cache folder for one test module's live app, set before the app is built."""
    return tmp_path_factory.mktemp("gradio-tmp")


@pytest.fixture(scope="session")
def tiny_settings(tiny_model_dir):
    """Settings that use the tiny model, on one thread. The page shows the scores of the tests' drawn films
    at once (they have no lungs: tests/test_anatomy_surfaces.py holds them back with ``hold_back=True``)."""
    from meddx.config import Settings

    return Settings(model=f"local-dir:{tiny_model_dir}", threads=1, hold_back=False)


@pytest.fixture(scope="module")
def app_url(tiny_settings, gradio_tmp) -> Iterator[str]:
    """The real meddx app serving the tiny model in-process on a free port; closed after the module."""
    from tests.helpers import running_app

    with running_app(tiny_settings, gradio_tmp) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    """A `gradio_client.Client` for the module's live app."""
    from tests.helpers import api_client

    return api_client(app_url)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield chromium
        chromium.close()
