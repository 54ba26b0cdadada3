"""Instructions per call of the drop-in and of ``call_floor``, counted with callgrind.

Times on this VM drift by tens of percent; instruction counts do not, so they
are how the fixed cost of a call is compared between builds.  For each input
kind, the script runs itself under ``valgrind --tool=callgrind``, counting only
inside the compiled function (``--toggle-collect``), for two numbers of calls;
the difference over the difference in calls is the cost of one call, start-up
excluded.  The inputs are the benchmark's ``K = 8``, matched case (all drafts
accepted, then the bonus scan); the function's own Python call overhead and the
freeing of the result, outside the compiled function, are not counted.  String
hashing is fixed (``PYTHONHASHSEED=0``): with random hashes the dict lookups, and
so the counts, differ by tens of instructions from one process to the next.

    python benchmarks/call_instructions.py [V]          # V defaults to 64

Needs valgrind and nm (binutils) on the PATH and the package importable.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

CALLS = (4000, 12000)
KINDS = ("floor", "list", "numpy")


def run_calls(kind, V, calls):
    """The measured loop (run under callgrind by ``count``)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import build_case

    import specdec_fast
    from specdec_fast import Rng
    from specdec_fast._core import call_floor

    case = build_case(8, V, "matched")
    if kind == "numpy":
        d, t, k = case.draft_array, case.target_array, case.tokens
    else:
        d, t, k = case.draft_list, case.target_list, case.tokens
    fn = call_floor if kind == "floor" else specdec_fast.speculative_decode_sim
    rng = Rng(1)
    for _ in range(calls):
        fn(d, t, k, V, rng=rng)


def wrapper_symbol(name):
    """The C symbol of the compiled Python-callable wrapper of ``_core.<name>``."""
    import specdec_fast._core as core
    out = subprocess.run(["nm", core.__file__], capture_output=True, text=True, check=True)
    found = re.findall(rf"\b(__pyx_pw_\w*_core_\d+{name})\b", out.stdout)
    if len(set(found)) != 1:
        raise SystemExit(f"expected one wrapper symbol for {name}, found {sorted(set(found))}")
    return found[0]


def count(kind, V):
    symbol = wrapper_symbol("call_floor" if kind == "floor" else "speculative_decode_sim")
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for calls in CALLS:
            out_file = os.path.join(tmp, f"callgrind.{calls}")
            log = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--toggle-collect={symbol}",
                 f"--callgrind-out-file={out_file}", sys.executable, os.path.abspath(__file__),
                 "--run", kind, str(V), str(calls)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}).stderr
            refs = re.search(r"I\s+refs:\s+([\d,]+)", log)
            if refs is None:
                raise SystemExit(f"no instruction count in valgrind's output:\n{log}")
            totals.append(int(refs.group(1).replace(",", "")))
    return (totals[1] - totals[0]) / (CALLS[1] - CALLS[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("V", nargs="?", type=int, default=64)
    parser.add_argument("--run", nargs=3, metavar=("KIND", "V", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        kind, V, calls = args.run
        run_calls(kind, int(V), int(calls))
        return
    for kind in KINDS:
        label = "call_floor" if kind == "floor" else f"{kind} input"
        print(f"K=8, V={args.V}, matched, {label}: {count(kind, args.V):,.0f} instructions per call")


if __name__ == "__main__":
    main()
