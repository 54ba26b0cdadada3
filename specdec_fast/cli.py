"""The ``specdec-fast`` command (also ``python -m specdec_fast``).

Subcommands:

``specdec-fast simulate``  which K should I use?  Simulated and closed-form
                           tokens per verify step and walltime speedup per K,
                           the best K marked; ``--plot`` draws both.
``specdec-fast bench``     the compiled ``speculative_decode_sim`` against the
                           pure-Python reference on a grid of K and V.

Conventions: tables on stdout, progress bars (tqdm) on stderr when it is a
terminal, ``--json`` for machine-readable output, exit status 0 on success,
2 for bad arguments (a one-line message, never a traceback) and 130 after
Ctrl-C, which stops cleanly and prints what finished.
"""
import argparse
import json
import math
import os
import platform
import random
import re
import sys
import time
import zipfile
import zlib

import numpy as np

__all__ = ["main"]

PROG = "specdec-fast"
INSTALL_PLOT = 'pip install "specdec_fast[plot]"'
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument found after parsing: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: message``) instead of usage + error."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------
# Argument types.

def _number_list(text, low=None, high=None):
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            x = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
            raise argparse.ArgumentTypeError(f"{part} is outside [{low:g}, {high:g}]")
        values.append(x)
    return values


def alpha_list(text):
    """``0.6,0.8,0.9``: acceptance rates in [0, 1]."""
    return _number_list(text, 0.0, 1.0)


# The largest K that --k takes.
MAX_K = 1024


def k_range(text):
    """``1-12``, ``1,2,4,8`` or ``1-4,8,16``: distinct non-negative ints, sorted."""
    ks = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"{part!r} is not an int or a range like 1-12")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise argparse.ArgumentTypeError(f"{part!r} is an empty range")
        if hi > MAX_K:
            raise argparse.ArgumentTypeError(f"{hi} is too large (at most {MAX_K})")
        ks.update(range(lo, hi + 1))
    return sorted(ks)


# Trials per K and scenario: the per-chunk bookkeeping grows with them.
MAX_TRIALS = 10 ** 11


def positive_int(text):
    """An int >= 1; ``1e6`` and ``1_000_000`` are accepted."""
    try:
        x = float(text.replace("_", "")) if re.fullmatch(r"[\d_.eE+]+", text) else None
    except ValueError:
        x = None
    if x is None or not math.isfinite(x) or x != int(x) or x < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(x)


def non_negative_int(text):
    """An int >= 0."""
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def seed_int(text):
    """A seed: an int in [0, 2**64)."""
    value = non_negative_int(text)
    if value >= 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not below 2**64")
    return value


def non_negative_float(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(x) and x >= 0.0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return x


def probability(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in (0, 1)")
    return x


def int_list(text):
    out = []
    for part in text.split(","):
        out.append(positive_int(part.strip()))
    return sorted(set(out))


# --------------------------------------------------------------------------
# The parser.

def build_parser():
    from specdec_fast import __version__ as version

    parser = _Parser(
        prog=PROG,
        description="Speculative decoding: which K to use (simulation beside the closed "
                    "forms) and how fast the compiled verify step is.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sim = sub.add_parser(
        "simulate", help="tokens per step and speedup per K: simulated vs closed form",
        description="Monte Carlo over verify steps (compiled, multi-threaded) beside the "
                    "closed forms of specdec_fast.theory, per K: tokens per step and walltime "
                    "speedup E[tokens] / (K c + 1), the best K marked.  Synthetic Zipf-like "
                    "pairs with the given acceptance rates, or your own distributions "
                    "with --probs.",
        epilog=f"Example: {PROG} simulate --alpha 0.6,0.8,0.9 --k 1-12 --cost-ratio 0.05 "
               "--trials 1000000 --plot which_k.png")
    sim.add_argument("--alpha", type=alpha_list, default=None, metavar="A[,A...]",
                     help="acceptance rates, one scenario each (default 0.6,0.8,0.9)")
    sim.add_argument("--k", type=k_range, default=None, metavar="RANGE",
                     help="draft lengths K, e.g. 1-12 or 1,2,4,8 (default 1-12; with --probs "
                          "1 to the number of draft rows)")
    sim.add_argument("--cost-ratio", type=non_negative_float, default=0.05, metavar="C",
                     help="time of one draft run / time of one target run (default 0.05)")
    sim.add_argument("--trials", type=positive_int, default=1_000_000, metavar="N",
                     help="verify steps simulated per scenario and K (default 1,000,000)")
    sim.add_argument("--probs", metavar="FILE.npz",
                     help="your distributions: arrays 'draft' (K, V) and 'target' (K+1, V), or "
                          "(S, K, V) and (S, K+1, V) for S scenarios; replaces --alpha")
    sim.add_argument("--vocab", type=positive_int, default=1000, metavar="V",
                     help="vocabulary size of the synthetic pairs (default 1000)")
    sim.add_argument("--exponent", type=non_negative_float, default=1.1, metavar="S",
                     help="Zipf exponent of the synthetic target (default 1.1)")
    sim.add_argument("--semantics", choices=("exact", "reference"), default="exact",
                     help="exact: the papers' algorithm; reference: also a bonus token after a "
                          "rejection at the last position (rule R6) (default exact)")
    sim.add_argument("--seed", type=seed_int, default=0,
                     help="seed of the generator and of the synthetic pairs (default 0)")
    sim.add_argument("--confidence", type=probability, default=0.95,
                     help="level of the confidence intervals (default 0.95)")
    sim.add_argument("--threads", type=positive_int, default=None, metavar="N",
                     help="threads (default: the CPUs; results do not depend on it)")
    sim.add_argument("--plot", metavar="OUT.png",
                     help=f"also draw the figure (needs matplotlib: {INSTALL_PLOT})")
    sim.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.set_defaults(run=run_simulate)

    bench = sub.add_parser(
        "bench", help="the compiled function against the pure-Python reference",
        description="Times specdec_fast.speculative_decode_sim (on lists and on NumPy arrays) "
                    "against the pure-Python reference specdec_fast.reference."
                    "speculative_decode_sim on a grid of K and V, after checking that both "
                    "return the same result on the same uniforms.  Inputs: Zipf-like target "
                    "rows, drafts with acceptance rate --alpha, draft tokens sampled from the "
                    "drafts.",
        epilog=f"Example: {PROG} bench --quick")
    bench.add_argument("--quick", action="store_true",
                       help="a small grid and a short time per cell (under 30 s)")
    bench.add_argument("--k", type=int_list, default=None, metavar="K[,K...]",
                       help="draft lengths (default 1,4,8,16; --quick 1,4,8)")
    bench.add_argument("--vocab", type=int_list, default=None, metavar="V[,V...]",
                       help="vocabulary sizes (default 64,1000,32000,128256; "
                            "--quick 64,1000,32000)")
    bench.add_argument("--alpha", type=probability, default=0.8,
                       help="acceptance rate of the drafts (default 0.8)")
    bench.add_argument("--budget", type=non_negative_float, default=None, metavar="SECONDS",
                       help="time per implementation and cell (default 0.5; --quick 0.08)")
    bench.add_argument("--seed", type=seed_int, default=0, help="seed (default 0)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(run=run_bench)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return args.run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:          # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"{PROG}: error: out of memory (a smaller --vocab or --k needs less)",
              file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


# --------------------------------------------------------------------------
# Progress.

def _bar(args, total, desc, unit):
    """A tqdm bar on stderr, or None when disabled or stderr is not a terminal."""
    if args.no_progress or not _isatty(sys.stderr):
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False,
                file=sys.stderr, dynamic_ncols=True)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------
# simulate

def _load_probs(path):
    """(draft (S, K, V), target (S, R, V), labels) from an .npz file."""
    from specdec_fast.theory import _normalised, _probabilities

    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")    # .npz: a zip archive
        if not is_zip:
            raise UsageError(f"--probs {path}: not an .npz file (a zip of arrays, as "
                             "np.savez writes)")
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            draft_key = next((k for k in ("draft", "draft_probs") if k in names), None)
            target_key = next((k for k in ("target", "target_probs") if k in names), None)
            if draft_key is None or target_key is None:
                raise UsageError(f"--probs {path}: needs arrays 'draft' and 'target' "
                                 f"(found {', '.join(sorted(names)) or 'none'})")
            draft, target = data[draft_key], data[target_key]
    except UsageError:
        raise
    # zlib.error, NotImplementedError, RuntimeError: a corrupt, an unsupported (compression
    # method) or an encrypted zip member.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as exc:
        raise UsageError(f"--probs {path}: cannot read it as .npz ({exc})") from None
    draft_name, target_name = f"--probs {path}: 'draft'", f"--probs {path}: 'target'"
    try:
        draft = _probabilities(draft, draft_name)
        target = _probabilities(target, target_name)
        if draft.ndim != target.ndim:
            raise UsageError(f"--probs {path}: 'draft' {draft.shape} and 'target' "
                             f"{target.shape} must have the same number of axes")
        if draft.ndim == 2:
            draft, target = draft[None], target[None]
        if draft.shape[0] == 0:
            raise UsageError(f"--probs {path}: 'draft' {draft.shape} holds no scenario")
        if target.shape[0] != draft.shape[0] or target.shape[2] != draft.shape[2]:
            raise UsageError(f"--probs {path}: 'draft' {draft.shape} and 'target' "
                             f"{target.shape} disagree on scenarios or vocabulary")
        if target.shape[1] < draft.shape[1]:
            raise UsageError(f"--probs {path}: 'target' needs at least as many rows as 'draft' "
                             f"(K + 1 for the bonus token), got {target.shape[1]} < "
                             f"{draft.shape[1]}")
        _normalised(draft, draft_name)
        _normalised(target, target_name)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    labels = [f"{os.path.basename(path)}" + (f"[{s}]" if draft.shape[0] > 1 else "")
              for s in range(draft.shape[0])]
    return draft, target, labels


def _scenarios(args):
    """(draft, target, labels, scalar alphas or None, ks)."""
    from specdec_fast import synthetic

    if args.probs is not None:
        if args.alpha is not None:
            raise UsageError("--alpha and --probs exclude each other")
        draft, target, labels = _load_probs(args.probs)
        rows = draft.shape[1]
        ks = args.k if args.k is not None else list(range(1, rows + 1))
        if ks and ks[-1] > rows:
            raise UsageError(f"--k {ks[-1]} exceeds the {rows} draft rows of {args.probs}")
        if not ks:
            raise UsageError("--k is empty")
        return draft, target, labels, None, ks
    alphas = args.alpha if args.alpha is not None else [0.6, 0.8, 0.9]
    ks = args.k if args.k is not None else list(range(1, 13))
    if args.vocab > 1 << 20:
        raise UsageError("--vocab is at most 1048576")
    floor = synthetic.min_alpha(args.vocab, args.exponent)
    low = [a for a in alphas if a < floor]
    if low:
        raise UsageError(f"--alpha {low[0]:g} is below {floor:.4g}, the smallest the synthetic "
                         f"pairs reach at --vocab {args.vocab} --exponent {args.exponent:g} "
                         "(a larger --vocab or --exponent reaches lower)")
    k_max = max(ks)
    _check_memory(len(alphas) * (2 * k_max + 1) * args.vocab)
    drafts, targets = [], []
    for i, a in enumerate(alphas):
        d, t = synthetic.zipf_rows(args.vocab, [a] * k_max, args.exponent,
                                   rng=np.random.default_rng([args.seed, i]))
        drafts.append(d)
        targets.append(t)
    draft = np.array(drafts).reshape(len(alphas), k_max, args.vocab)
    target = np.array(targets).reshape(len(alphas), k_max + 1, args.vocab)
    labels = [f"alpha = {a:g}" for a in alphas]
    return draft, target, labels, alphas, ks


# Peak bytes of a simulation per float64 of its input rows (copies, normalised rows and
# alias tables), measured on V = 2**20 at K = 4 and 16 (4.6x the rows' 8 bytes).
PEAK_BYTES_PER_VALUE = 40


def _check_memory(values):
    """A usage error when the synthetic rows (``values`` floats) would not fit in memory."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return                      # unknown here (Windows): MemoryError is caught later
    need = values * PEAK_BYTES_PER_VALUE
    if need > 0.8 * physical:
        raise UsageError(f"--vocab and --k too large together: about {need / 2**30:.1f} GiB "
                         f"needed, {physical / 2**30:.1f} GiB of memory here")


def run_simulate(args):
    from specdec_fast import theory
    from specdec_fast._rng import Rng
    from specdec_fast.simulate import simulate

    if args.trials > MAX_TRIALS:
        raise UsageError(f"--trials is at most {MAX_TRIALS:,}")
    plot_format = None
    if args.plot is not None:
        _require_matplotlib()
        plot_format = _plot_format(args.plot)
    draft, target, labels, alphas, ks = _scenarios(args)
    S, _, V = draft.shape
    rng = Rng(args.seed)
    c = args.cost_ratio
    bar = _bar(args, len(ks) * S * args.trials, "simulate", "trial")
    rows = [[] for _ in range(S)]       # per scenario: one dict per K
    interrupted = False
    try:
        for K in ks:
            result = simulate(draft, target[:, :K + 1], K, trials=args.trials, rng=rng,
                              semantics=args.semantics, progress=bar if bar is not None else False,
                              num_threads=args.threads, confidence=args.confidence)
            sim_speedup, sim_speedup_ci = result.speedup(c)
            closed_speedup = result.expected_speedup(c)
            for s in range(S):
                if result.trials[s] == 0:
                    continue
                rows[s].append({
                    "k": K,
                    "trials": int(result.trials[s]),
                    "tokens": float(result.mean_tokens[s]),
                    "tokens_ci": [_finite(x) for x in result.mean_tokens_ci[s]],
                    "tokens_closed_form": float(result.expected_tokens[s]),
                    "speedup": float(sim_speedup[s]),
                    "speedup_ci": [_finite(x) for x in sim_speedup_ci[s]],
                    "speedup_closed_form": float(closed_speedup[s]),
                    "acceptance": [_finite(x) for x in result.acceptance[s]],
                    "alpha": [float(x) for x in result.alpha[s]],
                })
            if result.interrupted:
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    report = {
        "command": "simulate",
        "semantics": args.semantics,
        "cost_ratio": c,
        "trials": args.trials,
        "confidence": args.confidence,
        "seed": args.seed,
        "vocab_size": V,
        "source": args.probs if args.probs is not None else
        f"synthetic Zipf-like pairs (exponent {args.exponent:g})",
        "interrupted": interrupted,
        "k_requested": ks,
        "k_limit": min(draft.shape[1], MAX_K) if args.probs is not None else MAX_K,
        "scenarios": [],
    }
    for s in range(S):
        entry = {"label": labels[s], "alpha": alphas[s] if alphas is not None else None,
                 "rows": rows[s], "best_k": None, "best_k_simulated": None}
        if rows[s]:
            closed = [r["speedup_closed_form"] for r in rows[s]]
            simulated = [r["speedup"] for r in rows[s]]
            entry["best_k"] = rows[s][int(np.argmax(closed))]["k"]
            entry["best_k_simulated"] = rows[s][int(np.argmax(simulated))]["k"]
        if alphas is None:
            q = theory._normalised(draft[s:s + 1, :max(ks)], "draft")[0]
            p = theory._normalised(target[s:s + 1, :max(ks)], "target")[0]
            entry["alpha_per_position"] = [float(x) for x in
                                           np.atleast_1d(theory.acceptance_rate(p, q))]
        report["scenarios"].append(entry)

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_simulation(report)
    if args.plot is not None and any(e["rows"] for e in report["scenarios"]):
        _plot(report, args.plot, plot_format)
        if not args.json:
            print(f"\nwrote {args.plot}")
    if interrupted:
        print(f"{PROG}: interrupted; the results above are those finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _finite(x):
    """A float, or None for NaN (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _print_simulation(report):
    level = f"{report['confidence'] * 100:g}%"
    print(f"Tokens per verify step and speedup E[tokens] / (K c + 1), c = {report['cost_ratio']:g}")
    print(f"{report['semantics']} semantics; {report['source']}, V = {report['vocab_size']:,}")
    print(f"{report['trials']:,} trials per K (seed {report['seed']}); simulated ± {level} CI; "
          "* = best K (closed form)")
    for entry in report["scenarios"]:
        print()
        head = entry["label"]
        if entry.get("alpha_per_position") is not None:
            alphas = " ".join(f"{a:.3f}" for a in entry["alpha_per_position"][:12])
            more = " ..." if len(entry["alpha_per_position"]) > 12 else ""
            head += f" (alpha per position: {alphas}{more})"
        print(head)
        print(f"  {'K':>3}  {'tokens/step':>19}  {'closed form':>11}  "
              f"{'speedup':>19}  {'closed form':>11}")
        for r in entry["rows"]:
            tok_half = _half_width(r, "tokens")               # NaN below 2 trials
            sp_half = _half_width(r, "speedup")
            mark = " *" if r["k"] == entry["best_k"] else ""
            partial = f"  ({r['trials']:,} trials)" if r["trials"] != report["trials"] else ""
            print(f"  {r['k']:>3}  {r['tokens']:>10.4f} ± {tok_half:<6.4f}  "
                  f"{r['tokens_closed_form']:>11.4f}  {r['speedup']:>10.4f} ± {sp_half:<6.4f}  "
                  f"{r['speedup_closed_form']:>11.4f}{mark}{partial}")
        if entry["rows"]:
            best = next(r for r in entry["rows"] if r["k"] == entry["best_k"])
            agree = ("the simulation agrees" if entry["best_k_simulated"] == entry["best_k"] else
                     f"the simulation's best is K = {entry['best_k_simulated']}, "
                     "within its confidence interval" if _overlap(entry) else
                     f"the simulation's best is K = {entry['best_k_simulated']}")
            edge = ""
            if best["k"] == max(report["k_requested"]) and len(entry["rows"]) > 1:
                edge = ("; the largest K tried: try a wider --k"
                        if best["k"] < report["k_limit"] else
                        "; the largest K the file's draft rows allow"
                        if entry["alpha"] is None else "; the largest K --k takes")
            which = "best K so far" if report["interrupted"] else "best K"
            print(f"  {which} = {best['k']}: {best['tokens_closed_form']:.2f} tokens per step, "
                  f"{best['speedup_closed_form']:.2f}x the speed of plain decoding "
                  f"({agree}{edge})")
    if report["interrupted"]:
        print("\n(interrupted: only the K values finished are shown)")


def _overlap(entry):
    """Whether the simulated best K's speedup interval overlaps the closed-form best's."""
    rows = {r["k"]: r for r in entry["rows"]}
    a, b = rows[entry["best_k"]], rows[entry["best_k_simulated"]]
    return bool(_ci(a, "speedup")[1] >= _ci(b, "speedup")[0])


def _ci(row, key):
    """A row's interval as two floats (NaN where undefined)."""
    return np.array([np.nan if x is None else x for x in row[f"{key}_ci"]], dtype=np.float64)


def _half_width(row, key):
    """The ``h`` of "value ± h": the interval's farther end from the value (the
    interval need not be centred on it), so that value ± h contains it."""
    lo, hi = _ci(row, key)
    return max(row[key] - lo, hi - row[key])


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"--plot needs matplotlib: {INSTALL_PLOT}") from None


def _plot_format(path):
    """The format to write ``path`` in, checked before the simulation runs: its
    extension's (PNG when it has none; the file is written at ``path`` as given)."""
    from matplotlib.figure import Figure

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--plot {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--plot {path}: is a folder")
    extension = os.path.splitext(path)[1][1:].lower()
    supported = Figure().canvas.get_supported_filetypes()
    if extension and extension not in supported:
        raise UsageError(f"--plot {path}: cannot write .{extension} files (supported: "
                         f"{', '.join(sorted(supported))})")
    return extension or "png"


def _plot(report, path, fmt):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    level = f"{report['confidence'] * 100:g}%"
    for i, entry in enumerate(report["scenarios"]):
        if not entry["rows"]:
            continue
        color = colors[i % len(colors)]
        ks = np.array([r["k"] for r in entry["rows"]])
        for ax, key in ((left, "tokens"), (right, "speedup")):
            closed = np.array([r[f"{key}_closed_form"] for r in entry["rows"]])
            sim = np.array([r[key] for r in entry["rows"]])
            lo = np.array([_ci(r, key)[0] for r in entry["rows"]])
            hi = np.array([_ci(r, key)[1] for r in entry["rows"]])
            ax.plot(ks, closed, "-", color=color, lw=1.5)
            ax.fill_between(ks, lo, hi, color=color, alpha=0.25, lw=0)
            ax.plot(ks, sim, "o", color=color, ms=3.5)
        best = next(r for r in entry["rows"] if r["k"] == entry["best_k"])
        right.plot([best["k"]], [best["speedup_closed_form"]], "*", color=color, ms=14,
                   mec="black", mew=0.6, zorder=5)
        right.annotate(f"best K = {best['k']}", (best["k"], best["speedup_closed_form"]),
                       textcoords="offset points", xytext=(0, 9), ha="center", fontsize=8,
                       color=color)
    left.set_title("tokens per verify step")
    right.set_title(f"speedup E[tokens] / (K c + 1), c = {report['cost_ratio']:g}")
    for ax in (left, right):
        ax.set_xlabel("K (draft tokens per step)")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    left.set_ylabel("tokens")
    right.set_ylabel("x plain decoding")
    top = max(np.nanmax([_ci(r, "speedup")[1], r["speedup"], r["speedup_closed_form"]])
              for e in report["scenarios"] for r in e["rows"])
    right.set_ylim(0, top * 1.12)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colors[i % len(colors)], lw=4, label=entry["label"])
               for i, entry in enumerate(report["scenarios"]) if entry["rows"]]
    handles += [Line2D([], [], color="grey", lw=1.5, label="closed form"),
                Line2D([], [], color="grey", marker="o", ms=3.5, ls="",
                       label=f"simulated ({level} CI band)")]
    left.legend(handles=handles, fontsize=8, loc="upper left")
    all_ks = [r["k"] for e in report["scenarios"] for r in e["rows"]]
    for ax in (left, right):
        ax.set_xlim(min(all_ks) - 0.5, max(all_ks) + 1.0)
    fig.suptitle(f"Which K? {report['semantics']} semantics, V = {report['vocab_size']:,}, "
                 f"{report['trials']:,} trials per K", fontsize=10)
    try:
        fig.savefig(path, dpi=110, format=fmt)
    except (OSError, ValueError, RuntimeError) as exc:    # RuntimeError: pgf without LaTeX
        raise UsageError(f"--plot {path}: {exc}") from None
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------
# bench

class _Case:
    """The inputs of one grid cell: a few verify steps with sampled draft tokens."""

    def __init__(self, K, V, alpha, seed, steps=4):
        from specdec_fast import synthetic
        gen = np.random.default_rng([seed, K, V])
        self.K, self.V = K, V
        self.draft, self.target = synthetic.zipf_rows(V, [alpha] * K, rng=gen)
        self.draft_list = self.draft.tolist()
        self.target_list = self.target.tolist()
        self.tokens = [[int(gen.choice(V, p=self.draft[i])) for i in range(K)]
                       for _ in range(steps)]


def _time(call, budget, min_rounds=3):
    """Median seconds per call over rounds of ``call()`` (each a batch of calls)."""
    # Calibrate: enough calls per round that a round takes >= 1 ms.
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= 1e-3 or n >= 1 << 20:
            break
        n *= 4
    rounds = [elapsed / n]
    deadline = time.perf_counter() + budget
    while len(rounds) < min_rounds or time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(n):
            call()
        rounds.append((time.perf_counter() - start) / n)
    return float(np.median(rounds))


def _check_same(case, fast, reference, replaying):
    """The compiled function returns the reference's dict on the same uniforms."""
    gen = np.random.default_rng([case.K, case.V, 99])
    for tokens in case.tokens:
        U = gen.random(case.K + 2).tolist()
        with replaying(U):
            want = reference(case.draft_list, case.target_list, tokens, case.V)
        got = fast(case.draft, case.target, tokens, case.V, uniforms=U)
        if got != want:
            raise RuntimeError(f"K={case.K} V={case.V}: the compiled function returned {got}, "
                               f"the reference {want}")


def run_bench(args):
    import specdec_fast
    from specdec_fast import synthetic
    from specdec_fast.reference import replaying
    from specdec_fast.reference import speculative_decode_sim as reference

    ks = args.k or ([1, 4, 8] if args.quick else [1, 4, 8, 16])
    vs = args.vocab or ([64, 1000, 32000] if args.quick else [64, 1000, 32000, 128256])
    if max(vs) > 1 << 22:
        raise UsageError("--vocab is at most 4194304")
    if max(ks) > 256:
        raise UsageError("--k is at most 256")
    for V in vs:
        floor = synthetic.min_alpha(V)
        if args.alpha < floor:
            raise UsageError(f"--alpha {args.alpha:g} is below {floor:.4g}, the smallest the "
                             f"synthetic pairs reach at --vocab {V}")
    budget = args.budget if args.budget is not None else (0.08 if args.quick else 0.5)
    fast = specdec_fast.speculative_decode_sim
    rng = specdec_fast.Rng(args.seed)
    cells = [(K, V) for V in vs for K in ks]
    bar = _bar(args, len(cells), "bench", "cell")
    rows = []
    interrupted = False
    try:
        for K, V in cells:
            case = _Case(K, V, args.alpha, args.seed)
            _check_same(case, fast, reference, replaying)
            steps = iter(range(1 << 62))

            def call_reference():
                tokens = case.tokens[next(steps) % len(case.tokens)]
                reference(case.draft_list, case.target_list, tokens, V)

            def call_list():
                tokens = case.tokens[next(steps) % len(case.tokens)]
                fast(case.draft_list, case.target_list, tokens, V, rng=rng)

            def call_numpy():
                tokens = case.tokens[next(steps) % len(case.tokens)]
                fast(case.draft, case.target, tokens, V, rng=rng)

            random.seed(args.seed)
            t_ref = _time(call_reference, budget)
            t_list = _time(call_list, budget)
            t_numpy = _time(call_numpy, budget)
            rows.append({"k": K, "vocab_size": V, "reference_s": t_ref, "fast_list_s": t_list,
                         "fast_numpy_s": t_numpy, "ratio_list": t_ref / t_list,
                         "ratio_numpy": t_ref / t_numpy})
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    report = {
        "command": "bench",
        "alpha": args.alpha,
        "budget_s": budget,
        "seed": args.seed,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "specdec_fast": specdec_fast.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "interrupted": interrupted,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_bench(report)
    if interrupted:
        print(f"{PROG}: interrupted; the results above are those finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _fmt_time(seconds):
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 10_000:
        return f"{us:,.1f} µs"
    return f"{us / 1000:,.1f} ms"


def _fmt_ratio(ratio):
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:,.0f}x"


def _print_bench(report):
    print(f"speculative_decode_sim, median time per call (alpha = {report['alpha']:g}, "
          f"Python {report['python']}, {report['machine']}, {report['cpus']} CPUs)")
    print("reference: specdec_fast.reference (pure Python, lists); fast: the compiled "
          "function on the same lists / on float64 arrays")
    print()
    print(f"  {'K':>3}  {'V':>7}  {'reference':>11}  {'fast (list)':>11}  "
          f"{'fast (numpy)':>12}  {'ref/list':>9}  {'ref/numpy':>9}")
    for r in report["rows"]:
        print(f"  {r['k']:>3}  {r['vocab_size']:>7,}  {_fmt_time(r['reference_s']):>11}  "
              f"{_fmt_time(r['fast_list_s']):>11}  {_fmt_time(r['fast_numpy_s']):>12}  "
              f"{_fmt_ratio(r['ratio_list']):>9}  {_fmt_ratio(r['ratio_numpy']):>9}")
    if report["interrupted"]:
        print("\n(interrupted: only the cells finished are shown)")
