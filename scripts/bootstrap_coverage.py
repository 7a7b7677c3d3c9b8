"""How often eval's percentile-bootstrap "95 %" interval of AUROC holds the true AUROC, by sample size: the
measurement behind `meddx.train.sample_size.MIN_PER_CLASS_FOR_INTERVALS`.

    python scripts/bootstrap_coverage.py [--sizes 3 5 8 10 15 20] [--datasets 300] [--resamples 300]

Per size n: ``--datasets`` data sets of n positives and 3n negatives with binormal scores (unit variances,
true AUROC 0.8), each with `meddx.train.metrics.bootstrap_intervals`' interval of AUROC (``--resamples``
resamples); prints the share of intervals holding 0.8, their median width, and the Wilson 95 % interval of
a perfect n of n (`meddx.train.calibrate.wilson_interval`). NumPy only; about 80 s of CPU.
"""

from __future__ import annotations

import argparse
import math
from statistics import NormalDist

import numpy as np

from meddx.train.calibrate import wilson_interval
from meddx.train.metrics import bootstrap_intervals

TRUE_AUROC = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 8, 10, 15, 20])
    parser.add_argument("--datasets", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shift = NormalDist().inv_cdf(TRUE_AUROC) * math.sqrt(2)  # binormal: AUROC = Phi(shift / sqrt(2))
    rng = np.random.default_rng(args.seed)
    print("positives  negatives  coverage  median width  Wilson n/n")
    for n in args.sizes:
        held, widths = 0, []
        for index in range(args.datasets):
            targets = np.r_[np.ones(n, bool), np.zeros(3 * n, bool)]
            scores = np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, 3 * n)]
            scores = 1 / (1 + np.exp(-scores))  # probabilities, as eval's scores are; AUROC is unchanged
            low, high = bootstrap_intervals(targets, scores, 0.5, resamples=args.resamples, seed=index)[
                "auroc"
            ]
            held += low <= TRUE_AUROC <= high
            widths.append(high - low)
        wilson = wilson_interval(n, n)
        print(
            f"{n:9d}  {3 * n:9d}  {held / args.datasets:8.1%}  {np.median(widths):12.3f}  "
            f"{wilson[0]:.2f} to {wilson[1]:.2f}"
        )


if __name__ == "__main__":
    main()
