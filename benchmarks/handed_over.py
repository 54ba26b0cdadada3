"""Time of a call handed to the reference, against the reference on the same rows.

A call that meets a number with its own arithmetic (here: rows of NumPy
``float32`` scalars, as ``[list(row) for row in arr32]`` gives) runs in the
reference, reading each entry through the drop-in's checks.  For the benchmark's
``K = 8`` cases, this prints both times and the median, over seven alternations,
of the ratio handed-over / reference (each time the best of three repeats).

    python benchmarks/handed_over.py
"""
import os
import statistics
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import build_case  # noqa: E402

import specdec_fast  # noqa: E402
from specdec_fast.reference import replaying  # noqa: E402
from specdec_fast.reference import speculative_decode_sim as reference_sim  # noqa: E402

ALTERNATIONS = 7


def main():
    print("| V | regime | reference (ms) | handed over (ms) | ratio (median, range) |")
    print("|---:|---|---:|---:|---|")
    for V in (1024, 32000):
        for regime in ("matched", "mismatched"):
            case = build_case(8, V, regime)
            draft = [[np.float32(x) for x in row] for row in case.draft_list]
            target = [[np.float32(x) for x in row] for row in case.target_list]
            uniforms = [0.3] * 10

            def reference():
                with replaying(uniforms):
                    reference_sim(draft, target, case.tokens, V)

            def handed_over():
                specdec_fast.speculative_decode_sim(draft, target, case.tokens, V,
                                                    uniforms=uniforms)

            calls = 20 if V < 10000 else 3
            ratios, times = [], []
            for _ in range(ALTERNATIONS):
                t_ref = min(timeit.repeat(reference, number=calls, repeat=3)) / calls
                t_fast = min(timeit.repeat(handed_over, number=calls, repeat=3)) / calls
                ratios.append(t_fast / t_ref)
                times.append((t_ref, t_fast))
            t_ref = statistics.median(t for t, _ in times)
            t_fast = statistics.median(t for _, t in times)
            print(f"| {V} | {regime} | {t_ref * 1e3:.2f} | {t_fast * 1e3:.2f} | "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
