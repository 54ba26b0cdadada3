"""Summarise a pytest-benchmark JSON of the batch benchmarks as Markdown.

Reproduce (from the project root; ``PYTHONPATH=.`` when the package is built in
place rather than installed)::

    PYTHONPATH=. python -m pytest benchmarks/test_batch.py --benchmark-json=batch.json -q && python benchmarks/report_batch.py batch.json

Prints, per (dtype, regime) at B=256, K=8, V=32000, the median ms per call of
``verify_batch`` with 1 and 2 threads (cold cache), the NumPy and PyTorch
peers, the floor (bytes the algorithm must read / the DRAM read bandwidth of
``test_dram_bandwidth``), and the ratios numpy/verify_batch,
torch/verify_batch (both against the 1-thread ``verify_batch``) and
verify_batch(1 thread)/floor; then the V=1024 thread scaling (median of
1 thread / median of 2 threads) and PASS/MISS for each target:

* verify_batch >= 10x faster than the NumPy peer, >= 50x faster than torch;
* verify_batch with one thread within 1.3x of the floor;
* V=1024: 2 threads >= 1.7x faster than 1.

The scaling table also shows the 1t/2t ratio from alternated calls, the same
with one ``Rng`` per row instead of a seed (not a target), and a control (a
GIL-free NumPy loop split over 2 threads the same way): on a shared 2-core
machine the control says how much a second thread could give at all.

Each target is judged on its worst case over the (dtype, regime) cases.
Standard library only (NumPy is not needed).
"""
import argparse
import json
import sys

DTYPES = ("float32", "float64")
REGIMES = ("matched", "mismatched")
NUMPY_TARGET, TORCH_TARGET, FLOOR_TARGET, SCALING_TARGET = 10.0, 50.0, 1.3, 1.7


def load(path):
    with open(path) as fh:
        data = json.load(fh)
    rows = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        rows.append({"name": bench["name"], "group": bench.get("group"), "info": info,
                     "median_s": bench["stats"]["median"], "rounds": bench["stats"]["rounds"]})
    return data, rows


def find(rows, **want):
    """The one benchmark whose extra_info has all of ``want`` (None if absent)."""
    hits = [r for r in rows if all(r["info"].get(k) == v for k, v in want.items())]
    if len(hits) > 1:
        raise SystemExit(f"ambiguous benchmarks for {want}: {[r['name'] for r in hits]}")
    return hits[0] if hits else None


def ms(row):
    return None if row is None else row["median_s"] * 1e3


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def times(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}x"


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "SKIP"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="output of pytest benchmarks/test_batch.py --benchmark-json=...")
    args = parser.parse_args(argv)
    data, rows = load(args.json)

    dram = find(rows, impl="np.add.reduce")
    bandwidth = None
    if dram is not None:
        bandwidth = dram["info"]["array_bytes"] / dram["median_s"]

    out = []
    if not any(r["info"].get("V") == 32000 for r in rows):
        out.append("(no B=256, V=32000 benchmarks in this file)")
    out.append("| dtype | regime | vb 1t (ms) | vb 2t (ms) | numpy (ms) | torch (ms) | floor (ms) "
               "| numpy/vb 1t | numpy/vb 2t | torch/vb 1t | torch/vb 2t | vb 1t/floor |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cases = []
    for dtype in DTYPES:
        for regime in REGIMES:
            key = dict(dtype=dtype, regime=regime, B=256, V=32000)
            vb1 = find(rows, impl="verify_batch", threads=1, **key)
            vb2 = find(rows, impl="verify_batch", threads=2, **key)
            npy = find(rows, impl="numpy", **key)
            trc = find(rows, impl="torch", **key)
            warm = find(rows, impl="verify_batch-warm", **key)
            if not any((vb1, vb2, npy, trc)):
                continue
            floor = None
            if vb1 is not None and bandwidth:
                floor = vb1["info"]["bytes_read"] / bandwidth * 1e3
            c = dict(dtype=dtype, regime=regime, vb1=ms(vb1), vb2=ms(vb2), numpy=ms(npy),
                     torch=ms(trc), floor=floor, warm=ms(warm),
                     bytes=vb1["info"]["bytes_read"] if vb1 else None,
                     accepted=vb1["info"].get("mean_accepted") if vb1 else None)
            c["numpy_ratio"] = ratio(c["numpy"], c["vb1"])
            c["torch_ratio"] = ratio(c["torch"], c["vb1"])
            c["numpy_ratio2"] = ratio(c["numpy"], c["vb2"])
            c["torch_ratio2"] = ratio(c["torch"], c["vb2"])
            c["floor_ratio"] = ratio(c["vb1"], c["floor"])
            cases.append(c)
            out.append(f"| {dtype} | {regime} | {fmt(c['vb1'])} | {fmt(c['vb2'])} | "
                       f"{fmt(c['numpy'])} | {fmt(c['torch'])} | {fmt(c['floor'])} | "
                       f"{fmt(c['numpy_ratio'], 1)} | {fmt(c['numpy_ratio2'], 1)} | "
                       f"{fmt(c['torch_ratio'], 1)} | {fmt(c['torch_ratio2'], 1)} | "
                       f"{fmt(c['floor_ratio'])} |")

    out.append("")
    out.append("B=256, K=8, V=32000; medians; cold cache (512 MiB read before every round). "
               "verify_batch with 1 and with 2 threads (its default, num_threads=None, on this 2-core "
               "machine); numpy runs on 1 thread, torch on its default 2.")
    if bandwidth:
        out.append(f"DRAM read bandwidth (np.add.reduce, {dram['info']['array_bytes'] / 2**30:.0f} GiB "
                   f"float64, median of {dram['rounds']}): {bandwidth / 1e9:.2f} GB/s.")
        max_bw = dram["info"].get("max_reduce_bandwidth_bytes_per_s")
        if max_bw:
            out.append(f"For comparison, np.maximum.reduce (SIMD) over the same array reads "
                       f"{max_bw / 1e9:.2f} GB/s; the floor (ms) column uses np.add.reduce.")
    extra = [c for c in cases if c["warm"] is not None or c["bytes"] is not None]
    if extra:
        out.append("")
        max_bw = dram["info"].get("max_reduce_bandwidth_bytes_per_s") if dram else None
        out.append("| dtype | regime | mean accepted | bytes read (MB) | vb 1t warm (ms) | cold/warm "
                   "| vb 1t / floor at max.reduce bandwidth |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for c in extra:
            mb = None if c["bytes"] is None else c["bytes"] / 1e6
            alt = None if not (max_bw and c["bytes"]) else ratio(c["vb1"], c["bytes"] / max_bw * 1e3)
            out.append(f"| {c['dtype']} | {c['regime']} | {fmt(c['accepted'])} | {fmt(mb, 1)} | "
                       f"{fmt(c['warm'])} | {fmt(ratio(c['vb1'], c['warm']))} | {fmt(alt)} |")

    scaling = []
    out.append("")
    out.append("| V=1024 scaling (B=4096, K=8, float64, warm) | 1 thread (ms) | 2 threads (ms) | 1t/2t "
               "| alternated calls 1t/2t |")
    out.append("|---|---:|---:|---:|---:|")
    for source, label in (("seed", ""), ("generators", ", rng = one Rng per row")):
        for regime in REGIMES:
            # Runs before the generators case record no source: they are seed runs.
            pick = [r for r in rows if r["info"].get("source", "seed") == source]
            one = find(pick, impl="verify_batch", regime=regime, threads=1, V=1024)
            two = find(pick, impl="verify_batch", regime=regime, threads=2, V=1024)
            if one is None and two is None:
                continue
            s = ratio(ms(one), ms(two))
            if source == "seed":
                scaling.append((regime, s))
            alt = None if two is None else ratio(two["info"].get("interleaved_1t_ms"),
                                                 two["info"].get("interleaved_2t_ms"))
            out.append(f"| {regime}{label} | {fmt(ms(one), 3)} | {fmt(ms(two), 3)} | {fmt(s)} "
                       f"| {fmt(alt)} |")
    c1 = find(rows, impl="np.sin control", threads=1)
    c2 = find(rows, impl="np.sin control", threads=2)
    if c1 is not None or c2 is not None:
        alt = None if c2 is None else ratio(c2["info"].get("interleaved_1t_ms"),
                                            c2["info"].get("interleaved_2t_ms"))
        out.append(f"| control: GIL-free np.sin loop, not a target | {fmt(ms(c1), 3)} | {fmt(ms(c2), 3)} "
                   f"| {fmt(ratio(ms(c1), ms(c2)))} | {fmt(alt)} |")

    def worst(key, pick):
        vals = [(c[key], f"{c['dtype']} {c['regime']}") for c in cases if c[key] is not None]
        return pick(vals) if vals else (None, "")

    out.append("")
    out.append("| target | worst case | value | verdict |")
    out.append("|---|---|---:|---|")
    for threads, suffix in (("1 thread", ""), ("2 threads", "2")):
        v, where = worst("numpy_ratio" + suffix, min)
        out.append(f"| verify_batch ({threads}) >= {NUMPY_TARGET:g}x faster than numpy | {where} "
                   f"| {times(v, 1)} | {verdict(v, NUMPY_TARGET)} |")
        v, where = worst("torch_ratio" + suffix, min)
        out.append(f"| verify_batch ({threads}) >= {TORCH_TARGET:g}x faster than torch | {where} "
                   f"| {times(v, 1)} | {verdict(v, TORCH_TARGET)} |")
    v, where = worst("floor_ratio", max)
    out.append(f"| verify_batch 1 thread within {FLOOR_TARGET:g}x of the floor | {where} | {times(v)} | "
               f"{verdict(v, FLOOR_TARGET, higher_is_better=False)} |")
    vals = [(s, r) for r, s in scaling if s is not None]
    v, where = min(vals) if vals else (None, "")
    out.append(f"| V=1024: 2 threads >= {SCALING_TARGET:g}x faster than 1 | {where} | {times(v)} | "
               f"{verdict(v, SCALING_TARGET)} |")

    meta = data.get("specdec_fast")
    if meta:
        out.append("")
        load_start = ", ".join(f"{x:.2f}" for x in meta.get("loadavg_at_start", []))
        load_end = ", ".join(f"{x:.2f}" for x in meta.get("loadavg_at_end", []))
        out.append(f"Load average at start: {load_start}; at end: {load_end}.")
        if meta.get("rebuilt_during_run"):
            out.append("WARNING: the compiled modules changed during the run.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
