"""`rnngen sample`: resolve the device, model, precision and seed once, then let the model's kind
prime, generate and write (rnngen/text.py, rnngen/midi/kind.py)."""

from __future__ import annotations

import secrets
from pathlib import Path

from rnngen import checkpoint as checkpoint_io
from rnngen.config import SampleConfig
from rnngen.device import resolve_device
from rnngen.kinds import kind_of
from rnngen.sample import make_step, step_precision
from rnngen.tags import sample_tags
from rnngen.text import Sampling


def run(cfg: SampleConfig) -> None:
    dev = resolve_device(cfg.device)
    model, codec, ckpt = checkpoint_io.load_model(cfg.checkpoint)
    model.to(dev)
    kind = kind_of(codec)
    precision = step_precision(cfg.precision, dev, model, cfg.num_samples)
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
    step = make_step(model, precision, cfg.num_samples, dev)
    tags = sample_tags(model.cfg.tags, cfg.tag, cfg.num_samples, ckpt.get("train", {}).get("tag_tokens"), seed)
    temperature = kind.default_temperature if cfg.temperature is None else cfg.temperature
    kind.sample(codec, cfg, Sampling(model, step, dev, seed, cfg.length or kind.default_length,
                                     Path(cfg.checkpoint).stem or "sample", temperature, tags))
