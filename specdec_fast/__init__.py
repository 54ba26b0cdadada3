"""specdec_fast: the exact, fast verify step of draft-target speculative decoding."""
try:
    from specdec_fast import _batch, _core, _kernel, _rng, _simulate  # noqa: F401  compiled
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "specdec_fast's compiled core is missing or failed to load "
        f"({exc}). Build it with `pip install .` from the project root "
        "(or `python setup.py build_ext --inplace` for development)."
    ) from exc

from specdec_fast._core import get_default_rng, seed, speculative_decode_sim  # noqa: E402
from specdec_fast._rng import Rng  # noqa: E402
from specdec_fast.batch import VerifyResult, verify_batch  # noqa: E402
from specdec_fast import synthetic, theory  # noqa: E402
from specdec_fast.simulate import SimulationResult, simulate  # noqa: E402

__all__ = ["Rng", "SimulationResult", "VerifyResult", "get_default_rng", "seed", "simulate",
           "speculative_decode_sim", "synthetic", "theory", "verify_batch"]
__version__ = "0.1.0"
