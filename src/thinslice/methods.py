"""The methods thinslice runs and compares: one registry read by the workflow's rules, the
benchmark table, the figures, the CLI and the config schema.

Adding a method is one entry here plus the code that makes its outputs: an interpolation is a
name interpolate.py knows, an SR pair source a rule's wildcard and a source in steps.py, anything
else its own rule. Its label and colour in the figures, its rows in the benchmark table, its
model file in the BIDS sidecars and its place in the config schema follow from the entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str                    # in figure legends and panel titles
    color: str                    # one colour per method in every figure
    summary: str                  # one line for the schema's and the report's description
    interpolation: bool = False   # made by rule interpolate: interpolate.upsample with this name
    pairs: str | None = None      # SR methods: the pair source their network trains on
    uses_vae: bool = False        # needs the stage-1 VAE (trained and synthesized first)
    needs_truth: bool = False     # trains on ground truths: benchmark only
    training_title: str | None = None  # title of its loss panel in figures/training.png

    @property
    def is_sr(self) -> bool:
        return self.pairs is not None

    @property
    def model(self) -> str | None:
        """Its model file under results/<run>/models/, or None (interpolation, the peer)."""
        if self.is_sr:
            return f"sr_{self.pairs}.pt"
        return "vae.pt" if self.uses_vae else None

    def benchmark_stages(self) -> tuple[list[str], list[str]]:
        """(training, inference) benchmark-file patterns under results/<run>/benchmarks/:
        training is everything the method needs before it can be applied."""
        vae = ["train_vae.tsv", "synthesize/*.tsv"] if self.uses_vae else []
        if self.is_sr:
            return vae + [f"train_sr/{self.pairs}.tsv"], [f"infer/{self.name}/*.tsv"]
        if self.uses_vae:
            return ["train_vae.tsv"], ["synthesize/*.tsv"]
        if self.interpolation:
            return [], [f"interpolate/{self.name}/*.tsv"]
        return [], [f"{self.name}/*.tsv"]  # trains on each volume itself: all of it is per-subject work


# Reading order of tables and figures: baselines, stage 1, the SR pair sources, the upper bound, the peer.
REGISTRY = {m.name: m for m in (
    Method("linear", "linear", "#1f77b4", "linear interpolation", interpolation=True),
    Method("cubic", "cubic B-spline", "#ff7f0e", "cubic B-spline interpolation", interpolation=True),
    Method("vae", "VAE synthesis", "#9467bd", "stage 1 alone: the synthetic volume", uses_vae=True,
           training_title="VAE (stage 1)"),
    Method("sr_vae", "SR (VAE pairs)", "#d62728", "the paper: SR trained on degraded VAE volumes", pairs="vae",
           uses_vae=True, training_title="SR on VAE pairs (stage 2)"),
    Method("sr_self", "SR (self pairs)", "#2ca02c", "SR trained on the scans' own in-plane axes", pairs="self",
           training_title="SR on self pairs"),
    Method("sr_both", "SR (VAE + self pairs)", "#e377c2", "both pair sources", pairs="both", uses_vae=True,
           training_title="SR on VAE + self pairs"),
    Method("sr_supervised", "SR (supervised)", "#8c564b", "trained on the ground truth: upper bound, benchmark only",
           pairs="supervised", needs_truth=True, training_title="SR supervised (upper bound)"),
    Method("eclare", "ECLARE", "#17becf", "the ECLARE peer, when its command is installed; skipped with a note "
           "otherwise"),
)}
NAMES = list(REGISTRY)
PAIR_SOURCES = [m.pairs for m in REGISTRY.values() if m.is_sr]
INTERPOLATION_METHODS = [m.name for m in REGISTRY.values() if m.interpolation]
OTHER_COLORS = ["#bcbd22", "#7f7f7f", "#393b79", "#637939"]  # for outputs of methods not registered here


def get(name: str) -> Method:
    return REGISTRY[name]


def order(names) -> list[str]:
    """`names` in the registry's reading order, unknown names last (alphabetically)."""
    return sorted(names, key=lambda n: (NAMES.index(n) if n in REGISTRY else len(NAMES), n))


def label(name: str) -> str:
    return REGISTRY[name].label if name in REGISTRY else name


def color(name: str, others: list[str] | None = None) -> str:
    """The method's colour; methods not registered here take the spare colours in the order of `others`."""
    if name in REGISTRY:
        return REGISTRY[name].color
    unknown = [m for m in (others or [name]) if m not in REGISTRY]
    i = unknown.index(name) if name in unknown else 0
    return OTHER_COLORS[i % len(OTHER_COLORS)]
