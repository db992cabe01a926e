# thinslice: thick-slice MR scans in, thin-slice NIfTI volumes out.
# Run: snakemake --cores all [--configfile config/ch2-z4.yaml]   (see README.md)

from snakemake.utils import min_version

min_version("9.0")


# The demo's config only when none is given: a --configfile is complete with the schema's
# defaults, and never inherits the demo's short training.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/interpolate.smk"
include: "workflow/rules/vae.smk"
include: "workflow/rules/sr.smk"
include: "workflow/rules/peer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
