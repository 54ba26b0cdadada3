from typing import Any

import numpy as np

from specdec_fast._rng import Rng

def verify_rows(
    target: np.ndarray,
    draft: np.ndarray | None,
    tokens: np.ndarray,
    counts: np.ndarray,
    states: np.ndarray | tuple[Rng, ...] | None,
    uniforms: np.ndarray | None,
    reference: bool,
    greedy: bool,
    out_tokens: np.ndarray,
    out_emitted: np.ndarray,
    out_accepted: np.ndarray,
    start: int,
    stop: int,
) -> tuple[int, int, int, int] | None: ...
def may_overlap(a: np.ndarray, b: np.ndarray) -> bool: ...
def failure_error(
    failure: tuple[int, int, int, int], target: Any, draft: Any, tokens: Any
) -> ValueError: ...
