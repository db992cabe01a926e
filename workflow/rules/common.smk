# Configuration, sample sheet and path helpers shared by every rule file.

import json
import math
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import yaml
from snakemake.logging import logger

# The workflow reads its method registry from its own source tree.
sys.path.insert(0, str(Path(workflow.basedir, "src")))
from thinslice import methods as registry  # noqa: E402
from thinslice.settings import DEFAULT_SLICE_MODEL  # noqa: E402

SCHEMAS = Path(workflow.basedir, "workflow/schemas")


def schema_error(schema_file, instance):
    """The first error of `instance` against a schema, as (key path, message), or None."""
    schema = yaml.safe_load((SCHEMAS / schema_file).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    return ".".join(str(k) for k in errors[0].absolute_path), errors[0].message


def with_defaults(schema, value):
    """`value` completed with the schema's defaults, nested objects included."""
    if schema.get("type") != "object":
        return value
    value = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = sub["default"]
        if key in value:
            value[key] = with_defaults(sub, value[key])
    return value


def check_config(cfg):
    """The config validated once and completed with its defaults; the first bad value is one
    line naming its key."""
    error = schema_error("config.schema.yaml", cfg)
    if error:
        raise ValueError(f"config key '{error[0] or '(top level)'}': {error[1]}; "
                         f"see workflow/schemas/config.schema.yaml for allowed values")
    return with_defaults(yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text()), cfg)


config.update(check_config(config))
if config["slice_model"] is None:   # a simulated scan's own profile, else a real 2D slice's
    config["slice_model"] = config["simulate"]["profile"] if config["simulate"]["enabled"] else DEFAULT_SLICE_MODEL

RUN = config["run"]
OUT = f"results/{RUN}"
LOGS = f"logs/{RUN}"


def check_writable(folder):
    """The run writes `folder`: it, or its nearest existing parent, must be a writable folder.
    Checked before any job, so that a stray file or a read-only disk is one line, not a failed job."""
    for existing in (Path(folder), *Path(folder).parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise ValueError(f"{existing} is a file, and the run writes the folder {folder}; move or rename that file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{existing} is not writable (read-only disk or permissions), and the run writes {folder} "
                         f"there; make it writable or run from another folder")


for folder in (OUT, LOGS):
    check_writable(folder)
# Rules call `python -m thinslice`; `src/` on PYTHONPATH lets conda envs use the package uninstalled.
shell.prefix(f"export PYTHONPATH={Path(workflow.basedir, 'src')}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

# Files the workflow itself can fetch; any other input path must exist before the run.
FETCHABLE = {"resources/demo/MESE_T2_dicom_data", "resources/ch2.nii.gz"}


def read_samples(path):
    """Rows of the sample sheet (TSV) validated against its schema, keyed by subject; empty
    cells are absent keys."""
    if not os.path.exists(path):
        raise ValueError(f"config key 'samples': sample sheet {path} does not exist; fix the path")
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).map(str.strip)
    sheet = sheet.loc[:, ~sheet.columns.str.startswith("Unnamed")]
    sheet = sheet[(sheet != "").any(axis=1)]
    if sheet.empty:
        raise ValueError(f"{path}: the sample sheet lists no subject")
    schema = yaml.safe_load((SCHEMAS / "samples.schema.yaml").read_text())
    samples = {}
    for n, row in zip(sheet.index + 2, sheet.to_dict("records")):  # line 1 is the header
        row = {k: v for k, v in row.items() if v not in ("", "NA")}
        for key in row.keys() & {"echo", "slice_axis", "slice_thickness"}:
            try:
                row[key] = int(row[key]) if schema["properties"][key]["type"] == "integer" else float(row[key])
            except ValueError:
                raise ValueError(f"{path} line {n}: column '{key}' = {row[key]!r} is not a number") from None
        if error := schema_error("samples.schema.yaml", row):
            where = f"column '{error[0]}': " if error[0] else ""
            raise ValueError(f"{path} line {n}: {where}{error[1]}")
        if row["subject"] in samples:
            raise ValueError(f"{path} line {n}: subject '{row['subject']}' appears twice")
        for key in ("path", "truth"):
            p = row.get(key)
            if p and p not in FETCHABLE and not os.path.exists(p):
                raise ValueError(f"{path} line {n}: {key} '{p}' does not exist; fix the path in the sample sheet")
        samples[row["subject"]] = row
    return samples


SAMPLES = read_samples(config["samples"])
SUBJECTS = list(SAMPLES)


# A subject wildcard is one of the sample sheet's subjects (so <subject>_uncertainty is no subject).
wildcard_constraints:
    subject="|".join(re.escape(s) for s in SUBJECTS),

if config["figure"]["subject"] is not None and config["figure"]["subject"] not in SAMPLES:
    raise ValueError(f"config key 'figure.subject': '{config['figure']['subject']}' is not a subject of "
                     f"the sample sheet {config['samples']}; choose one of {', '.join(SUBJECTS)}")
SIMULATE = config["simulate"]["enabled"]
for m in config["methods"]:
    if registry.get(m).needs_truth and not (SIMULATE or all("truth" in r for r in SAMPLES.values())):
        raise ValueError(f"config key 'methods': {m} trains on ground truths; every subject needs one "
                         f"(simulate mode or a 'truth' column), or remove {m}")


def eclare_missing():
    """Why the ECLARE peer cannot run here, or None when it can: its command is on PATH (or a
    path), or --sdm conda installs it from envs/eclare.yaml."""
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return None
    command = config["eclare"]["command"]
    if shutil.which(command):
        return None
    return (f"'{command}' not found; install ECLARE in its own environment (pip install eclare) and set "
            f"eclare.command to its run-eclare, or run with --sdm conda")


# Optional methods whose tools are absent are dropped, with a note in the log and the report.
SKIPPED = {}
if "eclare" in config["methods"] and (why := eclare_missing()):
    SKIPPED["eclare"] = why
    logger.warning(f"thinslice: method eclare skipped: {why}")
METHODS = [m for m in config["methods"] if m not in SKIPPED]
if not METHODS:
    raise ValueError("config key 'methods': every method was skipped; " + "; ".join(SKIPPED.values()))
# The report's description (workflow/report/workflow.rst) names the methods that ran.
config["methods_run"] = METHODS


def has_truth(subject):
    return SIMULATE or "truth" in SAMPLES[subject]


def truth_path(subject):
    if SIMULATE:
        return f"{OUT}/truth/{subject}.nii.gz"
    return SAMPLES[subject].get("truth", "")


def scan_file(subject):
    """What `prepare` reads: the simulated LR in a benchmark, else the sample's scan."""
    if SIMULATE:
        return f"{OUT}/simulated/{subject}.nii.gz"
    return SAMPLES[subject]["path"]


def scan_path(wildcards):
    return scan_file(wildcards.subject)


def prepare_options(wildcards):
    row = SAMPLES[wildcards.subject]
    opts = []
    if SIMULATE:
        opts += [f"--slice-axis {config['simulate']['axis']}", f"--thickness {config['simulate']['fwhm_mm']}"]
    else:
        if "echo" in row:
            opts.append(f"--echo {row['echo']}")
        if "slice_axis" in row:
            opts.append(f"--slice-axis {row['slice_axis']}")
        if "slice_thickness" in row:
            opts.append(f"--thickness {row['slice_thickness']}")
        elif config["slice_thickness"] == "auto":
            opts.append("--thickness auto")
    opts.append(f"--output-dtype {config['output_dtype']}")
    if config.get("target_spacing_mm"):
        opts.append(f"--target-spacing {config['target_spacing_mm']}")
    else:
        opts.append(f"--factor {config['simulate']['factor'] if SIMULATE else config['factor']}")
    return " ".join(opts)


def simulate_options(wildcards):
    """The output spacing of a simulated run, when it is not the truth's own."""
    return f"--target-spacing {config['target_spacing_mm']}" if config.get("target_spacing_mm") else ""


def sr_targets(source):
    """HR volumes an SR pair source trains on: synthetic (VAE), ground truth, or none (self pairs)."""
    method = next(m for m in registry.REGISTRY.values() if m.pairs == source)
    if method.uses_vae:
        return [synthetic_output(s) for s in SUBJECTS]
    if method.needs_truth:
        return [truth_path(s) for s in SUBJECTS]
    return []


# Settings the commands read from files, rewritten only when they change (a changed params
# value reruns write_settings, and with it the jobs that read the file).
SETTINGS = {
    "vae_train": lambda: config["vae"]["train"],
    "sr_train": lambda: config["sr"]["train"],
    "bids_entries": lambda: bids_entries(),
}


def settings_file(name):
    return f"{OUT}/settings/{name}.json"


def write_settings_file(path, settings, log):
    Path(path).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    Path(log).write_text(f"wrote {path}\n")


def method_output(method, subject):
    return f"{OUT}/{method}/{subject}.nii.gz"


def synthetic_output(subject):
    """The VAE's synthetic volume on the subject's working grid (stage 2 trains on it)."""
    return f"{OUT}/synthetic/{subject}.nii.gz"


def uncertainty_output(method, subject):
    """The uncertainty map that `infer` writes beside an SR output."""
    return f"{OUT}/{method}/{subject}_uncertainty.nii.gz"


def sr_methods():
    """The run's SR methods: each output comes with an uncertainty map."""
    return [m for m in METHODS if registry.get(m).is_sr]


def figure_uncertainty_maps():
    """The figure subject's uncertainty maps: SR method -> NIfTI."""
    return {m: uncertainty_output(m, figure_subject()) for m in sr_methods()}


def qc_figures():
    """The per-scan QC figures of the report: every subject's reformats and uncertainty maps."""
    if not config["qc_figures"]:
        return []
    views = ["reformats"] + (["uncertainty"] if sr_methods() else [])
    return [f"{OUT}/qc/{s}_{v}.png" for s in SUBJECTS for v in views]


def figure_subject():
    return config["figure"]["subject"] or SUBJECTS[0]


def all_targets():
    targets = [f"{OUT}/metrics.csv", f"{OUT}/metrics_summary.csv", f"{OUT}/metrics_summary.md", f"{OUT}/qc.csv"]
    targets += figure_targets() + qc_figures()
    targets += [method_output(m, s) for m in METHODS for s in SUBJECTS]
    targets.append(f"{OUT}/bids/dataset_description.json")
    return targets


def method_model(method):
    """The model file a method's outputs come from, or None (interpolation, the peer)."""
    model = registry.get(method).model
    return f"{OUT}/models/{model}" if model else None


def bids_entries():
    """What bids-export writes: one entry per output, with where it came from."""
    return [{"subject": s, "method": m, "output": method_output(m, s), "geometry": f"{OUT}/input/{s}.json",
             "model": method_model(m), "source": scan_file(s)}
            for m in METHODS for s in SUBJECTS]


# Figures (workflow/rules/figures.smk): which ones a run draws depends on its methods and truths.
# The drawing code is an input of every figure rule, so editing it redraws the figures only:
# the modules `thinslice figure` loads (tests/test_envs.py checks the list).
FIGURE_MODULES = ["drawing", "errors", "figures", "geometry", "interpolate", "io", "methods", "normalize", "plots",
                  "resample", "scene", "volume"]
FIGURE_CODE = [str(Path(workflow.basedir, f"src/thinslice/{m}.py")) for m in FIGURE_MODULES]


def uses_vae():
    """Whether the run synthesizes HR volumes with the stage-1 VAE."""
    return any(registry.get(m).uses_vae for m in METHODS)


def loss_logs():
    """Training logs drawn in figures/training.png: model name -> loss CSV, for the models the
    methods train (the VAE for vae/sr_vae/sr_both, one SR network per sr_<source> method)."""
    logs = {}
    if uses_vae():
        logs["vae"] = f"{OUT}/models/vae_loss.csv"
    for m in sr_methods():
        logs[m] = f"{OUT}/models/sr_{registry.get(m).pairs}_loss.csv"
    return logs


def figure_names():
    """The figures of this run, in reading order."""
    names = ["pipeline"] if uses_vae() else []
    names.append("reformats")
    if has_truth(figure_subject()):
        names.append("errors")
    if sr_methods():  # only SR outputs come with an uncertainty map
        names.append("uncertainty")
    names += ["profile", "metrics"]
    if loss_logs():
        names.append("training")
    return names


def figure_targets():
    return [f"{OUT}/figures/{name}.png" for name in figure_names()]


def figure_volumes(wildcards):
    """Inputs of the figures drawn on one subject: its LR, geometry, outputs and truth."""
    s = figure_subject()
    return {
        "image": f"{OUT}/input/{s}.nii.gz",
        "geometry": f"{OUT}/input/{s}.json",
        "outputs": [method_output(m, s) for m in METHODS],
        "truth": truth_path(s) if has_truth(s) else [],
    }


def figure_title():
    return f"{RUN}: {figure_subject()}"


def figure_truth_option(wildcards, input):
    return f"--truth {shlex.quote(str(input.truth))}" if input.truth else ""


# The command of the figures drawn on one subject (params: kind, methods, truth, extra, title).
FIGURE_SHELL = (
    "python -m thinslice figure --kind {params.kind} --image {input.image:q} --geometry {input.geometry:q}"
    " --methods {params.methods} --outputs {input.outputs:q} {params.truth} {params.extra}"
    " --title {params.title:q} --out {output:q} --log {log:q}"
)
