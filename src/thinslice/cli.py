"""The `thinslice` command line: one subcommand per workflow step, the same ones the
Snakemake rules call. Errors a user can fix print as one line and exit with status 2."""

from __future__ import annotations

import argparse
import sys

from .errors import ThinsliceError


def _fetch_demo(a):
    from .fetch import fetch_demo

    print(fetch_demo(a.out, a.cache))


def _fetch_ch2(a):
    from .fetch import fetch_ch2

    print(fetch_ch2(a.out, a.system_path))


def _simulate(a):
    from .prepare import simulate

    simulate(a.truth, a.out_lr, a.out_truth, a.axis, a.factor, a.profile, a.fwhm)


def _prepare(a):
    from .prepare import prepare

    g = prepare(a.input, a.out_image, a.out_geometry, a.out_mask, echo=a.echo, slice_axis=a.slice_axis,
                thickness_mm=a.thickness, factor=a.factor, target_spacing_mm=a.target_spacing)
    print(f"{a.input}: slice axis {g.slice_axis}, spacing {g.spacing_mm:.4g} mm, thickness "
          f"{g.thickness_mm:.4g} mm, gap {g.gap_mm:.4g} mm, factor {g.factor}, {g.orientation}")


def _upsample(a):
    from .interpolate import upsample
    from .io import save_volume
    from .geometry import output_affine
    from .prepare import load_prepared
    from .volume import Volume

    lr, g = load_prepared(a.image, a.geometry)
    # interpolation is linear in intensity: normalising first only guards float precision
    data = g.denormalize(upsample(g.normalize(lr.data), g.slice_axis, g.factor, a.method))
    save_volume(Volume(data, output_affine(lr.affine, g.slice_axis, g.factor)), a.out)


def _evaluate(a):
    from .evaluate import evaluate, write_row

    write_row(evaluate(a.output, a.image, a.geometry, a.mask, a.subject, a.method, a.truth), a.out)


def _collect(a):
    from .evaluate import collect

    collect(a.rows, a.out, a.summary_csv, a.summary_md)


def _figure(a):
    from .figures import run_figure

    outputs = dict(zip(a.methods, a.outputs))
    if len(a.methods) != len(a.outputs):
        raise ThinsliceError("figure: give as many --methods as --outputs")
    run_figure(a.image, a.geometry, outputs, a.out, truth_path=a.truth, title=a.title)


def _bench_table(a):
    from .benchtable import markdown, run_table

    rows = [row for d in a.runs for row in run_table(d)]
    text = markdown(rows)
    print(text, end="")
    if a.out:
        from pathlib import Path

        from .io import atomic_path

        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thinslice", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fetch-demo", help="download the real-knee demo (PyPI mskt==0.1.22) and extract its DICOM series")
    s.add_argument("--out", required=True, help="folder for the DICOM files")
    s.add_argument("--cache", required=True, help="folder that keeps the downloaded archive")
    s.set_defaults(func=_fetch_demo)

    s = sub.add_parser("fetch-ch2", help="copy the Colin27 ground truth ch2.nii.gz (Debian mricron-data)")
    s.add_argument("--out", required=True)
    s.add_argument("--system-path", default="/usr/share/mricron/templates/ch2.nii.gz")
    s.set_defaults(func=_fetch_ch2)

    s = sub.add_parser("simulate", help="simulate a thick-slice scan from an HR ground truth")
    s.add_argument("--truth", required=True)
    s.add_argument("--out-lr", required=True)
    s.add_argument("--out-truth", required=True)
    s.add_argument("--axis", type=int, required=True)
    s.add_argument("--factor", type=int, required=True)
    s.add_argument("--profile", choices=["gaussian", "box", "skip"], default="gaussian")
    s.add_argument("--fwhm", type=float, required=True, help="slice thickness (profile width) in mm")
    s.set_defaults(func=_simulate)

    s = sub.add_parser("prepare", help="read a scan; write its volume, geometry record and mask")
    s.add_argument("--input", required=True, help="NIfTI, NRRD, MHA or a DICOM series folder")
    s.add_argument("--echo", type=int, help="1-based echo of a multi-echo DICOM series")
    s.add_argument("--slice-axis", type=int, choices=[0, 1, 2])
    s.add_argument("--thickness", type=float, help="slice thickness in mm (default: DICOM header, else spacing)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--factor", type=int)
    g.add_argument("--target-spacing", type=float, help="output slice spacing in mm")
    s.add_argument("--out-image", required=True)
    s.add_argument("--out-geometry", required=True)
    s.add_argument("--out-mask", required=True)
    s.set_defaults(func=_prepare)

    s = sub.add_parser("upsample", help="interpolate along the slice axis onto the output grid")
    s.add_argument("--method", choices=["linear", "cubic"], required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--geometry", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_upsample)

    s = sub.add_parser("evaluate", help="metrics of one output (PSNR/SSIM when a truth is given)")
    for k in ("output", "image", "geometry", "mask", "subject", "method", "out"):
        s.add_argument(f"--{k}", required=True)
    s.add_argument("--truth")
    s.set_defaults(func=_evaluate)

    s = sub.add_parser("collect", help="gather metric rows into metrics.csv and a per-method summary")
    s.add_argument("rows", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--summary-csv", required=True)
    s.add_argument("--summary-md", required=True)
    s.set_defaults(func=_collect)

    s = sub.add_parser("figure", help="through-plane reformats of LR, each method and the truth")
    s.add_argument("--image", required=True)
    s.add_argument("--geometry", required=True)
    s.add_argument("--methods", nargs="+", required=True)
    s.add_argument("--outputs", nargs="+", required=True)
    s.add_argument("--truth")
    s.add_argument("--title", default="")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_figure)
    s = sub.add_parser("bench-table", help="print the benchmark table of finished runs")
    s.add_argument("runs", nargs="+", help="run folders, e.g. results/ch2-z4")
    s.add_argument("--out", help="also write the table (Markdown) here")
    s.set_defaults(func=_bench_table)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ThinsliceError as exc:
        print(f"thinslice: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
