"""The ``specdec-fast`` command, driven through its entry point ``specdec_fast.cli.main(argv)``.

Exit status: 0 on success, 2 for bad arguments (one line on stderr, no
traceback), 130 after Ctrl-C.  Simulations use fixed seeds, so the checks on
their numbers are deterministic; with intervals at the 1 - 1e-6 level they
would fail by chance with probability about 1e-6 each were the seeds random.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import specdec_fast
from specdec_fast import theory
from specdec_fast.cli import main
from specdec_fast.synthetic import zipf_rows


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_json(capsys):
    code, out, err = run(["simulate", "--alpha", "0.5,0.9", "--k", "1-4", "--trials", "20000",
                          "--cost-ratio", "0.1", "--json", "--no-progress",
                          "--confidence", "0.999999"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["command"] == "simulate" and not report["interrupted"]
    assert [s["alpha"] for s in report["scenarios"]] == [0.5, 0.9]
    for entry in report["scenarios"]:
        a = entry["alpha"]
        assert [r["k"] for r in entry["rows"]] == [1, 2, 3, 4]
        assert entry["best_k"] == theory.optimal_k(a, 0.1, 4)
        for r in entry["rows"]:
            assert r["trials"] == 20000
            assert r["tokens_closed_form"] == pytest.approx(theory.expected_tokens(a, r["k"]))
            assert r["speedup_closed_form"] == pytest.approx(theory.speedup(a, r["k"], 0.1))
            assert r["tokens_ci"][0] <= r["tokens_closed_form"] <= r["tokens_ci"][1]
            assert r["speedup_ci"][0] <= r["speedup_closed_form"] <= r["speedup_ci"][1]
            np.testing.assert_allclose(r["alpha"], [a] * r["k"], atol=1e-12)


@pytest.mark.parametrize("vocab", ["22", "1005"])
def test_simulate_alpha_one(vocab, capsys):
    """alpha = 1: the synthetic draft equals its target, whose normalised rows' alpha
    rounds above 1 at these sizes; every step emits K + 1 tokens."""
    code, out, err = run(["simulate", "--alpha", "1", "--vocab", vocab, "--k", "1-3",
                          "--trials", "2000", "--json", "--no-progress"], capsys)
    assert code == 0, err
    entry = json.loads(out)["scenarios"][0]
    assert [r["tokens"] for r in entry["rows"]] == [2.0, 3.0, 4.0]
    assert [r["tokens_closed_form"] for r in entry["rows"]] == [2.0, 3.0, 4.0]


def test_simulate_table_and_semantics(capsys):
    code, out, _ = run(["simulate", "--alpha", "0.6", "--k", "1-3", "--trials", "5000",
                        "--semantics", "reference", "--no-progress"], capsys)
    assert code == 0
    assert "reference semantics" in out
    assert "alpha = 0.6" in out and "best K = " in out
    lines = [l for l in out.splitlines() if l.strip().startswith(("1 ", "2 ", "3 "))]
    assert len(lines) == 3
    assert sum(l.rstrip().endswith("*") for l in lines) == 1
    # K = 1 under R6 always emits 2 tokens.
    assert f"{theory.expected_tokens(0.6, 1, semantics='reference'):.4f}" == "2.0000"
    assert "2.0000 ± 0.0000" in lines[0]


def test_best_k_at_the_edge_hints_only_where_k_can_grow(tmp_path, capsys):
    """The best K is the largest tried: a wider --k is suggested for synthetic pairs,
    not for a --probs file whose draft rows allow no larger K."""
    d1, t1 = zipf_rows(50, [0.99, 0.99, 0.99], rng=1)
    path = tmp_path / "probs.npz"
    np.savez(path, draft=d1, target=t1)
    code, out, err = run(["simulate", "--probs", str(path), "--trials", "2000",
                          "--no-progress", "--cost-ratio", "0.01"], capsys)
    assert code == 0, err
    assert "best K = 3" in out and "the largest K the file's draft rows allow" in out
    assert "try a wider --k" not in out
    code, out, err = run(["simulate", "--probs", str(path), "--k", "1-2", "--trials", "2000",
                          "--no-progress", "--cost-ratio", "0.01"], capsys)
    assert code == 0, err
    assert "best K = 2" in out and "try a wider --k" in out
    code, out, err = run(["simulate", "--alpha", "0.99", "--k", "1-3", "--trials", "2000",
                          "--no-progress", "--cost-ratio", "0.01"], capsys)
    assert code == 0, err
    assert "best K = 3" in out and "try a wider --k" in out
    code, out, err = run(["simulate", "--alpha", "1", "--k", "1023,1024", "--trials", "20",
                          "--no-progress", "--cost-ratio", "0"], capsys)
    assert code == 0, err
    assert "best K = 1024" in out and "the largest K --k takes" in out
    assert "try a wider --k" not in out


def test_simulate_same_seed_same_output(capsys):
    argv = ["simulate", "--alpha", "0.7", "--k", "2", "--trials", "3000", "--json",
            "--no-progress", "--seed", "5"]
    _, a, _ = run(argv, capsys)
    _, b, _ = run(argv + ["--threads", "1"], capsys)
    assert json.loads(a)["scenarios"] == json.loads(b)["scenarios"]


def test_simulate_probs_file(tmp_path, capsys):
    d1, t1 = zipf_rows(50, [0.9, 0.6, 0.8], rng=1)
    path = tmp_path / "probs.npz"
    np.savez(path, draft=d1, target=t1)
    code, out, err = run(["simulate", "--probs", str(path), "--trials", "20000", "--json",
                          "--no-progress", "--confidence", "0.999999"], capsys)
    assert code == 0, err
    report = json.loads(out)
    (entry,) = report["scenarios"]
    np.testing.assert_allclose(entry["alpha_per_position"], [0.9, 0.6, 0.8], atol=1e-12)
    assert [r["k"] for r in entry["rows"]] == [1, 2, 3]
    for r in entry["rows"]:
        want = theory.expected_tokens([0.9, 0.6, 0.8][:r["k"]])
        assert r["tokens_closed_form"] == pytest.approx(want)
        assert r["tokens_ci"][0] <= want <= r["tokens_ci"][1]
    # A batch of scenarios, and --k beyond the rows.
    d2, t2 = zipf_rows(50, [0.5, 0.5, 0.5], rng=2)
    np.savez(path, draft=np.stack([d1, d2]), target=np.stack([t1, t2]))
    code, out, _ = run(["simulate", "--probs", str(path), "--trials", "1000", "--k", "1,3",
                        "--no-progress"], capsys)
    assert code == 0 and "probs.npz[1]" in out
    code, _, err = run(["simulate", "--probs", str(path), "--k", "1-4"], capsys)
    assert code == 2 and "exceeds" in err


@pytest.mark.parametrize("pair", [["--vocab", "1"], ["--exponent", "0"]])
def test_simulate_target_equals_wrong_distribution(pair, capsys):
    # V = 1 or exponent 0: the synthetic draft is the target, alpha = 1 exactly.
    code, out, err = run(["simulate", "--alpha", "1", "--k", "1-3", "--trials", "1000",
                          "--json", "--no-progress", *pair], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    (entry,) = json.loads(out)["scenarios"]
    assert [r["tokens"] for r in entry["rows"]] == [2.0, 3.0, 4.0]
    assert entry["best_k"] == 3
    code, _, err = run(["simulate", "--alpha", "0.5", *pair], capsys)
    assert code == 2 and "below 1" in err and err.count("\n") == 1


def test_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "which_k.png"
    code, out, err = run(["simulate", "--alpha", "0.6,0.9", "--k", "1-5", "--trials", "5000",
                          "--plot", str(out_png), "--no-progress"], capsys)
    assert code == 0, err
    data = out_png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert f"wrote {out_png}" in out


def test_plot_format_checked_before_simulating(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    target = tmp_path / "which_k.xyz"
    code, out, err = run(["simulate", "--alpha", "0.6", "--k", "1", "--trials", "100",
                          "--plot", str(target), "--no-progress"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "cannot write .xyz files" in err and "png" in err and not target.exists()
    # No extension: a PNG at the path given, which is the path reported.
    bare = tmp_path / "which_k"
    code, out, err = run(["simulate", "--alpha", "0.6", "--k", "1", "--trials", "100",
                          "--plot", str(bare), "--no-progress"], capsys)
    assert code == 0, err
    assert bare.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {bare}" in out and not (tmp_path / "which_k.png").exists()


def test_plot_without_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    code, out, err = run(["simulate", "--trials", "100", "--plot", str(tmp_path / "x.png")],
                         capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert 'pip install "specdec_fast[plot]"' in err
    assert out == "" and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv", [
    ["simulate", "--alpha", "x"],
    ["simulate", "--alpha", "1.5"],
    ["simulate", "--alpha", "0.6,,0.8"],
    ["simulate", "--alpha", "0.0001"],               # below what the synthetic pairs reach
    ["simulate", "--k", "5-1"],
    ["simulate", "--k", "a"],
    ["simulate", "--trials", "0"],
    ["simulate", "--trials", "-5"],
    ["simulate", "--trials", "1.5"],
    ["simulate", "--cost-ratio", "-1"],
    ["simulate", "--semantics", "paper"],
    ["simulate", "--confidence", "1"],
    ["simulate", "--bogus"],
    ["simulate", "--probs", "/no/such/file.npz"],
    ["simulate", "--probs", "x.npz", "--alpha", "0.5"],
    ["simulate", "--plot", "/no/such/folder/x.png"],
    ["simulate", "--seed", str(2 ** 64)],
    ["simulate", "--alpha", "0.8", "--vocab", "1048576", "--k", "1-1024"],  # memory
    ["bench", "--alpha", "2"],
    ["bench", "--k", "0"],
    ["bench", "--vocab", "x"],
    ["bench", "--seed", str(2 ** 64)],
    ["bench", "--alpha", "0.05", "--vocab", "64"],   # below what the synthetic pairs reach
    ["bench", "--vocab", "1"],                       # one token: every pair agrees (alpha 1)
    ["frob"],
    ["--bogus"],
])
def test_bad_arguments_one_line_exit_2(argv, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("specdec-fast: error: ")
    assert "Traceback" not in err


def test_bad_probs_contents(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, draft=np.ones((2, 5)), other=np.ones((3, 5)))
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "'draft' and 'target'" in err and err.count("\n") == 1
    np.savez(path, draft=-np.ones((2, 5)), target=np.ones((3, 5)))
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "non-negative" in err and "'draft'" in err
    np.savez(path, draft=np.ones((2, 5)), target=np.zeros((3, 5)))
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "'target': row 0 (scenario 0) sums to 0" in err
    np.savez(path, draft=np.ones((2, 5), dtype=complex), target=np.ones((3, 5)))
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "'draft' must hold real numbers" in err and err.count("\n") == 1
    path.write_text("not a zip file")
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "not an .npz file" in err and err.count("\n") == 1
    path.write_bytes(b"PK\x03\x04 a broken zip")
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "cannot read it as .npz" in err and err.count("\n") == 1
    npy = tmp_path / "rows.npy"
    np.save(npy, np.ones((3, 5)))
    code, _, err = run(["simulate", "--probs", str(npy)], capsys)
    assert code == 2 and "not an .npz file" in err and err.count("\n") == 1
    np.savez(path, draft=np.ones((0, 2, 5)), target=np.ones((0, 3, 5)))
    code, _, err = run(["simulate", "--probs", str(path)], capsys)
    assert code == 2 and "holds no scenario" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"], ["bench", "--help"]])
def test_help(argv, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "usage: specdec-fast" in out


def test_version_and_no_command(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and specdec_fast.__version__ in out
    code, out, _ = run([], capsys)
    assert code == 2 and "simulate" in out and "bench" in out


def test_bench_json(capsys):
    code, out, err = run(["bench", "--k", "1,3", "--vocab", "16,64", "--budget", "0",
                          "--json", "--no-progress"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert [(r["k"], r["vocab_size"]) for r in report["rows"]] == [(1, 16), (3, 16), (1, 64),
                                                                   (3, 64)]
    for r in report["rows"]:
        for key in ("reference_s", "fast_list_s", "fast_numpy_s", "ratio_list", "ratio_numpy"):
            assert r[key] > 0
        assert r["ratio_numpy"] == pytest.approx(r["reference_s"] / r["fast_numpy_s"])


def test_bench_table(capsys):
    code, out, _ = run(["bench", "--k", "2", "--vocab", "32", "--budget", "0", "--no-progress"],
                       capsys)
    assert code == 0
    assert "reference" in out and "fast (numpy)" in out
    assert any(l.split()[:2] == ["2", "32"] for l in out.splitlines())


def test_ctrl_c_stops_cleanly(capsys, ctrl_c_after):
    ctrl_c_after(1.0)
    code, out, err = run(["simulate", "--alpha", "0.8", "--k", "1-3", "--trials", "1e9",
                          "--json", "--no-progress"], capsys)
    assert code == 130
    assert "Traceback" not in err and "interrupted" in err
    report = json.loads(out)
    assert report["interrupted"]
    rows = report["scenarios"][0]["rows"]
    assert len(rows) == 1 and 0 < rows[0]["trials"] < 10**9
    assert report["k_requested"] == [1, 2, 3]


def test_ctrl_c_table_names_the_best_so_far(capsys, ctrl_c_after):
    ctrl_c_after(1.0)
    code, out, err = run(["simulate", "--alpha", "0.8", "--k", "1-3", "--trials", "1e9",
                          "--no-progress"], capsys)
    assert code == 130 and "Traceback" not in err
    assert "best K so far = 1" in out and "try a wider --k" not in out


def test_python_dash_m(tmp_path):
    # Run from an empty folder: `python -m` puts the working directory first on sys.path,
    # and the project root holds the uncompiled source package.
    root = os.path.dirname(os.path.dirname(os.path.abspath(specdec_fast.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "specdec_fast", "simulate", "--alpha", "0.5",
                           "--k", "1", "--trials", "100", "--json"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scenarios"][0]["rows"][0]["k"] == 1
    bad = subprocess.run([sys.executable, "-m", "specdec_fast", "simulate", "--k", "x"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_too_many_trials_is_a_usage_error(capsys):
    code = main(["simulate", "--alpha", "0.5", "--k", "1", "--trials", "1e19"])
    err = capsys.readouterr().err
    assert code == 2 and "--trials is at most" in err and "Traceback" not in err


def _zip_of(members, patch=None):
    """An .npz-like zip of ``members`` (name -> bytes); ``patch(raw, header_offsets)``
    may then alter its bytes."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        offsets = [(info.header_offset, info) for info in z.infolist()]
    raw = bytearray(buf.getvalue())
    if patch is not None:
        patch(raw, offsets)
    return bytes(raw)


def _corrupt_deflate(raw, offsets):
    for offset, info in offsets:        # a reserved block type: zlib refuses the stream
        start = offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw[start] = 0xFF


def _set_field(local, central, value):
    def patch(raw, offsets):
        for signature, at in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
            i = raw.find(signature)
            while i >= 0:
                raw[i + at:i + at + 2] = value.to_bytes(2, "little")
                i = raw.find(signature, i + 4)
    return patch


@pytest.mark.parametrize("patch", [_corrupt_deflate, _set_field(8, 10, 99),
                                   _set_field(6, 8, 1)],
                         ids=["corrupt_deflate", "compression_method_99", "encrypted"])
def test_probs_members_that_cannot_be_read(patch, tmp_path, capsys):
    """Zip members zipfile cannot decompress (zlib.error, NotImplementedError,
    RuntimeError) are a one-line usage error, not a traceback."""
    members = {"draft.npy": b"\x00" * 200, "target.npy": b"\x00" * 200}
    path = tmp_path / "bad.npz"
    path.write_bytes(_zip_of(members, patch))
    code, _, err = run(["simulate", "--probs", str(path), "--no-progress"], capsys)
    assert code == 2 and "cannot read it as .npz" in err and err.count("\n") == 1


def test_alpha_per_position_of_rows_whose_sum_overflows(tmp_path, capsys):
    """Rows of entries near 1e308 sum to inf; the report's alpha per position is computed
    from the same normalised rows as the simulation (here 0.5), not inf-divided to 0."""
    path = tmp_path / "huge.npz"
    np.savez(path, draft=np.full((1, 4), 1e308),
             target=np.array([[0.5, 0.5, 0.0, 0.0], [0.25] * 4]))
    code, out, err = run(["simulate", "--probs", str(path), "--trials", "2000", "--json",
                          "--no-progress"], capsys)
    assert code == 0 and err == ""
    scenario = json.loads(out)["scenarios"][0]
    assert scenario["alpha_per_position"] == [0.5]
