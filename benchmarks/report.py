"""Summarise a pytest-benchmark JSON of the drop-in benchmarks as Markdown.

Run the benchmarks and the report from the project root with::

    python -m pytest benchmarks --benchmark-json=bench.json -q && python benchmarks/report.py bench.json

(``PYTHONPATH=.`` in front of the first command when the package is built in
place rather than installed.)  That runs every benchmark in ``benchmarks/``;
this report reads only the drop-in ones (``test_dropin.py``, tagged
``extra_info["suite"] == "dropin"``), which alone take about a minute on a
2-core machine::

    python -m pytest benchmarks/test_dropin.py --benchmark-json=bench.json -q && python benchmarks/report.py bench.json

``SPECDEC_BENCH_SCALE=0.1`` in the environment shortens every timing budget
tenfold for a smoke run.

Prints one row per (K, V, regime): the median time per call of ``reference``,
``fast-list`` and ``fast-numpy`` and the ratios reference/fast-list and
reference/fast-numpy, all from the same run.  When the grid was timed in
several passes (``SPECDEC_BENCH_REPEATS``), a time is the median over passes of
each pass's median, and a ratio the median over passes of the ratio within
each pass.  Then, for K=8, the worse regime
at each V (the smaller ratio, the larger fast-numpy time) and whether each of
the stated targets is met:

* NumPy input: >= 400x at V=32000, >= 600x at V=128256, < 1 us per call at V=64;
* list input:  >= 25x at V=32000, >= 20x at V=64.

With ``test_call_floor`` in the run it also prints the call floor (``call_floor``:
the drop-in's arguments and result dict, no work; its fastest round, as befits
a bound) and, per ratio target, the bound reference / floor that no
implementation behind the signature can beat.

Standard library only.
"""
import argparse
import json
import sys

IMPLEMENTATIONS = ("reference", "fast-list", "fast-numpy")
REGIMES = ("matched", "mismatched")
TARGET_K = 8

# (label, implementation, V, kind, threshold): kind "ratio" = reference/impl >= threshold,
# "time_us" = median microseconds per call < threshold.
TARGETS = (
    ("NumPy input, V=32000", "fast-numpy", 32000, "ratio", 400.0),
    ("NumPy input, V=128256", "fast-numpy", 128256, "ratio", 600.0),
    ("NumPy input, V=64", "fast-numpy", 64, "time_us", 1.0),
    ("list input, V=32000", "fast-list", 32000, "ratio", 25.0),
    ("list input, V=64", "fast-list", 64, "ratio", 20.0),
)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def load_medians(path):
    """{(K, V, regime): {implementation: median seconds}} from a pytest-benchmark JSON,
    and {(K, V, regime): {implementation: {pass: median seconds}}}."""
    with open(path) as fh:
        data = json.load(fh)
    passes = {}
    spreads = []   # (IQR / median, benchmark name)
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("suite", "dropin") != "dropin" or "test_dropin" not in bench.get("fullname", "test_dropin"):
            continue  # another suite's benchmark (benchmarks/ holds more than this one)
        try:
            key = (int(info["K"]), int(info["V"]), str(info["regime"]))
            impl = str(info["implementation"])
        except KeyError:
            continue  # not one of ours
        stats = bench["stats"]
        repeat = int(info.get("repeat", 0))
        # A round timed a loop of calls (older runs: one call per pytest-benchmark iteration).
        calls = int(info.get("calls_per_round", 1))
        # The call floor bounds what is possible: its fastest round, not its median.
        value = stats["min"] if impl == "call-floor" else stats["median"]
        passes.setdefault(key, {}).setdefault(impl, {})[repeat] = float(value) / calls
        if stats["median"] > 0:
            spreads.append((float(stats["iqr"]) / float(stats["median"]), bench.get("name", "?")))
    data["_spreads"] = sorted(spreads, reverse=True)
    medians = {key: {impl: median(by_pass.values()) for impl, by_pass in row.items()}
               for key, row in passes.items()}
    data["_passes"] = passes
    return data, medians


def fmt_us(seconds):
    if seconds is None:
        return "n/a"
    us = seconds * 1e6
    if us < 10:
        return f"{us:.3f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_ratio(ratio):
    if ratio is None:
        return "n/a"
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def ratio(row, impl):
    """reference / impl: the median over passes of the ratio within each pass."""
    ref, fast = row.get("reference", {}), row.get(impl, {})
    within = [ref[r] / fast[r] for r in ref if r in fast and fast[r] > 0]
    return median(within) if within else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="file written by pytest --benchmark-json=FILE")
    args = parser.parse_args(argv)

    data, medians = load_medians(args.json)
    passes = data["_passes"]
    if not medians:
        print(f"{args.json}: no drop-in benchmark results found", file=sys.stderr)
        return 1

    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}) or {}
    print(f"Run {data.get('datetime', '?')}, Python {machine.get('python_version', '?')}, "
          f"{cpu.get('brand_raw', machine.get('processor', '?'))}, "
          f"{cpu.get('count', '?')} CPUs.  Medians per call, same run.")
    npasses = max((len(by_pass) for row in passes.values() for by_pass in row.values()), default=1)
    if npasses > 1:
        print(f"The grid was timed in {npasses} passes: times are medians over passes of each "
              f"pass's median, ratios medians over passes of the ratio within a pass.")
    info = data.get("specdec_fast")
    if info:
        builds = ", ".join(f"{name.split('.')[0]} {h}" for name, h in info.get("build", {}).items())
        print(f"Build timed: {builds}.")
        load0, load1 = info.get("loadavg_at_start"), info.get("loadavg_at_end")
        if load0 and load1:
            print(f"Load average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f}.")
        if info.get("rebuilt_during_run"):
            print("**WARNING: the compiled modules were rebuilt during the run; the timings may "
                  "be disturbed by the build's CPU load.**")
    print()
    print("| K | V | regime | reference (µs) | fast-list (µs) | fast-numpy (µs) "
          "| ref / fast-list | ref / fast-numpy |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for key in sorted(medians, key=lambda k: (k[0], k[1], REGIMES.index(k[2]) if k[2] in REGIMES else 9, k[2])):
        K, V, regime = key
        row = medians[key]
        print(f"| {K} | {V} | {regime} | {fmt_us(row.get('reference'))} | "
              f"{fmt_us(row.get('fast-list'))} | {fmt_us(row.get('fast-numpy'))} | "
              f"{fmt_ratio(ratio(passes[key], 'fast-list'))} | "
              f"{fmt_ratio(ratio(passes[key], 'fast-numpy'))} |")

    floors = {K: row["call-floor"] for (K, V, regime), row in medians.items() if "call-floor" in row}
    if floors:
        print()
        print("Call floor (`call_floor`: the same arguments, the same result dict, no work; "
              "median over passes of the fastest round): "
              + ", ".join(f"K={K} {fmt_us(floors[K])} µs" for K in sorted(floors)) + ".")

    spreads = data.get("_spreads")
    if spreads:
        middle = spreads[len(spreads) // 2][0]
        worst3 = ", ".join(f"{name} {sp:.0%}" for sp, name in spreads[:3])
        print()
        print(f"Spread of rounds (IQR / median): typical {middle:.0%}; largest: {worst3}.")

    # K=8, worse regime per V.
    worst = {}   # V -> {"fast-list": (ratio, regime), "fast-numpy": ..., "numpy_us": (s, regime)}
    for (K, V, regime), row in medians.items():
        if K != TARGET_K:
            continue
        w = worst.setdefault(V, {})
        for impl in ("fast-list", "fast-numpy"):
            r = ratio(passes[(K, V, regime)], impl)
            if r is not None and (impl not in w or r < w[impl][0]):
                w[impl] = (r, regime)
            t = row.get(impl)
            tkey = impl + " us"
            if t is not None and (tkey not in w or t > w[tkey][0]):
                w[tkey] = (t, regime)

    print()
    print(f"K={TARGET_K}, worse regime per V (minimum ratio / maximum time over {', '.join(REGIMES)}):")
    print()
    print("| V | ref / fast-list (worse) | ref / fast-numpy (worse) | fast-list µs (worse) | fast-numpy µs (worse) |")
    print("|---:|---:|---:|---:|---:|")

    def cell(entry, fmt):
        return "n/a" if entry is None else f"{fmt(entry[0])} ({entry[1]})"

    for V in sorted(worst):
        w = worst[V]
        print(f"| {V} | {cell(w.get('fast-list'), fmt_ratio)} | {cell(w.get('fast-numpy'), fmt_ratio)} | "
              f"{cell(w.get('fast-list us'), fmt_us)} | {cell(w.get('fast-numpy us'), fmt_us)} |")

    print()
    print(f"Targets (K={TARGET_K}, worse regime):")
    print()
    floor = floors.get(TARGET_K)
    print("| target | measured | verdict | bound: ref / call floor |")
    print("|---|---:|---|---:|")
    all_met = True
    for label, impl, V, kind, threshold in TARGETS:
        w = worst.get(V, {})
        if kind == "ratio":
            entry = w.get(impl)
            want = f">= {threshold:g}x"
            measured = cell(entry, fmt_ratio)
            met = entry is not None and entry[0] >= threshold
            ref = medians.get((TARGET_K, V, entry[1]), {}).get("reference") if entry else None
            bound = fmt_ratio(ref / floor) if ref and floor else "n/a"
        else:
            bound = "-"
            entry = w.get(impl + " us")
            want = f"< {threshold:g} µs/call"
            measured = "n/a" if entry is None else f"{entry[0] * 1e6:.3f} µs ({entry[1]})"
            met = entry is not None and entry[0] * 1e6 < threshold
        verdict = "PASS" if met else ("MISS" if entry is not None else "MISS (no data)")
        all_met &= met
        print(f"| {label}: {want} | {measured} | {verdict} | {bound} |")
    print()
    print("All targets met." if all_met else "Not all targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
