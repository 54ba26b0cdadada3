"""Coverage of ``simulate``'s interval for the mean tokens per step.

Draws histograms of tokens per step from the closed-form law
(``theory.emitted_distribution``) over a grid of semantics, bonus row, K,
alpha and trials, and counts how often the interval holds the true mean: the
normal interval from the sample variance (what ``simulate`` reported before),
and ``simulate``'s own (``_mean_interval``: the normal one widened to take in
an Agresti-Coull-style one).  Prints the worst cases of each and how much
wider the new one is.  Fixed seed; about a minute::

    python benchmarks/interval_coverage.py [--confidence 0.95] [--replicates 20000]
"""
import argparse
import statistics

import numpy as np

from specdec_fast import theory
from specdec_fast.simulate import _mean_interval

GRID = dict(semantics=("exact", "reference"), bonus=(True, False), k=(1, 2, 4, 8, 16, 32),
            alpha=(0.3, 0.5, 0.8, 0.9, 0.99, 0.999, 0.9999),
            trials=(30, 100, 300, 2000, 20_000, 1_000_000))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--replicates", type=int, default=20_000)
    args = parser.parse_args()
    z = -statistics.NormalDist().inv_cdf((1 - args.confidence) / 2)
    g = np.random.default_rng(3)
    rows = []
    for semantics in GRID["semantics"]:
        for bonus in GRID["bonus"]:
            for k in GRID["k"]:
                for alpha in GRID["alpha"]:
                    p = theory.emitted_distribution(np.full((1, k), alpha), semantics=semantics,
                                                    bonus=bonus)
                    counts = np.arange(k + 2, dtype=np.float64)
                    truth = float(p[0] @ counts)
                    possible = np.repeat(p > 0, args.replicates, axis=0)
                    for trials in GRID["trials"]:
                        hist = g.multinomial(trials, p[0], size=args.replicates)
                        mean, ci = _mean_interval(hist, counts, possible, z)
                        var = (hist * (counts - mean[:, None]) ** 2).sum(-1) / (trials - 1)
                        half = z * np.sqrt(var / trials)
                        normal = np.mean((mean - half <= truth) & (truth <= mean + half))
                        new = np.mean((ci[:, 0] <= truth) & (truth <= ci[:, 1]))
                        with np.errstate(invalid="ignore", divide="ignore"):
                            width = np.median(np.diff(ci, axis=-1)[:, 0] / (2 * half))
                        rows.append((new, normal, width, semantics, bonus, k, alpha, trials))
    print(f"{len(rows)} cases, level {args.confidence}, {args.replicates} replicates each")
    print("coverage: new interval / normal interval; median width new / normal; case")
    for title, key in (("lowest coverage, new interval", lambda r: r[0]),
                       ("lowest coverage, normal interval", lambda r: r[1])):
        print(title)
        for r in sorted(rows, key=key)[:5]:
            print(f"  {r[0]:.4f} / {r[1]:.4f}; width {r[2]:.3g}; "
                  f"{r[3]}, bonus={r[4]}, K={r[5]}, alpha={r[6]}, trials={r[7]:,}")
    for trials in GRID["trials"]:
        usual = [r for r in rows if r[7] == trials and r[1] >= args.confidence - 0.01
                 and np.isfinite(r[2])]     # not where both have zero width (a fixed count)
        print(f"trials={trials:>9,}: where the normal interval covers, width new / normal "
              f"{min(r[2] for r in usual):.3f}-{max(r[2] for r in usual):.3f}")


if __name__ == "__main__":
    main()
