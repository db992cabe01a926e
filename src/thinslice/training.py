"""What every training loop shares: device choice, seeding, atomic checkpoints, loss log."""

from __future__ import annotations

import csv
import ctypes
import hashlib
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import ThinsliceError
from .interpolate import Upsampled
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


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision networks run in on `device` (None: float32, on the CPU): bfloat16
    where the GPU computes in it natively, else float16, whose training needs loss scaling
    (torch.amp.GradScaler) to keep small gradients from vanishing."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def release_freed_heap() -> None:
    """Give the C heap's freed pages back to the OS (glibc's malloc_trim; elsewhere nothing).
    Making one subject's training pairs allocates and frees a few hundred MB in pieces; glibc
    keeps much of it, more with each subject, so a cohort's process would grow by about 1 MB of
    anonymous memory per subject without this (make bench-scale: 358 -> 486 MB from 1 to 128 scans)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):   # no C library by that call (macOS, Windows)
        pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a torn checkpoint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)   # through a Python file: a full disk raises OSError, not RuntimeError


def load_checkpoint(path: str | Path) -> dict | None:
    """The checkpoint or model file at `path`, or None when there is none yet. Read with torch's
    safe loader: tensors and plain Python values only, so a file runs no code when loaded."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # torch's advice to load it unsafely is not for thinslice's files
        raise ThinsliceError(f"{path}: not a thinslice checkpoint, or one of an older thinslice that holds more "
                             f"than tensors and plain values; delete it to start over") from None
    except Exception as exc:
        raise ThinsliceError(f"{path}: checkpoint cannot be read ({exc}); delete it to start over") from None


def data_fingerprint(*items) -> str:
    """A digest of the training data (arrays by shape, dtype and bytes; other items by repr)."""
    h = hashlib.blake2b(digest_size=16)
    update_fingerprint(h, items)
    return h.hexdigest()


def update_fingerprint(h, items) -> None:
    """Add `items` to the running digest `h` (data_fingerprint of data that arrives in parts)."""
    for item in items:
        if isinstance(item, Upsampled):      # its slices, axis and factor define it
            update_fingerprint(h, ("upsampled", item.axis, item.factor, item.slices))
        elif isinstance(item, np.ndarray):
            a = np.ascontiguousarray(item)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(repr(item).encode())


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
    """Every random generator's state, so that a resumed run continues the same stream; numpy's
    key array as a list, since the safe loader reads no numpy arrays."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, key.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


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


class ThreadTuner:
    """Keeps CPU training fast when other processes share its cores.

    torch's OpenMP threads meet at the end of every parallel region, so when a neighbour
    holds one of the cores, the thread that waits for it stalls the others: with 2 threads
    on 2 cores beside one busy process a step takes about 3x as long, where 1 thread loses
    nothing. The tuner times windows of steps (`window_s` seconds each); every
    `probe_every` windows it times one window at the next thread count down or up the
    ladder n, n/2, n/4, ..., 1 and keeps it when it steps faster. The count so follows the
    free cores as neighbours come and go, at a cost of a few percent on an idle machine.
    On CUDA, or with one thread, it does nothing.
    """

    def __init__(self, device: torch.device, window_s: float = 2.0, probe_every: int = 10,
                 log=sys.stderr):
        n = torch.get_num_threads()
        self.ladder = [n]
        while self.ladder[-1] > 1:
            self.ladder.append(self.ladder[-1] // 2)
        self.enabled = device.type == "cpu" and n > 1
        self.window_s, self.probe_every, self.log = window_s, probe_every, log
        self.current = 0              # index into the ladder
        self.probe: int | None = None  # index being timed, if any
        self.step_time: dict[int, float] = {}
        self.windows = probe_every - 1  # first probe after one window: a busy machine is found early
        self.down = True              # direction of the next probe
        self._start_window()

    def _start_window(self) -> None:
        self.t0 = None   # the first step of a window is not timed: it pays for any thread change
        self.steps = 0

    def _use(self, index: int) -> None:
        torch.set_num_threads(self.ladder[index])
        self._start_window()

    def step(self) -> None:
        """Call once after every training step."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
            return
        self.steps += 1
        elapsed = now - self.t0
        if elapsed < self.window_s or self.steps < 3:
            return
        per_step = elapsed / self.steps
        if self.probe is not None:
            probe, self.probe = self.probe, None
            if per_step < 0.95 * self.step_time[self.current]:
                print(f"CPU threads {self.ladder[self.current]} -> {self.ladder[probe]}: "
                      f"{self.step_time[self.current] / per_step:.2f}x faster steps", file=self.log)
                self.current = probe
            self.step_time[probe] = per_step
            self._use(self.current)
            return
        self.step_time[self.current] = per_step
        self.windows += 1
        candidates = [i for i in (self.current + 1, self.current - 1) if 0 <= i < len(self.ladder)]
        if self.windows >= self.probe_every and candidates:
            self.windows = 0
            down = [i for i in candidates if i > self.current]
            up = [i for i in candidates if i < self.current]
            self.probe = (down if (self.down and down) or not up else up)[0]
            self.down = not self.down
            self._use(self.probe)
        else:
            self._start_window()

    def close(self) -> None:
        """Give back the thread count the training started with."""
        if self.enabled:
            torch.set_num_threads(self.ladder[0])
