"""What the bounded read costs on the normal path: a 3000 x 3000 16-bit DICOM and a 1024 px PNG, read in this
process (`meddx.io.load_study`) and in a time- and memory-limited worker (`meddx.io.bounded`).

    python scripts/bench_read.py [--repeats 9]

Prints the median of each, and the difference (the worker's cost per upload).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meddx.io import load_study
from meddx.io.bounded import load_study_bounded, prestart
from tests.helpers import chest_dataset


def _median_s(read, path: Path, repeats: int) -> float:
    read(path)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="meddx-bench-read-"))
    dicom = folder / "film-3000.dcm"
    chest_dataset(rng.integers(0, 4096, (3000, 3000)).astype(np.uint16), bits_stored=12).save_as(
        dicom, enforce_file_format=True
    )
    png = folder / "film-1024.png"
    Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(png)
    start = time.perf_counter()
    prestart()
    load_study_bounded(png)
    print(f"worker start-up (fork server, once per process): {time.perf_counter() - start:.3f} s")
    for name, path in (("3000 x 3000 16-bit DICOM", dicom), ("1024 px PNG", png)):
        here = _median_s(load_study, path, args.repeats)
        worker = _median_s(load_study_bounded, path, args.repeats)
        print(
            f"{name}: in process {here * 1000:.1f} ms, in the worker {worker * 1000:.1f} ms, "
            f"cost {(worker - here) * 1000:+.1f} ms (median of {args.repeats})"
        )
    for path in (dicom, png):
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
