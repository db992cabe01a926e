"""What each `thinslice` subcommand does (its arguments are in cli.py): read the arguments, call
the package. Every handler imports what it needs when it runs, so the command line starts fast
and a step loads only its own dependencies."""

from __future__ import annotations

from pathlib import Path

from .errors import ThinsliceError


# --------------------------------------------------------------------------- data

def fetch_demo(a):
    from . import fetch

    print(fetch.fetch_demo(a.out, a.cache))


def fetch_ch2(a):
    from . import fetch

    print(fetch.fetch_ch2(a.out, a.system_path))


def simulate(a):
    from . import prepare

    prepare.simulate(a.truth, a.out_lr, a.out_truth, a.axis, a.factor, a.profile, a.fwhm, a.target_spacing, a.noise)


def prepare(a):
    from . import prepare as preparation

    g = preparation.prepare(a.input, a.out_image, a.out_geometry, a.out_mask, echo=a.echo, slice_axis=a.slice_axis,
                            thickness_mm=a.thickness, factor=a.factor, target_spacing_mm=a.target_spacing,
                            output_dtype=a.output_dtype)
    print(f"{a.input}: slice axis {g.slice_axis}, spacing {g.spacing_mm:.4g} mm, thickness "
          f"{g.thickness_mm:.4g} mm, gap {g.gap_mm:.4g} mm, factor {g.factor}, {g.orientation}")


def bids_samples(a):
    from . import bids

    rows = bids.find_scans(a.root, a.suffix)
    bids.write_sample_sheet(rows, a.out)
    known = sum(r["slice_thickness"] is not None for r in rows)
    print(f"{a.out}: {len(rows)} scans, {known} with SliceThickness from their sidecars")


# --------------------------------------------------------------------------- methods

def upsample(a):
    from . import interpolate
    from .io import save_volume
    from .prepare import load_prepared

    lr, g = load_prepared(a.image, a.geometry)
    # interpolation is linear in intensity: normalising first only guards float precision
    data = g.intensity.denormalize(interpolate.upsample(g.intensity.normalize(lr.data), g.slice_axis, g.ratio,
                                                        a.method))
    save_volume(lr.refined(data, g.slice_axis, g.ratio), a.out, g.output_description(a.method), g.output_dtype)


def train_vae(a):
    from . import steps
    from .io import read_json

    steps.train_vae(a.images, a.geometries, a.out, a.checkpoint, a.loss_csv, read_json(a.settings), a.device)


def synthesize(a):
    from . import steps

    steps.synthesize(a.model, a.image, a.geometry, a.out, a.interpolation, a.synthesis, a.device)


def output_grid(a):
    from . import steps

    steps.output_grid(a.image, a.geometry, a.out)


def degrade(a):
    from . import steps

    steps.degrade(a.hr, a.geometry, a.out, a.slice_model)


def train_sr(a):
    from . import steps
    from .io import read_json

    steps.train_sr(a.source, a.images, a.geometries, a.targets or [], a.out, a.checkpoint, a.loss_csv,
                   a.slice_model, read_json(a.settings), a.device)


def infer(a):
    from . import steps

    g = steps.infer(a.model, a.input, a.output, geometry=a.geometry, keep_real_slices=a.keep_real_slices,
                    device=a.device, slice_axis=a.slice_axis, data_consistency=a.data_consistency,
                    uncertainty=a.uncertainty, echo=a.echo, target_spacing_mm=a.target_spacing,
                    output_dtype=a.output_dtype)
    print(f"{a.input} -> {a.output}: x{g.ratio:.4g} along axis {g.slice_axis}, "
          f"{g.spacing_mm:.4g} mm -> {g.target_spacing_mm:.4g} mm")


def eclare(a):
    from . import peer

    peer.run_eclare(a.image, a.geometry, a.out, command=a.command, slice_model=a.slice_model,
                    n_patches=a.n_patches, batch_size=a.batch_size, device=a.device, threads=a.threads or 1)


# --------------------------------------------------------------------------- results

def evaluate(a):
    from . import evaluate as evaluation

    row = evaluation.evaluate(a.output, a.image, a.geometry, a.mask, a.subject, a.method, a.truth, a.slice_model)
    evaluation.write_row(row, a.out)
    if a.qc:
        evaluation.write_row(evaluation.qc_record(row, a.output, a.geometry, a.mask, a.uncertainty, a.truth), a.qc)


def collect(a):
    from . import evaluate as evaluation

    evaluation.collect(a.rows, a.out, a.summary_csv, a.summary_md, skipped=a.skipped)


def collect_qc(a):
    from . import evaluate as evaluation

    evaluation.collect_qc(a.entries, a.out)


def bids_export(a):
    from . import bids
    from .io import read_json

    written = bids.export(a.folder, read_json(a.entries, list), a.suffix, a.slice_model, a.source_dataset)
    print(f"{a.folder}: {len(written)} files")


def figure(a):
    if a.kind == "metrics":
        from .plots import metrics_figure

        if not a.metrics:
            raise ThinsliceError("figure metrics: give --metrics (the run's metrics.csv)")
        return metrics_figure(a.metrics, a.out, methods=a.methods, title=a.title)
    if a.kind == "training":
        from .plots import training_figure

        return training_figure(dict(a.losses or []), a.out, title=a.title)
    from . import figures
    from .io import read_json
    from .scene import Scene

    methods, maps = a.methods or [], dict(a.uncertainty or [])
    if not a.image or not a.geometry:
        raise ThinsliceError(f"figure {a.kind}: give --image and --geometry")
    if len(methods) != len(a.outputs or []):
        raise ThinsliceError("figure: give as many --methods as --outputs")
    if a.kind == "errors" and not a.truth:
        raise ThinsliceError("figure errors: needs --truth")
    if set(maps) - set(methods) or (a.kind == "uncertainty" and not maps):
        raise ThinsliceError("figure uncertainty: give --uncertainty METHOD=NIFTI for methods of --methods")
    extra = {}
    if a.synthetic:
        extra["vae"] = ("VAE-synthesized HR", a.synthetic, False)
    if a.degraded:
        extra["degraded"] = ("synthetic HR degraded", a.degraded, True)
    scene = Scene.load(a.image, a.geometry, dict(zip(methods, a.outputs or [])), truth_path=a.truth, extra=extra)
    title = "\n".join(t for t in (a.title, figures.qc_summary([read_json(p) for p in a.qc or []])) if t)
    if a.kind == "uncertainty":
        return figures.uncertainty_figure(scene, a.out, maps, title=title)
    draw = {"reformats": figures.reformats_figure, "errors": figures.errors_figure,
            "profile": figures.profile_figure, "pipeline": figures.pipeline_figure}[a.kind]
    draw(scene, a.out, title=title)


def bench_table(a):
    from . import benchtable
    from .io import atomic_path

    text = benchtable.markdown([row for d in a.runs for row in benchtable.run_table(d)])
    print(text, end="")
    if a.out:
        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(text)
