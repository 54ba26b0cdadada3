# The compiled Monte Carlo kernel behind specdec_fast.simulate (see _simulate.pyx).
from typing import Optional

import numpy as np
import numpy.typing as npt

def alias_tables(
    weights: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]: ...
def chunk_states(keys: npt.ArrayLike, chunks: int) -> npt.NDArray[np.uint64]: ...

class Scenarios:
    @property
    def S(self) -> int: ...
    @property
    def K(self) -> int: ...
    @property
    def V(self) -> int: ...
    @property
    def bonus(self) -> bool: ...
    @property
    def reference(self) -> bool: ...
    def __init__(
        self,
        q_prob: npt.NDArray[np.float64],
        q_alias: npt.NDArray[np.int32],
        ratio: npt.NDArray[np.float64],
        r_prob: npt.NDArray[np.float64],
        r_alias: npt.NDArray[np.int32],
        b_prob: npt.NDArray[np.float64],
        b_alias: npt.NDArray[np.int32],
        bonus: bool,
        reference: bool,
    ) -> None: ...
    def run(
        self,
        s: int,
        state: npt.NDArray[np.uint64],
        trials: int,
        accepted_hist: npt.NDArray[np.int64],
        emitted_hist: npt.NDArray[np.int64],
        token_counts: Optional[npt.NDArray[np.int64]] = None,
    ) -> None: ...
