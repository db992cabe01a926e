"""File-level steps of the learned methods: read inputs, call the library, write outputs.

Each function is one `thinslice` subcommand (and one Snakemake rule). Intensities are
normalised with the subject's geometry record for the networks and returned to the
input's scale on output.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import ThinsliceError
from .geometry import Geometry, describe
from .interpolate import working_to_output
from .io import atomic_path, load_volume, output_type, read_nifti, save_volume
from .normalize import foreground_mask, robust_range
from .prepare import load_prepared
from .settings import DEFAULT_SLICE_MODEL
from .volume import Volume

# Relative mismatch of slice spacing or thickness under which a scan fits a model.
FIT_TOLERANCE = 0.02


def _live_loss_csv(checkpoint: str) -> Path:
    """The loss log grows beside the checkpoint, so that a resumed run keeps its history
    (a failed job's declared outputs are deleted); it is copied to the output at the end."""
    return Path(checkpoint).with_suffix(".loss.csv")


def _copy(source: Path, target: str) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _join_loss_logs(logs: list[Path], steps: list[int], target: str) -> None:
    """One loss CSV for all training rounds (`steps` each), steps counted on across them."""
    with atomic_path(target) as tmp, open(tmp, "w") as out:
        for k, log in enumerate(logs):
            lines = log.read_text().splitlines(keepends=True)
            out.write(lines[0] if k == 0 else "")
            for line in lines[1:]:
                step, rest = line.split(",", 1)
                out.write(f"{int(step) + sum(steps[:k])},{rest}")


# --------------------------------------------------------------------------- stage 1

def train_vae(images: list[str], geometries: list[str], out: str, checkpoint: str, loss_csv: str,
              settings: dict | None = None, device: str = "auto") -> None:
    """One VAE for the cohort, on the in-plane slices of every subject's real LR scan."""
    from .settings import VAEConfig
    from .vae import save_vae
    from .vae_training import train_vae as train

    if len(images) != len(geometries):
        raise ThinsliceError("train-vae: give one --geometries file per --images file")
    volumes = []
    for image, geometry in zip(images, geometries):
        lr, g = load_prepared(image, geometry)
        volumes.append(np.moveaxis(g.intensity.normalize(lr.data), g.slice_axis, 0))
    live_csv = _live_loss_csv(checkpoint)
    model = train(volumes, VAEConfig.from_dict(settings or {}), checkpoint, live_csv, device=device)
    save_vae(model, out)
    _copy(live_csv, loss_csv)


def synthesize(model: str, image: str, geometry: str, out: str, interpolation: str = "cubic",
               synthesis: str = "residual", device: str = "auto") -> None:
    """The VAE's synthetic HR volume of one subject, on its working grid (stage 2 trains on
    it; `output_grid` makes it the `vae` method's output), input intensities."""
    from .vae import load_vae
    from .vae import synthesize as synth

    lr, g = load_prepared(image, geometry)
    volume = np.moveaxis(g.intensity.normalize(lr.data), g.slice_axis, 0)
    hr = synth(load_vae(model), volume, g.factor, interpolation=interpolation, synthesis=synthesis,
               device=device)
    hr = np.moveaxis(hr, 0, g.slice_axis)
    save_volume(lr.refined(g.intensity.denormalize(hr), g.slice_axis, g.factor), out)


def output_grid(image: str, geometry: str, out: str) -> None:
    """A volume on a subject's working grid (a synthetic volume) sampled onto its output grid."""
    vol, g = read_nifti(image), Geometry.load(geometry)
    data = working_to_output(vol.data, g.slice_axis, g.factor, g.ratio)
    lr = vol.coarsened(np.empty(g.shape, np.float32), g.slice_axis, g.factor)
    save_volume(lr.refined(data, g.slice_axis, g.ratio), out, g.output_description("vae"),
                g.output_dtype)


def degrade(hr: str, geometry: str, out: str, slice_model: str = DEFAULT_SLICE_MODEL) -> None:
    """A synthetic HR volume degraded with the acquisition's slice model onto the real LR grid."""
    from .degrade import degrade as simulate

    vol = read_nifti(hr)
    g = Geometry.load(geometry)
    lr = simulate(vol.data, g.slice_axis, g.factor, slice_model, g.thickness_mm, g.work_spacing_mm)
    if lr.shape != tuple(g.shape):
        raise ThinsliceError(f"{hr}: degrades to shape {lr.shape}, not the real LR grid {tuple(g.shape)}")
    save_volume(vol.coarsened(lr, g.slice_axis, g.factor), out)


# --------------------------------------------------------------------------- stage 2

# the pair sources whose pairs include self pairs (and so training in rounds)
SELF_PAIR_SOURCES = ("self", "both")


def training_pairs(source: str, images: list[str], geometries: list[str], targets: list[str],
                   slice_model: str, config, restore=None, device: str = "auto"):
    """Training pairs of one source, normalised per subject, made one subject at a time (a generator);
    `config` (settings.SRConfig) says how they are made.

    vae:        (synthetic HR -> degraded, cubic back) per subject; targets = synthetic HR files.
    self:       the real LR scan's in-plane axes degraded to the slice resolution; no targets.
    supervised: (ground truth -> degraded, cubic back); targets = truth files (benchmark only).
    both:       vae and self together.
    config.match_noise: the degraded slices get the noise that brings them to the real scan's level
    (noise.estimate_sd) times `config.noise_scale`, drawn from a generator seeded by (seed, subject index).
    config.denoise_targets: self pairs take their targets from the scan denoised at that level (noise.denoised).
    config.all_offsets, rotations, scale: self pairs at each of the r offsets of the output grid, from rotated
    copies of the scan, and from all of these scaled (pairs.self_pairs).
    restore: an SR network (a previous round's): besides the scan's own, self pairs are made from the
    scan with each slice replaced by the network's output at its position (restored_slices); the
    noise level is still the real scan's.
    """
    from .noise import denoised, estimate_sd
    from .pairs import self_pairs, synthetic_pairs
    from .training import release_freed_heap

    for i, (image, geometry) in enumerate(zip(images, geometries)):
        lr, g = load_prepared(image, geometry)
        data = g.intensity.normalize(lr.data)
        match_noise = config.match_noise
        denoise = config.denoise_targets and source in SELF_PAIR_SOURCES
        level = estimate_sd(data, g.slice_axis) if match_noise or denoise else 0.0
        noise_sd = config.noise_scale * level if match_noise else 0.0   # what the simulated thick slices get
        if level > 0:
            times = "" if config.noise_scale == 1 else f"{config.noise_scale:g} times "
            print(f"{image}: noise level {100 * level:.2g}% of the intensity range" +
                  (f"; simulated thick slices are topped up to {times}it" if match_noise else "") +
                  ("; self pairs' targets are denoised at it" if denoise else ""))
        # the VAE / truth pairs' noise; with `both` they draw on from the last scan's self pairs' generator
        rng = np.random.default_rng([config.seed, i])
        if source in SELF_PAIR_SOURCES:
            scans = [data] if restore is None else [data, restored_slices(restore, data, g.slice_axis, g.factor,
                                                                         device)]
            for scan in scans:
                rng = np.random.default_rng([config.seed, i])   # each scan's noise drawn as in round 1
                clean = denoised(scan, g.slice_axis, level) if denoise and level > 0 else None
                yield from self_pairs(scan, g.slice_axis, g.factor, slice_model, g.thickness_mm, g.spacing_mm,
                                      g.in_plane_mm, noise_sd, rng, config.all_offsets, config.rotations,
                                      config.scale, clean)
        if source in ("vae", "supervised", "both"):
            hr = read_nifti(targets[i])
            yield from synthetic_pairs(g.intensity.normalize(hr.data), g.slice_axis, g.factor, slice_model,
                                       g.thickness_mm, g.work_spacing_mm, noise_sd, rng)
        release_freed_heap()    # what making this subject's pairs freed


def restored_slices(model, data: np.ndarray, axis: int, r: int, device: str = "auto") -> np.ndarray:
    """The scan (normalised) with each slice replaced by the SR network's output at its
    position: the slice restored from its thickness. Self pairs made from it have in-plane
    images as thin as the output's, where the real scan's are averaged over a slice's
    thickness, which the through-plane images of the task are not."""
    from .sr_inference import super_resolve

    out, _ = super_resolve(model, data, axis, device=device)
    return np.ascontiguousarray(np.take(out, np.arange(data.shape[axis]) * r, axis=axis))


def cohort_protocol(paths: list[str], geoms: list[Geometry]) -> tuple[float, float]:
    """The cohort's slice spacing and thickness (medians); a scan of another protocol is an error.
    Thicknesses estimated from the scans (Geometry.thickness_estimated) differ between scans by
    the estimate's error, so only the stated ones must agree; each scan's pairs use its own."""
    spacing = float(np.median([g.spacing_mm for g in geoms]))
    stated = [g.thickness_mm for g in geoms if not g.thickness_estimated]
    thickness = float(np.median(stated or [g.thickness_mm for g in geoms]))
    for p, g in zip(paths, geoms):
        other = abs(g.spacing_mm - spacing) > FIT_TOLERANCE * spacing
        other |= not g.thickness_estimated and abs(g.thickness_mm - thickness) > FIT_TOLERANCE * thickness
        if other:
            raise ThinsliceError(f"{p}: slice spacing {g.spacing_mm:.3g} mm / thickness {g.thickness_mm:.3g} mm "
                                 f"differ from the cohort's {spacing:.3g} / {thickness:.3g} mm; train one model per protocol")
    return spacing, thickness


def train_sr(source: str, images: list[str], geometries: list[str], targets: list[str], out: str,
             checkpoint: str, loss_csv: str, slice_model: str = DEFAULT_SLICE_MODEL,
             settings: dict | None = None, device: str = "auto") -> None:
    """One SR network for the cohort, trained on the pairs of `source`; writes the model file."""
    from .settings import SRConfig
    from .sr import save_model
    from .sr_training import train_sr as train

    if source in ("vae", "supervised", "both") and len(targets) != len(images):
        raise ThinsliceError(f"train-sr --source {source}: give one --targets file per --images file")
    geoms = [Geometry.load(p) for p in geometries]
    factors = {g.factor for g in geoms}
    if len(factors) != 1:
        raise ThinsliceError(f"train-sr: subjects have different factors {sorted(factors)}; one model needs one factor")
    spacing, thickness = cohort_protocol(geometries, geoms)
    config = SRConfig.from_dict(settings or {})
    outputs = {g.output_spacing_mm for g in geoms}
    meta = {"source": source, "factor": factors.pop(), "slice_model": slice_model,
            "spacing_mm": spacing, "thickness_mm": thickness, "normalization": "foreground 0.5-99.5 percentiles",
            "output_spacing_mm": outputs.pop() if len(outputs) == 1 else None}
    rounds = config.rounds if source in SELF_PAIR_SOURCES else 1
    # the steps shared between the rounds, the last taking the remainder
    steps = [config.steps // rounds] * rounds
    steps[-1] += config.steps % rounds
    model, logs = None, []
    for k in range(1, rounds + 1):
        # each round has its own checkpoint (the last the rule's): a killed run resumes in its round
        ck = checkpoint if k == rounds else str(Path(checkpoint).with_stem(f"{Path(checkpoint).stem}.round{k}"))
        if rounds > 1:
            print(f"round {k} of {rounds}, {steps[k - 1]} steps" + (
                f": round {k - 1}'s network goes on training, on the scans' self pairs and those of their "
                "slices as it restores them"
                if k > 1 else ""))
        pairs = training_pairs(source, images, geometries, targets, slice_model, config, model, device)
        logs.append(_live_loss_csv(ck))
        # the pairs wait on disk beside the checkpoint (memory does not grow with the cohort);
        # a killed run's are remade on resume
        spill = Path(f"{ck}.pairs")
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
        try:
            model = train(pairs, replace(config, steps=steps[k - 1]), ck, logs[-1], device=device, meta=meta,
                          spill=spill, init=model)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
    save_model(out, model, config, meta)
    _join_loss_logs(logs, steps, loss_csv)


def _apply(model, meta: dict, g: Geometry, lr_norm: np.ndarray, keep_real_slices: bool, data_consistency: bool,
           device: str, spread: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(output in normalised intensities, spread of the predictions in input units or None) on
    the output grid. The network works on the grid of the model's factor r; a non-integer ratio
    then samples the output grid from it (the spread linearly, so that it stays >= 0)."""
    from .consistency import make_consistent
    from .sr_inference import super_resolve

    axis, r = g.slice_axis, int(meta["factor"])
    out, sd = super_resolve(model, lr_norm, axis, spread=spread, spread_scale=g.intensity.denormalize_spread(1.0),
                            device=device)
    if keep_real_slices:
        index = [slice(None)] * 3
        index[axis] = slice(0, None, r)
        out[tuple(index)] = lr_norm
    out = working_to_output(out, axis, r, g.ratio)
    if sd is not None:
        sd = working_to_output(sd, axis, r, g.ratio, "linear")
    if data_consistency:
        out = make_consistent(out, lr_norm, axis, g.ratio, meta["slice_model"], g.thickness_mm, g.target_spacing_mm)
    return out, sd


def apply_model(model_path: str | Path, lr: Volume, source: str, geometry: Geometry | None = None,
                keep_real_slices: bool = False, device: str = "auto", slice_axis: int | None = None,
                data_consistency: bool = False, spread: bool = False,
                target_spacing_mm: float | None = None) -> tuple[Volume, Geometry, Volume | None]:
    """A trained SR model applied to a scan: its output Volume (input intensities, on the
    scan's output grid), the scan's geometry and, with `spread`, the uncertainty map: the
    per-voxel spread of predictions that should agree (sr_inference.super_resolve; memory-mapped
    from a temporary file: write the output and let it go before reading it), or None.

    `lr` has passed io.check_volume (load_volume checks every scan it reads). With `geometry`
    (inside the workflow) the prepared record is used; without it (a new scan) the slice axis
    and normalisation are found the same way `prepare` finds them, and the scan must fit the
    model: same slice spacing (within 2%) so that the model's factor r gives the model's
    working spacing. The output grid is the model's (its output spacing), or the grid of
    `target_spacing_mm`, no finer than the model's working grid. `data_consistency`: correct
    the output so that it re-acquires to the real slices (consistency.make_consistent, with
    the model's slice model).
    """
    from .sr import load_model

    model, meta = load_model(model_path)
    r = int(meta["factor"])
    g = geometry
    if g is None:   # describe finds the slice axis when none is given
        norm = robust_range(lr.data, foreground_mask(lr.data), source=source)
        target = target_spacing_mm or meta.get("output_spacing_mm")
        g = describe(lr.affine, lr.shape, slice_axis, meta.get("thickness_mm"), None if target else r, target,
                     norm, source=source)
    if g.factor != r:
        raise ThinsliceError(f"{source}: the output grid of {g.target_spacing_mm:.4g} mm needs a model working at "
                             f"x{g.factor}, and model {model_path} works at x{r}; choose a target spacing of "
                             f"at least {g.spacing_mm / r:.4g} mm or train a model for it")
    spacing = meta.get("spacing_mm")
    if spacing and abs(g.spacing_mm - spacing) > FIT_TOLERANCE * spacing:
        raise ThinsliceError(
            f"{source}: slice spacing {g.spacing_mm:.4g} mm does not fit model {model_path}, trained for "
            f"{spacing:.4g} mm slices (x{r} -> {spacing / r:.4g} mm); train a model for this protocol")
    hr, sd = _apply(model, meta, g, g.intensity.normalize(lr.data), keep_real_slices, data_consistency, device, spread)
    spread_map = None if sd is None else lr.refined(sd, g.slice_axis, g.ratio)
    return lr.refined(g.intensity.denormalize(hr, out=hr), g.slice_axis, g.ratio), g, spread_map


def infer(model_path: str, image: str, out: str, geometry: str | None = None, keep_real_slices: bool = False,
          device: str = "auto", slice_axis: int | None = None, data_consistency: bool = False,
          uncertainty: str | None = None, echo: int | None = None,
          target_spacing_mm: float | None = None, output_dtype: str | None = None) -> Geometry:
    """`apply_model` from file to file: a prepared volume with its `geometry` record, or a
    scan in any supported format (`echo`: which echo of a multi-echo DICOM series); the
    uncertainty map goes to `uncertainty` when given. output_dtype: "float32", "input" (the
    integer type the scan's voxels fit) or None (the geometry record's choice)."""
    if geometry:
        lr, g = load_prepared(image, geometry)
    else:
        lr, g = load_volume(image, echo=echo)[0], None
    hr, g, spread = apply_model(model_path, lr, str(image), geometry=g, keep_real_slices=keep_real_slices,
                                device=device, slice_axis=slice_axis, data_consistency=data_consistency,
                                spread=uncertainty is not None, target_spacing_mm=target_spacing_mm)
    method = Path(model_path).stem   # the workflow's models are named after their method
    dtype = g.output_dtype if output_dtype is None else output_type(output_dtype, lr.data)
    save_volume(hr, out, g.output_description(method), dtype)
    del hr   # the output's memory is free before the (memory-mapped) spread is read
    if spread is not None:
        save_volume(spread, uncertainty, g.output_description(method + " uncertainty"))
    return g

