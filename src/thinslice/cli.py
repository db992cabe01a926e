"""The `thinslice` command line: one subcommand per workflow step, the same ones the
Snakemake rules call. Errors a user can fix print as one line; exit status 0 success,
1 internal error, 2 usage error, 3 input error, 4 file error (disk full, read-only,
permissions)."""

from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__, commands
from .errors import FILE_ERROR, INPUT_ERROR, INTERNAL_ERROR, OK, ThinsliceError, file_error_message
from .methods import INTERPOLATION_METHODS, PAIR_SOURCES
from .settings import DEFAULT_SLICE_MODEL, INTERPOLATIONS, SLICE_MODELS, SYNTHESES


def _thickness(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a thickness in mm or 'auto', not {text!r}") from None


def _name_path(text: str) -> tuple[str, str]:
    """NAME=PATH, as --losses and --uncertainty take them."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"takes NAME=PATH, got {text!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thinslice", description=__doc__)
    p.add_argument("--version", action="version", version=f"thinslice {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="STEP")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log", metavar="FILE",
                        help="write everything the step prints to FILE; the console gets only progress "
                             "lines and the one-line error (how the workflow runs each step)")
    torch_options = argparse.ArgumentParser(add_help=False, parents=[common])
    torch_options.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    torch_options.add_argument("--threads", type=int, default=None,
                               help="at most this many CPU threads for torch (default: torch's choice); "
                                    "training uses fewer while other processes hold cores")

    # arguments several steps share
    prepared = argparse.ArgumentParser(add_help=False)
    prepared.add_argument("--image", required=True, help="prepared LR volume (input/<subject>.nii.gz)")
    prepared.add_argument("--geometry", required=True, help="its geometry record (input/<subject>.json)")
    training = argparse.ArgumentParser(add_help=False)
    training.add_argument("--images", nargs="+", required=True, help="prepared LR volumes")
    training.add_argument("--geometries", nargs="+", required=True, help="their geometry records")
    training.add_argument("--settings", help="JSON file of the network's settings (the config schema's "
                                             "vae.train or sr.train); default: all defaults")
    training.add_argument("--checkpoint", required=True, help="training checkpoint; training resumes from it")
    training.add_argument("--loss-csv", required=True, help="loss log (CSV)")
    training.add_argument("--out", required=True, help="model file")

    def step(name: str, func, help: str, torch: bool = False, parents=()) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help, parents=[torch_options if torch else common, *parents])
        s.set_defaults(func=func)
        return s

    slice_model = dict(choices=SLICE_MODELS, default=DEFAULT_SLICE_MODEL,
                       help="slice profile of the acquisition: gaussian (FWHM = thickness), box (width = "
                            "thickness), or skip (no blur, slices picked) (default: %(default)s, a real 2D slice; "
                            "a scan made by `thinslice simulate` needs the --profile it was simulated with)")

    s = step("fetch-demo", commands.fetch_demo, "download the real-knee demo (PyPI mskt==0.1.22) and extract its DICOM series")
    s.add_argument("--out", required=True, help="folder for the DICOM files")
    s.add_argument("--cache", required=True, help="folder that keeps the downloaded archive")

    s = step("fetch-ch2", commands.fetch_ch2, "copy the Colin27 ground truth ch2.nii.gz (Debian mricron-data)")
    s.add_argument("--out", required=True, help="where to write ch2.nii.gz")
    s.add_argument("--system-path", default="/usr/share/mricron/templates/ch2.nii.gz",
                   help="the installed copy, used when present (default: %(default)s)")

    s = step("simulate", commands.simulate, "simulate a thick-slice scan from a high-resolution ground truth")
    s.add_argument("--truth", required=True, help="the high-resolution volume")
    s.add_argument("--out-lr", required=True, help="the simulated thick-slice scan (NIfTI)")
    s.add_argument("--out-truth", required=True, help="the truth cropped to the output grid (NIfTI)")
    s.add_argument("--axis", type=int, required=True, choices=[0, 1, 2], help="slice axis")
    s.add_argument("--factor", type=int, required=True, help="keep every FACTOR-th slice")
    s.add_argument("--profile", choices=SLICE_MODELS, default="gaussian",
                   help="slice profile (default: gaussian)")
    s.add_argument("--fwhm", type=float, required=True, help="slice thickness (profile width) in mm")
    s.add_argument("--target-spacing", type=float, metavar="MM",
                   help="output slice spacing, a multiple of the truth's (default: the truth's spacing)")
    s.add_argument("--noise", type=float, default=0.0, metavar="PERCENT",
                   help="Rician noise on the thick slices, standard deviation in percent of the truth's 99th "
                        "intensity percentile (default: 0, none)")

    s = step("prepare", commands.prepare, "read a scan; write its volume, geometry record and foreground mask")
    s.add_argument("--input", required=True, help="NIfTI, NRRD, MHA or a DICOM series folder")
    s.add_argument("--echo", type=int, help="1-based echo of a multi-echo DICOM series")
    s.add_argument("--slice-axis", type=int, choices=[0, 1, 2],
                   help="the thick-slice axis (default: the axis of largest spacing)")
    s.add_argument("--thickness", type=_thickness,
                   help="slice thickness in mm, or 'auto': the slice profile estimated from the scan "
                        "(default: the DICOM header's; without one, the slice spacing unless the estimate is "
                        "more than 25% below it)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--factor", type=int, help="upsampling factor along the slice axis")
    g.add_argument("--target-spacing", type=float, help="output slice spacing in mm")
    s.add_argument("--output-dtype", choices=["float32", "input"], default="float32",
                   help="data type of the methods' outputs: float32, or the integer type the scan's voxels "
                        "fit, rounded and clipped (default: float32)")
    s.add_argument("--out-image", required=True, help="the volume as read (NIfTI)")
    s.add_argument("--out-geometry", required=True, help="its geometry record (JSON)")
    s.add_argument("--out-mask", required=True, help="its foreground mask (NIfTI)")

    s = step("upsample", commands.upsample, "interpolate along the slice axis onto the output grid", parents=[prepared])
    s.add_argument("--method", choices=INTERPOLATION_METHODS, required=True, help="linear, or cubic B-spline")
    s.add_argument("--out", required=True, help="output NIfTI")

    s = step("evaluate", commands.evaluate, "metrics of one output (PSNR and SSIM when a truth is given)",
             parents=[prepared])
    s.add_argument("--output", required=True, help="the method's output volume, made from --image")
    s.add_argument("--mask", required=True, help="the prepared volume's foreground mask")
    s.add_argument("--subject", required=True, help="subject name, for the row")
    s.add_argument("--method", required=True, help="method name, for the row")
    s.add_argument("--truth", help="ground truth volume, on any grid")
    s.add_argument("--slice-model", **slice_model)
    s.add_argument("--uncertainty", help="the output's uncertainty map (SR methods), for the QC entry")
    s.add_argument("--out", required=True, help="the row (JSON)")
    s.add_argument("--qc", help="also write the per-scan QC entry (JSON) here")

    s = step("bids-samples", commands.bids_samples, "write a sample sheet from a BIDS dataset: every "
                                            "sub-*/[ses-*/]anat/*_<suffix>.nii[.gz], thickness from the sidecars")
    s.add_argument("root", help="the BIDS dataset's root folder")
    s.add_argument("--suffix", default="T2w", help="the scans' BIDS suffix (default: T2w)")
    s.add_argument("--out", required=True, help="the sample sheet (TSV) to write")

    s = step("bids-export", commands.bids_export, "a run's outputs as a BIDS derivatives dataset, with one sidecar each")
    s.add_argument("--folder", required=True, help="the derivatives dataset's folder")
    s.add_argument("--entries", required=True,
                   help="JSON file: a list of {subject, method, output, geometry, model, source}, one per output")
    s.add_argument("--suffix", default="T2w", help="BIDS suffix of the outputs (default: T2w)")
    s.add_argument("--slice-model", **slice_model)
    s.add_argument("--source-dataset", help="the BIDS dataset the scans came from, if any")

    s = step("collect", commands.collect, "gather metric rows into metrics.csv and a per-method summary")
    s.add_argument("rows", nargs="+", help="rows written by evaluate")
    s.add_argument("--out", required=True, help="metrics.csv")
    s.add_argument("--summary-csv", required=True, help="mean and sd per method (CSV)")
    s.add_argument("--summary-md", required=True, help="the same as a Markdown table")
    s.add_argument("--skipped", nargs="*", default=[], help="'METHOD: why' of each method that did not run")

    s = step("collect-qc", commands.collect_qc, "gather the per-scan QC entries of a run into one table")
    s.add_argument("entries", nargs="+", help="QC entries written by evaluate --qc")
    s.add_argument("--out", required=True, help="qc.csv")

    s = step("figure", commands.figure,
             "a figure of a run: reformats, errors, uncertainty, profile, pipeline, metrics, training")
    s.add_argument("--kind", choices=["reformats", "errors", "uncertainty", "profile", "pipeline", "metrics",
                                      "training"],
                   default="reformats", help="which figure (default: reformats)")
    s.add_argument("--image", help="the subject's prepared LR volume (input/<subject>.nii.gz)")
    s.add_argument("--geometry", help="its geometry record (input/<subject>.json)")
    s.add_argument("--methods", nargs="+", help="method names, in display order")
    s.add_argument("--outputs", nargs="+", help="one output volume per method")
    s.add_argument("--truth", help="ground truth volume, on any grid")
    s.add_argument("--synthetic", help="pipeline: the VAE-synthesized HR volume")
    s.add_argument("--degraded", help="pipeline: the synthetic HR degraded onto the LR grid")
    s.add_argument("--uncertainty", nargs="+", metavar="METHOD=NIFTI", type=_name_path,
                   help="uncertainty: the uncertainty map of a method's output (infer --uncertainty), on its grid, "
                        "e.g. sr_vae=results/run/sr_vae/s_uncertainty.nii.gz")
    s.add_argument("--qc", nargs="+", metavar="JSON",
                   help="QC entries of the subject's outputs (evaluate --qc): summarised under the title")
    s.add_argument("--metrics", help="metrics: the run's metrics.csv")
    s.add_argument("--losses", nargs="+", type=_name_path, metavar="NAME=CSV",
                   help="training: loss logs, e.g. vae=models/vae_loss.csv")
    s.add_argument("--title", default="", help="title above the figure")
    s.add_argument("--out", required=True, help="output PNG")

    step("train-vae", commands.train_vae, "stage 1: train the slice VAE on every subject's real LR scan", torch=True,
         parents=[training])

    s = step("synthesize", commands.synthesize, "stage 1: the VAE's synthetic thin-slice volume of one subject",
             torch=True, parents=[prepared])
    s.add_argument("--model", required=True, help="VAE model file (train-vae --out)")
    s.add_argument("--interpolation", choices=INTERPOLATIONS, default="cubic",
                   help="latent path between the real slices: a cubic B-spline through all of them, or "
                        "linear / spherical between neighbours (default: cubic)")
    s.add_argument("--synthesis", choices=SYNTHESES, default="residual",
                   help="residual: the decoded path plus the real slices' interpolated reconstruction errors "
                        "(real slices exact, one texture); decoded: the decoded path alone; kept: decoded, "
                        "real slices put back (default: residual)")
    s.add_argument("--out", required=True, help="output NIfTI")

    s = step("output-grid", commands.output_grid, "sample a volume on a subject's working grid (a synthetic volume) "
                                          "onto its output grid")
    s.add_argument("--image", required=True, help="volume on the working grid (synthesize --out)")
    s.add_argument("--geometry", required=True, help="the subject's geometry record")
    s.add_argument("--out", required=True, help="output NIfTI")

    s = step("degrade", commands.degrade, "stage 2: degrade a synthetic volume onto the real LR grid")
    s.add_argument("--hr", required=True, help="synthetic thin-slice volume")
    s.add_argument("--geometry", required=True, help="geometry record of the real scan")
    s.add_argument("--slice-model", **slice_model)
    s.add_argument("--out", required=True, help="output NIfTI")

    s = step("train-sr", commands.train_sr, "stage 2: train the SR network on degraded/HR pairs", torch=True,
             parents=[training])
    s.add_argument("--source", choices=PAIR_SOURCES, required=True,
                   help="vae: synthetic volumes (the paper); self: the scans' in-plane axes; "
                        "supervised: ground truths (upper bound); both: vae + self")
    s.add_argument("--targets", nargs="*", help="HR volumes (synthetic or truth), one per image")
    s.add_argument("--slice-model", **slice_model)

    s = step("infer", commands.infer, "apply a trained SR model to a scan: thinslice infer --model M in.nii.gz out.nii.gz",
             torch=True)
    s.add_argument("--model", required=True, help="SR model file (train-sr --out)")
    s.add_argument("input", help="NIfTI, NRRD, MHA, or a prepared volume with --geometry")
    s.add_argument("output", help="output NIfTI")
    s.add_argument("--geometry", help="geometry record of a prepared volume (inside the workflow)")
    s.add_argument("--echo", type=int, help="1-based echo of a multi-echo DICOM series")
    s.add_argument("--slice-axis", type=int, choices=[0, 1, 2],
                   help="the thick-slice axis (default: the axis of largest spacing)")
    s.add_argument("--target-spacing", type=float, metavar="MM",
                   help="output slice spacing in mm, any value from the model's working spacing up "
                        "(default: the spacing the model was trained for)")
    s.add_argument("--keep-real-slices", action=argparse.BooleanOptionalAction, default=False,
                   help="put the real slices back at positions i*r of the working grid (default: no)")
    s.add_argument("--output-dtype", choices=["float32", "input"],
                   help="float32, or the integer type the scan's voxels fit, rounded and clipped (default: the "
                        "geometry record's choice inside the workflow, else float32)")
    s.add_argument("--uncertainty", metavar="NIFTI",
                   help="also write the uncertainty map here: the per-voxel spread of the predictions of both "
                        "orientations of the volume and of its flip, whose mean is the output")
    s.add_argument("--data-consistency", action=argparse.BooleanOptionalAction, default=False,
                   help="correct the output so that, re-acquired with the model's slice model, it gives back "
                        "the real slices (least squares along the slice axis) (default: no)")

    s = step("eclare", commands.eclare, "the ECLARE peer method on a prepared scan (runs the separate run-eclare)",
             torch=True, parents=[prepared])
    s.add_argument("--out", required=True, help="output NIfTI on the output grid")
    s.add_argument("--command", default="run-eclare", help="ECLARE's command (default: run-eclare on PATH)")
    s.add_argument("--slice-model", **slice_model)
    s.add_argument("--n-patches", type=int, default=1_000_000, help="training patches (default: ECLARE's 1000000)")
    s.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")

    s = step("bench-table", commands.bench_table, "print the benchmark table of finished runs")
    s.add_argument("runs", nargs="+", help="run folders, e.g. results/ch2-z4")
    s.add_argument("--out", help="also write the table (Markdown) here")
    return p


def main(argv: list[str] | None = None) -> int:
    from . import progress

    args = build_parser().parse_args(argv)
    try:
        if args.log:
            progress.log_to(args.log, f"thinslice {args.command}")
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(max(1, args.threads))
        args.func(args)
    except ThinsliceError as exc:
        progress.say(f"error: {exc}")
        return INPUT_ERROR
    except OSError as exc:
        progress.say(f"error: {file_error_message(exc)}")
        return FILE_ERROR
    except Exception as exc:
        if not progress.logging_to_file():
            raise
        traceback.print_exc()
        progress.say(f"internal error ({type(exc).__name__}: {exc}); the traceback is in {args.log}")
        return INTERNAL_ERROR
    return OK


if __name__ == "__main__":
    sys.exit(main())
