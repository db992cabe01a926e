# Paper figures of a run (results/<run>/figures/*.png) and the report's captions.
# `snakemake --cores all figures` draws them all from existing outputs (nothing is retrained
# when the outputs are up to date); `snakemake --report results/<run>/report.html` gathers
# them with the metric tables into one HTML file. Which figures a run has: figure_names().


report: "../report/workflow.rst"


localrules:
    figures,


rule figures:
    input:
        figure_targets() + qc_figures(),


rule figure_reformats:
    # The figures drawn on one subject share this rule's shape; the others differ in what
    # follows `with:`.
    input:
        unpack(figure_volumes),
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/reformats.png", caption="../report/reformats.rst", category="Figures",
               labels={"figure": "reformats"}),
    params:
        kind="reformats",
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra="",
        title=lambda wc: figure_title(),
    log:
        f"{LOGS}/figures/reformats.log",
    benchmark:
        f"{OUT}/benchmarks/figures/reformats.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=20,
    shell:
        FIGURE_SHELL


use rule figure_reformats as figure_errors with:
    output:
        report(f"{OUT}/figures/errors.png", caption="../report/errors.rst", category="Figures",
               labels={"figure": "errors"}),
    params:
        kind="errors",
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra="",
        title=lambda wc: figure_title(),
    log:
        f"{LOGS}/figures/errors.log",
    benchmark:
        f"{OUT}/benchmarks/figures/errors.tsv"


use rule figure_reformats as figure_profile with:
    output:
        report(f"{OUT}/figures/profile.png", caption="../report/profile.rst", category="Figures",
               labels={"figure": "profile"}),
    params:
        kind="profile",
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra="",
        title=lambda wc: figure_title(),
    log:
        f"{LOGS}/figures/profile.log",
    benchmark:
        f"{OUT}/benchmarks/figures/profile.tsv"


use rule figure_reformats as figure_pipeline with:
    input:
        unpack(figure_volumes),
        synthetic=lambda wc: synthetic_output(figure_subject()),
        degraded=lambda wc: f"{OUT}/degraded/{figure_subject()}.nii.gz",
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/pipeline.png", caption="../report/pipeline.rst", category="Figures",
               labels={"figure": "pipeline"}),
    params:
        kind="pipeline",
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra=lambda wc, input: f"--synthetic {shlex.quote(input.synthetic)} --degraded {shlex.quote(input.degraded)}",
        title=lambda wc: figure_title(),
    log:
        f"{LOGS}/figures/pipeline.log",
    benchmark:
        f"{OUT}/benchmarks/figures/pipeline.tsv"


use rule figure_reformats as figure_uncertainty with:
    input:
        unpack(figure_volumes),
        maps=lambda wc: list(figure_uncertainty_maps().values()),
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/uncertainty.png", caption="../report/uncertainty.rst", category="Figures",
               labels={"figure": "uncertainty"}),
    params:
        kind="uncertainty",
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra=lambda wc: "--uncertainty " + " ".join(
            shlex.quote(f"{m}={path}") for m, path in figure_uncertainty_maps().items()),
        title=lambda wc: figure_title(),
    log:
        f"{LOGS}/figures/uncertainty.log",
    benchmark:
        f"{OUT}/benchmarks/figures/uncertainty.tsv"


rule figure_metrics:
    input:
        metrics=f"{OUT}/metrics.csv",
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/metrics.png", caption="../report/metrics_figure.rst", category="Figures",
               labels={"figure": "metrics"}),
    params:
        methods=" ".join(METHODS),
        title=RUN,
    log:
        f"{LOGS}/figures/metrics.log",
    benchmark:
        f"{OUT}/benchmarks/figures/metrics.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    shell:
        "python -m thinslice figure --kind metrics --metrics {input.metrics:q} --methods {params.methods}"
        " --title {params.title:q} --out {output:q} --log {log:q}"


rule figure_training:
    input:
        losses=lambda wc: list(loss_logs().values()),
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/figures/training.png", caption="../report/training.rst", category="Figures",
               labels={"figure": "training"}),
    params:
        losses=lambda wc: " ".join(shlex.quote(f"{name}={path}") for name, path in loss_logs().items()),
        title=RUN,
    log:
        f"{LOGS}/figures/training.log",
    benchmark:
        f"{OUT}/benchmarks/figures/training.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    shell:
        "python -m thinslice figure --kind training --losses {params.losses} --title {params.title:q}"
        " --out {output:q} --log {log:q}"


rule figure_qc:
    # Per-scan quality control in the report: each subject's reformats and, with SR methods,
    # uncertainty maps, titled with its slice profile, consistency and warnings.
    input:
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
        outputs=lambda wc: [method_output(m, wc.subject) for m in METHODS],
        truth=lambda wc: truth_path(wc.subject) if has_truth(wc.subject) else [],
        maps=lambda wc: [uncertainty_output(m, wc.subject) for m in sr_methods()] if wc.view == "uncertainty" else [],
        qc=lambda wc: [f"{OUT}/qc/{m}/{wc.subject}.json" for m in METHODS],
        code=FIGURE_CODE,
    output:
        report(f"{OUT}/qc/{{subject}}_{{view}}.png", caption="../report/qc_subject.rst", category="Quality control",
               subcategory="{subject}", labels={"subject": "{subject}", "view": "{view}"}),
    wildcard_constraints:
        view="reformats|uncertainty",
    params:
        kind=lambda wc: wc.view,
        methods=" ".join(METHODS),
        truth=figure_truth_option,
        extra=lambda wc, input: " ".join(
            ["--qc", *map(shlex.quote, input.qc)]
            + (["--uncertainty", *(shlex.quote(f"{m}={p}") for m, p in zip(sr_methods(), input.maps))] if input.maps else [])),
        title=lambda wc: f"{RUN}: {wc.subject}",
    log:
        f"{LOGS}/figures/qc/{{subject}}_{{view}}.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=20,
    shell:
        FIGURE_SHELL
