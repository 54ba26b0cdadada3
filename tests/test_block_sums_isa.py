"""Every ISA copy of the SIMD block sums in ``src/block_sums.h`` is checked.

On x86-64 Linux (glibc) with GCC the header compiles each of its functions three
times, for AVX-512, AVX2 and SSE2, and a GNU ifunc picks one at load time.  The
rest of the suite runs only the copy that the test machine's CPU picks, so a
bug in the others -- which users on other CPUs run -- would pass unnoticed.
This test compiles ``tests/block_sums_check.c``, which calls each copy the CPU
can execute directly (by its ``_avx512f``/``_avx2``/``_sse2`` name) and checks
it against a serial model on pseudo-random rows: crossings, ``*before``, block
sums, ``row_max`` and the ``valid`` flags, and that the copies agree.
"""
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")
CHECKER = os.path.join(TESTS, "block_sums_check.c")
VARIANTS = ["avx512f", "avx2", "sse2"]
# No -march=native (the copies pick their own instruction sets) and no
# -ffast-math (the checks rely on IEEE NaN, infinity and -0.0).
CFLAGS = ["-O2", "-std=gnu11"]


def find_gcc():
    """A command for GCC proper: Clang defines __GNUC__ too but gets no copies."""
    candidates = []
    configured = sysconfig.get_config_var("CC")
    if configured:
        candidates.append(shlex.split(configured))
    candidates += [["cc"], ["gcc"]]
    for command in candidates:
        if not command or shutil.which(command[0]) is None:
            continue
        try:
            macros = subprocess.run(command + ["-dM", "-E", "-x", "c", os.devnull],
                                    capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "__GNUC__" in macros and "__clang__" not in macros:
            return command
    return None


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_every_isa_copy_matches_the_serial_model(tmp_path):
    if not (platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
            and platform.libc_ver()[0] == "glibc"):
        pytest.skip("the three ISA copies exist only on x86-64 Linux with glibc")
    cc = find_gcc()
    if cc is None:
        pytest.skip("no GCC found (sysconfig CC, cc, gcc): the ISA copies need GCC")
    exe = str(tmp_path / "block_sums_check")
    build = subprocess.run(cc + CFLAGS + ["-I", SRC, CHECKER, "-o", exe, "-lm"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, "compiling the checker failed:\n" + build.stderr
    run = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    ran = {line.split(":")[0] for line in lines if ": ok," in line}
    skipped = {line.split(":")[0] for line in lines if ": skipped" in line}
    assert ran | skipped == set(VARIANTS), run.stdout
    assert "sse2" in ran, run.stdout
    flags = cpu_flags()
    for variant in ("avx2", "avx512f"):
        if variant in flags:       # the CPU has it, so the checker must have run it
            assert variant in ran, run.stdout
