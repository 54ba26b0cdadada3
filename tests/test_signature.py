"""The drop-in's signature: the reference's parameters, visible to ``inspect`` and
usable by name, then its own keyword-only ones.  (It is compiled as a builtin
function, whose signature comes from its docstring's first line.)"""
import inspect

import specdec_fast
from specdec_fast._core import call_floor
from specdec_fast.reference import speculative_decode_sim as reference_sim

KEYWORD_ONLY = {"rng": None, "uniforms": None, "check_all": False, "semantics": "reference"}


def test_signature_is_the_references_then_keyword_only_options():
    for fn in (specdec_fast.speculative_decode_sim, call_floor):
        params = inspect.signature(fn).parameters
        positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        reference = [p for p in inspect.signature(reference_sim).parameters.values()
                     if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in positional] == [p.name for p in reference]
        assert all(p.default is p.empty for p in positional)
        assert {name: p.default for name, p in params.items()
                if p.kind is p.KEYWORD_ONLY} == KEYWORD_ONLY


def test_arguments_by_name_as_by_position():
    draft = [[0.25, 0.75], [0.5, 0.5]]
    target = [[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]
    uniforms = [0.9, 0.6]
    by_position = specdec_fast.speculative_decode_sim(draft, target, [1, 0], 2, uniforms=uniforms)
    by_name = specdec_fast.speculative_decode_sim(
        vocab_size=2, draft_tokens=[1, 0], target_probs=target, draft_probs=draft,
        uniforms=uniforms)
    assert by_name == by_position
    # The first draft rejected (0.9 >= 0.5 / 0.75), corrected from the residual [0.25, 0].
    assert by_position["tokens"] == [0]
