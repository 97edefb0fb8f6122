"""`rnngen sample`: load the model as the Python API does (rnngen/api.py), resolve the sampling once,
then let the model's kind prime, generate and write (rnngen/text.py, rnngen/midi/kind.py)."""

from __future__ import annotations

from rnngen.api import load
from rnngen.config import SampleConfig


def run(cfg: SampleConfig) -> None:
    model = load(cfg.checkpoint, device=cfg.device, precision=cfg.precision)
    run = model.sampling(cfg.num_samples, cfg.seed, cfg.length, cfg.temperature, cfg.tag)
    model.kind.sample(model.codec, cfg, run)
