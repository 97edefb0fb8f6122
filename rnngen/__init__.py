"""rnngen: train character-level and MIDI recurrent networks, and sample from them.

    import rnngen
    m = rnngen.load("shakespeare")
    print(m.sample(300, prime="ROMEO:", seed=7)[0])

`load`, `train`, `Model`, `Piece` and `Score` are in rnngen/api.py; errors are `RnngenError`. Importing
rnngen is cheap: torch is imported when a model is first loaded or trained.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from rnngen.errors import RnngenError

# torch warns on import when NumPy is absent; rnngen never needs NumPy, so the warning is noise.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

__version__ = "0.1.0"
__all__ = ["Model", "Piece", "RnngenError", "Score", "load", "train"]

if TYPE_CHECKING:
    from rnngen.api import Model, Piece, Score, load, train


def __getattr__(name: str) -> Any:
    if name in ("Model", "Piece", "Score", "load", "train"):
        from rnngen import api

        return getattr(api, name)
    raise AttributeError(f"module 'rnngen' has no attribute {name!r}")
