"""How fast can the list call be here?  A minimal call against the drop-in, alternated.

``minimal_call.pyx`` does the benchmark's matched call (K = 8, V = 64, lists, every
draft accepted, then the bonus scan) with nothing general about it: the same checks of
what it reads, the same draws, the result dict built the same way.  This script
compiles it (Cython, into a temporary folder), checks it gives the drop-in's dict and
leaves the generator where the drop-in does, then times it, the drop-in and
``call_floor`` in turn, and prints the medians and the drop-in over the minimal call.

    python benchmarks/minimal_call.py [V]          # from the project root; V defaults to 64

Needs Cython, a C compiler and the package importable (``pip install .``).
"""
import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

from Cython.Build import cythonize
from setuptools import Distribution, Extension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build(folder):
    """Compile minimal_call.pyx into ``folder``; return the module."""
    ext = Extension("minimal_call", [os.path.join(HERE, "minimal_call.pyx")],
                    include_dirs=[os.path.join(ROOT, "src")],
                    extra_compile_args=["-O3", "-ffp-contract=off"])
    dist = Distribution({"ext_modules": cythonize(
        [ext], include_path=[os.path.join(ROOT, "src")], quiet=True,
        build_dir=folder, compiler_directives={"language_level": 3, "boundscheck": False,
                                                "wraparound": False, "cdivision": True,
                                                "binding": False})})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = folder
    cmd.build_temp = folder
    dist.run_command("build_ext")
    path = cmd.get_ext_fullpath("minimal_call")
    spec = importlib.util.spec_from_file_location("minimal_call", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("V", nargs="?", type=int, default=64)
    V = parser.parse_args().V
    sys.path.insert(0, HERE)
    from conftest import build_case

    import specdec_fast
    from specdec_fast import Rng
    from specdec_fast._core import call_floor

    with tempfile.TemporaryDirectory() as folder:
        minimal = build(folder).minimal_call
    case = build_case(8, V, "matched")
    d, t, k = case.draft_list, case.target_list, case.tokens
    fast = specdec_fast.speculative_decode_sim
    for seed in range(200):
        a, b = Rng(seed), Rng(seed)
        want = fast(d, t, k, V, rng=a)
        got = minimal(d, t, k, V, rng=b)
        assert got == want and list(got) == list(want) and a.state == b.state, (seed, got, want)

    rng = Rng(1)

    def per_call(fn, calls=20000):
        start = time.perf_counter()
        for _ in range(calls):
            fn(d, t, k, V, rng=rng)
        return (time.perf_counter() - start) / calls

    times = {"call_floor": [], "minimal_call": [], "speculative_decode_sim": []}
    ratios = []
    for _ in range(15):
        times["call_floor"].append(per_call(call_floor))
        times["minimal_call"].append(per_call(minimal))
        times["speculative_decode_sim"].append(per_call(fast))
        ratios.append(times["speculative_decode_sim"][-1] / times["minimal_call"][-1])
    print(f"K=8, V={V}, matched, lists: medians of 15 alternated rounds of 20,000 calls")
    for name, values in times.items():
        print(f"  {name:24s} {statistics.median(values) * 1e9:7.1f} ns per call")
    print(f"  drop-in / minimal call   {statistics.median(ratios):7.3f}")


if __name__ == "__main__":
    main()
