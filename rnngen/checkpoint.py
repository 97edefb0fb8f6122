"""Checkpoint I/O. A checkpoint is plain data: a dict of tensors, str, int, float, bool, list and
dict, loaded with `weights_only=True` so that a file from a stranger can never run code.

    {"format": "rnngen", "version": 1, "kind": "text" | "midi", "codec": {...},
     "model": asdict(ModelConfig), "weights": {name: tensor}, "train": {...},
     "resume": {...}}   # only in the resumable last-state file

Writes are atomic: a temporary file in the same folder, fsync, rename.
"""

from __future__ import annotations

import os
import sys
import pickle
import tempfile
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from rnngen.codec import codec_from_dict
from rnngen.config import ModelConfig
from rnngen.errors import RnngenError, first_line
from rnngen.model import RNNModel

FORMAT = "rnngen"
VERSION = 1
SUFFIX = ".pt"
SHIPPED = ("shakespeare", "bach")


def shipped_dirs() -> list[Path]:
    """Where shipped models live: inside an installed wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    return [here / "checkpoints", here.parent / "checkpoints"]


def resolve(name: str) -> Path:
    """A checkpoint argument is a path, or the name of a shipped model. A bare name that is a folder
    here (a user's own `bach/`, say) still means the shipped model, and stderr says so."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    bare = not path.suffix and os.sep not in name and "/" not in name
    shipped = next((f / f"{name}{SUFFIX}" for f in shipped_dirs() if bare and (f / f"{name}{SUFFIX}").is_file()), None)
    if shipped is not None:
        if path.exists():
            print(f"{name} is a folder here, not a checkpoint: using the shipped model {name}", file=sys.stderr)
        return shipped
    if path.is_dir():
        raise RnngenError(f"{name} is a folder, not a checkpoint file")
    hint = f" (shipped models: {', '.join(SHIPPED)})" if not path.suffix else ""
    raise RnngenError(f"no checkpoint at {name}{hint}")


def last_path(best: Path) -> Path:
    """The resumable last-state checkpoint that sits beside the best one."""
    return best.with_name(best.stem + ".last" + SUFFIX)


def make(model: RNNModel, codec, train: dict[str, Any], resume: dict[str, Any] | None = None) -> dict:
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "kind": codec.kind,
        "codec": codec.to_dict(),
        "model": asdict(model.cfg),
        "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train": train,
    }
    if resume is not None:
        ckpt["resume"] = resume
    return ckpt


class Saver:
    """Where a run's two checkpoints go, and what goes into them beside the model and the trainer's
    state: the codec, and facts about the run (`meta`) that the trainer does not know."""

    def __init__(self, best_path: Path, codec, meta: dict[str, Any] | None = None):
        self.best_path, self.last_path = Path(best_path), last_path(Path(best_path))
        self.codec, self.meta = codec, meta or {}

    def best(self, model: RNNModel, train: dict[str, Any]) -> None:
        save(make(model, self.codec, {**train, **self.meta}), self.best_path)

    def last(self, model: RNNModel, train: dict[str, Any], resume: dict[str, Any]) -> None:
        save(make(model, self.codec, {**train, **self.meta}, resume=resume), self.last_path)


def save(ckpt: dict, path: Path) -> None:
    """Write atomically: readers see the old file or the new one, never half of either."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RnngenError(f"cannot save {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RnngenError(f"cannot save {path}: {e.strerror or e}") from e
        raise
    _fsync_dir(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(name: str | Path) -> dict:
    """Load and check a checkpoint by path or shipped name; every failure is one RnngenError."""
    path = resolve(str(name))
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise RnngenError(f"cannot read {path}: {e.strerror or e}") from e
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise RnngenError(f"{path} is not an rnngen checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RnngenError(f"refusing to load {path}: it holds Python objects, not only plain data, "
                          "and could run code") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise RnngenError(f"{path} is not a readable checkpoint (damaged or truncated: {first_line(e, 200)})") from e
    _check(ckpt, path)
    return ckpt



def _check(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RnngenError(f"{path} is not an rnngen checkpoint")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise RnngenError(f"{path} has checkpoint format version {version}; this rnngen reads up to {VERSION}, upgrade it")
    missing = [k for k in ("kind", "codec", "model", "weights") if k not in ckpt]
    if missing:
        raise RnngenError(f"{path} is damaged: it lacks {', '.join(missing)}")


def model_config(ckpt: dict) -> ModelConfig:
    names = {f.name for f in fields(ModelConfig)}
    try:
        return ModelConfig(**{k: v for k, v in ckpt["model"].items() if k in names})
    except (TypeError, ValueError, AttributeError) as e:
        raise RnngenError(f"the checkpoint's model settings are damaged: {e}") from e


def build_model(ckpt: dict) -> RNNModel:
    """The model a checkpoint describes, with its weights loaded, in eval mode, on the CPU."""
    model = RNNModel(model_config(ckpt))
    try:
        model.load_state_dict(ckpt["weights"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise RnngenError(f"the checkpoint's weights do not fit its model settings: {first_line(e, 200)}") from e
    return model.eval()


def load_model(name: str | Path):
    """(model, codec, checkpoint) for a path or shipped name."""
    ckpt = load(name)
    try:
        codec = codec_from_dict(ckpt["codec"])
    except (KeyError, TypeError) as e:
        raise RnngenError(f"the checkpoint's codec is damaged: {e}") from e
    model = build_model(ckpt)
    if codec.vocab_size != model.cfg.vocab_size:
        raise RnngenError("the checkpoint's vocabulary and model disagree in size")
    return model, codec, ckpt
