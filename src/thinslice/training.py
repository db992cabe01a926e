"""What every training loop shares: device choice, seeding, atomic checkpoints, loss log."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .errors import ThinsliceError
from .io import atomic_path


def select_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU. `cuda` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ThinsliceError(f"device '{name}' asked for, but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def configure_device(device: torch.device) -> None:
    """cudnn autotuning on CUDA (fixed patch sizes make it pay off)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a torn checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ThinsliceError(f"{path}: checkpoint cannot be read ({exc}); delete it to start over") from None


def data_fingerprint(*items) -> str:
    """A digest of the training data (arrays by shape, dtype and bytes; other items by repr)."""
    h = hashlib.blake2b(digest_size=16)
    for item in items:
        if isinstance(item, np.ndarray):
            a = np.ascontiguousarray(item)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(repr(item).encode())
    return h.hexdigest()


def load_resumable(path: str | Path, kind: str, fingerprint: str, config: dict,
                   resumable: tuple[str, ...] = ()) -> dict | None:
    """The checkpoint at `path` when it continues this training, else None.

    It continues this training when it was made on the same data (`fingerprint`) with the
    same settings (`config`, except the `resumable` keys). Otherwise the workflow reran the
    training because its inputs or settings changed: training starts over, and says so.
    """
    state = load_checkpoint(path)
    if state is None:
        return None
    if state.get("kind") != kind:
        raise ThinsliceError(f"{path}: not a {kind} checkpoint; delete it or choose another path")
    saved = state.get("config", {})
    differ = sorted(k for k in set(saved) | set(config) if k not in resumable and saved.get(k) != config.get(k))
    why = ("other training data" if state.get("data") != fingerprint
           else f"other settings ({', '.join(differ)})" if differ else None)
    if why:
        print(f"{path}: checkpoint made with {why}; training starts over", file=sys.stderr)
        return None
    return state


def rng_state() -> dict:
    """Every random generator's state, so that a resumed run continues the same stream."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def config_from_dict(cls, settings: dict, section: str):
    """A settings dataclass from a dict; unknown keys are an error naming `section`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ThinsliceError(f"{section}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**settings)


class LossLog:
    """Append-only CSV of training losses: step, then one column per named loss."""

    def __init__(self, path: str | Path, columns: list[str], resume_step: int = 0):
        self.path = Path(path)
        self.columns = ["step", *columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step and self.path.exists():  # keep rows up to the checkpoint, drop the rest
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, **losses: float) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, *(f"{float(losses[c]):.6g}" for c in self.columns[1:])])
            f.flush()
            os.fsync(f.fileno())
