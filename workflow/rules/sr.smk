# Stage 2: degrade the synthetic volumes, train one SR network per pair source, apply it
# to the real scans. Sources: vae (the paper), self (in-plane axes of the real scans),
# supervised (ground truths; the upper bound, benchmark only), both (vae + self).


rule degrade:
    # The synthetic volume on the real LR grid, for figures and inspection; train_sr
    # degrades the synthetic volumes with the same slice model itself.
    input:
        hr=synthetic_output("{subject}"),
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        f"{OUT}/degraded/{{subject}}.nii.gz",
    params:
        slice_model=config["slice_model"],
    log:
        f"{LOGS}/degrade/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/degrade/{{subject}}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m thinslice degrade --hr {input.hr:q} --geometry {input.geometry:q}"
        " --slice-model {params.slice_model} --out {output:q} --log {log:q}"


rule train_sr:
    input:
        images=expand(f"{OUT}/input/{{subject}}.nii.gz", subject=SUBJECTS),
        geometries=expand(f"{OUT}/input/{{subject}}.json", subject=SUBJECTS),
        targets=lambda wc: sr_targets(wc.source),
        settings=settings_file("sr_train"),
    output:
        model=f"{OUT}/models/sr_{{source}}.pt",
        loss=report(f"{OUT}/models/sr_{{source}}_loss.csv", caption="../report/sr_loss.rst", category="Training"),
    wildcard_constraints:
        source="|".join(registry.PAIR_SOURCES),
    params:
        targets=lambda wc, input: f"--targets {' '.join(shlex.quote(t) for t in input.targets)}" if input.targets else "",
        checkpoint=lambda wc: f"{OUT}/checkpoints/sr_{wc.source}.ckpt",
        slice_model=config["slice_model"],
        device=config["device"],
    log:
        f"{LOGS}/train_sr/{{source}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_sr/{{source}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    shell:
        "python -m thinslice train-sr --source {wildcards.source} --images {input.images:q}"
        " --geometries {input.geometries:q} {params.targets} --slice-model {params.slice_model}"
        " --settings {input.settings:q} --checkpoint {params.checkpoint:q} --loss-csv {output.loss:q}"
        " --device {params.device} --threads {threads} --out {output.model:q} --log {log:q}"


rule infer:
    input:
        model=f"{OUT}/models/sr_{{source}}.pt",
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        image=f"{OUT}/sr_{{source}}/{{subject}}.nii.gz",
        uncertainty=f"{OUT}/sr_{{source}}/{{subject}}_uncertainty.nii.gz",
    wildcard_constraints:
        source="|".join(registry.PAIR_SOURCES),
    params:
        keep=lambda wc: "--keep-real-slices" if config["sr"]["keep_real_slices"] else "--no-keep-real-slices",
        consistency=lambda wc: "--data-consistency" if config["sr"]["data_consistency"] else "--no-data-consistency",
        device=config["device"],
    log:
        f"{LOGS}/infer/sr_{{source}}/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/infer/sr_{{source}}/{{subject}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=30,
    shell:
        "python -m thinslice infer --model {input.model:q} {input.image:q} {output.image:q}"
        " --uncertainty {output.uncertainty:q}"
        " --geometry {input.geometry:q} {params.keep} {params.consistency} --device {params.device} --threads {threads} --log {log:q}"
