"""The settings of the two networks, each stated once: every field of VAEConfig and SRConfig
carries its default, description and constraints. An instance is checked against them when it
is made, and the workflow's config schema (workflow/schemas/config.schema.yaml, keys vae.train
and sr.train) is generated from them, so that a bad value stops a run before any job starts.

Adding a setting: one `setting(...)` field here, then `python -m thinslice.settings` to
regenerate the schema. Torch-free, so that the generator and the workflow need no torch.
"""

import copy
import numbers
import operator
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from . import methods
from .errors import ThinsliceError

RECON_LOSSES = ("l1", "l2")
SR_LOSSES = ("l1", "l2", "l1_then_l2")
# Latent paths along the slice axis: linear and slerp mix the two neighbouring slices;
# cubic is a cubic B-spline through the latents of all slices.
INTERPOLATIONS = ("cubic", "linear", "slerp")
PAIRWISE_INTERPOLATIONS = ("linear", "slerp")
# What a synthetic volume is made of. residual: the decoded latent path plus the real slices'
# reconstruction errors interpolated along it (real slices exact, detail the decoder loses kept);
# decoded: the decoded latent path alone; kept: decoded, with the real slices put back.
SYNTHESES = ("residual", "decoded", "kept")
ARCHITECTURES = ("2d", "3d")
# Slice profiles of an acquisition: gaussian (FWHM = thickness), box (width = thickness), skip (no blur).
SLICE_MODELS = ("gaussian", "box", "skip")
# The slice model of a real scan unless one is named: a 2D slice's excitation profile is flat-topped
# with steep edges, closer to a box of the stated thickness than to a Gaussian of that FWHM (which
# puts a quarter of its weight outside the slice); held-out real slices are predicted better with
# it. A simulated scan keeps the profile it was simulated with.
DEFAULT_SLICE_MODEL = "box"

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
_WORDS = {"boolean": "true or false", "integer": "an integer", "number": "a number", "string": "a string"}
_BOUNDS = {"minimum": (operator.ge, ">="), "exclusiveMinimum": (operator.gt, ">"),
           "maximum": (operator.le, "<="), "exclusiveMaximum": (operator.lt, "<")}


def setting(default, description: str, **constraints):
    """A settings field: its default, its description and its JSON-schema constraints
    (enum, minimum, exclusiveMinimum, maximum, exclusiveMaximum)."""
    unknown = set(constraints) - {"enum", *_BOUNDS}
    if unknown:
        raise TypeError(f"unknown constraint(s) {sorted(unknown)}")
    return field(default=default, metadata={"description": description, **constraints})


def _as_kind(value, kind: str):
    """`value` as the Python type of JSON-schema type `kind`, or None when it is not of it.
    As in JSON schema, 2.0 is an integer and true is no number; numpy scalars count too."""
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "string":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if kind == "number":
        return float(value)
    if isinstance(value, numbers.Integral) or float(value).is_integer():
        return int(value)
    return None


def check_fields(config) -> None:
    """Check every setting of `config` against its field's constraints and store it as a plain
    Python value (numpy scalars and 2.0 for an integer are accepted, as the schema accepts them).
    ThinsliceError names the first bad key, e.g. sr.train.channels."""
    for f in fields(config):
        key, value, rules = f"{config.SECTION}.{f.name}", getattr(config, f.name), f.metadata
        kind = JSON_TYPES[f.type]
        plain = _as_kind(value, kind)
        if plain is None:
            raise ThinsliceError(f"{key} must be {_WORDS[kind]}, got {value!r}")
        if "enum" in rules and plain not in rules["enum"]:
            raise ThinsliceError(f"{key} must be one of {', '.join(rules['enum'])}, got {value!r}")
        for bound, (holds, sign) in _BOUNDS.items():
            if bound in rules and not holds(plain, rules[bound]):
                raise ThinsliceError(f"{key} must be {sign} {rules[bound]}, got {value!r}")
        setattr(config, f.name, plain)


class Settings:
    """What the settings of both networks share: checked when made, made from a config section."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ThinsliceError naming the first bad key."""
        check_fields(self)

    @classmethod
    def from_dict(cls, settings: dict):
        """The settings from a dict (a config's vae.train or sr.train); unknown keys are an error
        naming the section."""
        known = sorted(f.name for f in fields(cls))
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ThinsliceError(f"{cls.SECTION}: unknown setting(s) {unknown}; known: {known}")
        return cls(**settings)


@dataclass
class VAEConfig(Settings):
    """Stage 1, the slice VAE: architecture, loss and training schedule."""

    SECTION: ClassVar[str] = "vae.train"

    levels: int = setting(2, "downsamplings: the latent map is the slice size / 2**levels", minimum=0)
    base_channels: int = setting(16, "feature channels at full resolution (x2 per level, at most x8)", minimum=1)
    latent_channels: int = setting(8, "channels of the latent map", minimum=1)
    beta: float = setting(1e-4, "weight of the KL term (KL in nats per image pixel)", minimum=0)
    kl_warmup_steps: int = setting(500, "the KL weight rises linearly from 0 to beta over these steps", minimum=0)
    recon_loss: str = setting("l1", "reconstruction loss: l1 | l2 (mean per pixel)", enum=RECON_LOSSES)
    interpolation_weight: float = setting(
        1.0, "weight of the loss on real slices decoded from the mix of their neighbours' latents "
        "(0: reconstruction only)", minimum=0)
    max_gap: int = setting(3, "the neighbours mixed for that loss lie 2..max_gap real slices apart", minimum=2)
    adversarial_weight: float = setting(0.0, "> 0 adds a PatchGAN discriminator (hinge loss) with this weight",
                                        minimum=0)
    steps: int = setting(2000, "optimizer steps in all", minimum=0)
    batch_size: int = setting(16, "crops per step (with the interpolation loss: triples of slices)", minimum=1)
    crop_size: int = setting(64, "side of the random square crops, pixels (slices smaller are zero-padded); "
                             "a multiple of 2**levels", minimum=1)
    learning_rate: float = setting(1e-3, "Adam learning rate (constant, so a run can be extended by raising steps)",
                                   exclusiveMinimum=0)
    ema_decay: float = setting(0.995, "synthesis uses this moving average of the weights (0: the last weights)",
                               minimum=0, exclusiveMaximum=1)
    checkpoint_every: int = setting(500, "steps between checkpoints (one is also written at the end)", minimum=1)
    seed: int = setting(0, "seed of weights, crops, flips and sampling noise", minimum=0)

    def validate(self) -> None:
        super().validate()
        if self.crop_size % 2 ** self.levels:   # the crops pass the downsamplings whole
            raise ThinsliceError(f"{self.SECTION}.crop_size ({self.crop_size}) must be a multiple of "
                                 f"2**levels = {2 ** self.levels}")


@dataclass
class SRConfig(Settings):
    """Stage 2, the SR network and its training (defaults: the ch2-z4 benchmark choice)."""

    SECTION: ClassVar[str] = "sr.train"

    architecture: str = setting("2d", '"2d": through-plane slices, both orientations averaged | "3d": 3D CNN on '
                                "patches (synthetic pairs only)", enum=ARCHITECTURES)
    channels: int = setting(32, "feature channels of every hidden convolution", minimum=1)
    depth: int = setting(4, "residual blocks (2 convolutions each) between the input and output convolutions",
                         minimum=0)
    unshuffle: bool = setting(True, "process groups of r output samples along the degraded axis as channels "
                              "(r x cheaper, knows the real slices)")
    patch_size: int = setting(24, "training patch side in output-grid voxels (rounded up to a multiple of r)",
                              minimum=1)
    batch_size: int = setting(64, "patches per training step", minimum=1)
    steps: int = setting(6000, "optimiser steps (in all, with `rounds`)", minimum=1)
    learning_rate: float = setting(2e-3, "Adam learning rate at the start, cosine-decayed to 0 over `steps`",
                                   exclusiveMinimum=0)
    loss: str = setting("l1_then_l2", "pixel loss: l1 (the conditional median: sharpest on clean scans) | l2 (the "
                        "mean, which PSNR rewards where the slices leave much unknown) | l1_then_l2 (L1 for the "
                        "first two thirds of the steps, then L2 at L1's gradient scale: L1's score on simulated "
                        "scans, L2's gain on held-out real slices)", enum=SR_LOSSES)
    gradient_loss_weight: float = setting(0.0, "weight of the L1 loss on finite differences (0 = off), beside the "
                                          "pixel loss", minimum=0)
    synthetic_share: float = setting(0.1, "with synthetic and self pairs together (sr_both): share of patches "
                                     "drawn from the synthetic ones", minimum=0, maximum=1)
    foreground_fraction: float = setting(0.9, "share of patches centred on a foreground voxel (target above the "
                                         "threshold)", minimum=0, maximum=1)
    foreground_threshold: float = setting(0.1, "foreground: target > min + this x (99th percentile - min), per target "
                                          "volume (a scan's self pairs share one)",
                                          minimum=0, exclusiveMaximum=1)
    match_noise: bool = setting(True, "top the pairs' simulated thick slices up to the noise level "
                                "estimated from the real scan (blurring averaged theirs down)")
    noise_scale: float = setting(1.0, "with match_noise, the simulated thick slices are topped up to this times "
                                 "the estimated level. The estimate assumes white noise, so it reads noise that "
                                 "the scanner's reconstruction filtered low: 2 to 3 for such scans (a sign: sr_self's "
                                 "periodic_artifact well above cubic's); noise-free scans lose by it",
                                 exclusiveMinimum=0)
    denoise_targets: bool = setting(True, "self pairs take their targets from the scan denoised within its slices "
                                    "(non-local means at the estimated noise level), their inputs from the scan as "
                                    "it is: the network learns to leave the slices' noise out")
    all_offsets: bool = setting(True, "self pairs simulate the thick slices at each of the r offsets of the output "
                                "grid, not only through its first sample (r times the pairs, and the disk they "
                                "take while training)")
    rotations: int = setting(1, "self pairs also from n copies of the scan rotated about its slice axis by "
                             "90 k / (n + 1) degrees, k = 1 .. n: the slices simulated across oblique directions "
                             "of the anatomy too (n + 1 times the pairs)", minimum=0)
    scale: float = setting(0.6, "below 1, self pairs also from the scan and its rotated copies read as if "
                           "their voxels were this times their size: the anatomy smaller against the slice "
                           "profile (twice the pairs)", exclusiveMinimum=0, maximum=1)
    flip: bool = setting(True, "random flips of the patches (the slice profile is symmetric)")
    rounds: int = setting(1, "self pairs: the steps are shared between this many rounds, each after the first "
                          "training the network on from the scans' own self pairs and as many again made from "
                          "the scans with their slices as it restores them (its output at the slices' positions: "
                          "in-plane images without the slices' thickness, like the through-plane images it is "
                          "applied to)", minimum=1)
    checkpoint_every: int = setting(500, "steps between atomic checkpoints (and at the end)", minimum=1)
    log_every: int = setting(50, "steps between rows of the loss CSV (means over the interval)", minimum=1)
    seed: int = setting(0, "seeds weights and patch sampling: same config, same numbers on one CPU thread", minimum=0)

    def validate(self) -> None:
        super().validate()
        if self.steps < self.rounds:   # every round trains
            raise ThinsliceError(f"{self.SECTION}.steps ({self.steps}) must be at least rounds ({self.rounds})")


# --------------------------------------------------------------------------- the config schema

def schema_block(cls) -> dict:
    """The JSON-schema object of a settings dataclass (the config schema's vae.train or sr.train)."""
    properties = {}
    for f in fields(cls):
        rules = dict(f.metadata)
        description = rules.pop("description")
        prop = {"type": JSON_TYPES[f.type]}
        if "enum" in rules:
            prop["enum"] = list(rules.pop("enum"))
        prop.update(rules)
        prop.update(default=f.default, description=description)
        properties[f.name] = prop
    return {"type": "object", "additionalProperties": False, "default": {},
            "description": "network and training settings", "properties": properties}


def generated_schema(schema: dict) -> dict:
    """The config schema with its generated parts made from this package: the settings of the
    networks, the latent paths and syntheses, the slice models and the method names."""
    schema = copy.deepcopy(schema)
    props = schema["properties"]
    props["methods"]["items"]["enum"] = list(methods.NAMES)
    props["slice_model"]["enum"] = [*SLICE_MODELS, None]
    props["simulate"]["properties"]["profile"]["enum"] = list(SLICE_MODELS)
    vae = props["vae"]["properties"]
    vae["interpolation"]["enum"] = list(INTERPOLATIONS)
    vae["synthesis"]["enum"] = list(SYNTHESES)
    vae["train"] = schema_block(VAEConfig)
    props["sr"]["properties"]["train"] = schema_block(SRConfig)
    return schema


if __name__ == "__main__":   # python -m thinslice.settings [SCHEMA]
    def rewrite(path: Path) -> None:
        """Rewrite the generated parts of the config schema at `path` in place. Defined here, as
        only this command needs yaml: the steps that import the settings do not."""
        import yaml

        schema = generated_schema(yaml.safe_load(path.read_text()))
        path.write_text(yaml.safe_dump(schema, sort_keys=False, width=110, allow_unicode=True))

    rewrite(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA)
