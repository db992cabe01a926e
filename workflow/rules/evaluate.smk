# Evaluation: metrics of every (method, subject) output, gathered into metrics.csv.


rule evaluate:
    input:
        output=f"{OUT}/{{method}}/{{subject}}.nii.gz",
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
        mask=f"{OUT}/input/{{subject}}_mask.nii.gz",
        truth=lambda wc: truth_path(wc.subject) if has_truth(wc.subject) else [],
        uncertainty=lambda wc: uncertainty_output(wc.method, wc.subject) if wc.method.startswith("sr_") else [],
    output:
        row=f"{OUT}/metrics/{{method}}/{{subject}}.json",
        qc=f"{OUT}/qc/{{method}}/{{subject}}.json",
    params:
        truth=lambda wc, input: f"--truth {shlex.quote(str(input.truth))}" if input.truth else "",
        uncertainty=lambda wc, input: f"--uncertainty {shlex.quote(str(input.uncertainty))}" if input.uncertainty else "",
        slice_model=config["slice_model"],
    log:
        f"{LOGS}/evaluate/{{method}}/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{method}}/{{subject}}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    shell:
        "python -m thinslice evaluate --output {input.output} --image {input.image} --geometry {input.geometry}"
        " --mask {input.mask} {params.truth} {params.uncertainty} --slice-model {params.slice_model}"
        " --subject {wildcards.subject} --method {wildcards.method}"
        " --out {output.row} --qc {output.qc} --log {log:q}"


rule collect_metrics:
    input:
        rows=expand(f"{OUT}/metrics/{{method}}/{{subject}}.json", method=METHODS, subject=SUBJECTS),
        qc=expand(f"{OUT}/qc/{{method}}/{{subject}}.json", method=METHODS, subject=SUBJECTS),
    output:
        table=report(f"{OUT}/metrics.csv", caption="../report/metrics.rst", category="Metrics"),
        summary=report(f"{OUT}/metrics_summary.csv", caption="../report/metrics_summary.rst", category="Metrics"),
        markdown=f"{OUT}/metrics_summary.md",
        qc=report(f"{OUT}/qc.csv", caption="../report/qc.rst", category="Quality control"),
    params:
        skipped=[f"{m}: {why}" for m, why in SKIPPED.items()],  # also shown in the report's caption
    log:
        metrics=f"{LOGS}/collect_metrics.log",
        qc=f"{LOGS}/collect_qc.log",
    benchmark:
        f"{OUT}/benchmarks/collect_metrics.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m thinslice collect {input.rows} --out {output.table} --summary-csv {output.summary}"
        " --summary-md {output.markdown} --skipped {params.skipped:q} --log {log.metrics:q}"
        " && python -m thinslice collect-qc {input.qc} --out {output.qc} --log {log.qc:q}"



rule bids_export:
    # The outputs as a BIDS derivatives dataset: hard links (no second copy) with sidecars.
    input:
        outputs=[e["output"] for e in bids_entries()],
        geometries=expand(f"{OUT}/input/{{subject}}.json", subject=SUBJECTS),
        models=sorted({e["model"] for e in bids_entries() if e["model"]}),
        entries=settings_file("bids_entries"),
    output:
        f"{OUT}/bids/dataset_description.json",   # written last: the export is complete
    params:
        folder=lambda wc, output: os.path.dirname(output[0]),
        suffix=config["bids"]["suffix"],
        slice_model=config["slice_model"],
        source=f"--source-dataset {shlex.quote(config['bids']['source_dataset'])}" if config["bids"]["source_dataset"] else "",
    log:
        f"{LOGS}/bids_export.log",
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m thinslice bids-export --folder {params.folder:q} --entries {input.entries:q} --suffix {params.suffix}"
        " --slice-model {params.slice_model} {params.source} --log {log:q}"
