from typing import Any, Literal, Sequence

from specdec_fast._rng import Rng

def seed(value: int | None = None) -> None: ...
def get_default_rng() -> Rng: ...
def speculative_decode_sim(
    draft_probs: Any,
    target_probs: Any,
    draft_tokens: Sequence[int] | Any,
    vocab_size: int,
    *,
    rng: Rng | int | None = None,
    uniforms: Sequence[float] | Any | None = None,
    check_all: bool = False,
    semantics: Literal["reference", "exact"] = "reference",
) -> dict[str, Any]: ...
def call_floor(
    draft_probs: Any,
    target_probs: Any,
    draft_tokens: Sequence[int] | Any,
    vocab_size: int,
    *,
    rng: Rng | int | None = None,
    uniforms: Sequence[float] | Any | None = None,
    check_all: bool = False,
    semantics: Literal["reference", "exact"] = "reference",
) -> dict[str, Any]: ...
