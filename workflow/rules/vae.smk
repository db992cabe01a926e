# Stage 1: one slice VAE per cohort, then each subject's synthetic thin-slice volume on its
# working grid, and the `vae` method's output on the output grid.


rule train_vae:
    input:
        images=expand(f"{OUT}/input/{{subject}}.nii.gz", subject=SUBJECTS),
        geometries=expand(f"{OUT}/input/{{subject}}.json", subject=SUBJECTS),
        settings=settings_file("vae_train"),
    output:
        model=f"{OUT}/models/vae.pt",
        loss=report(f"{OUT}/models/vae_loss.csv", caption="../report/vae_loss.rst", category="Training"),
    params:
        checkpoint=f"{OUT}/checkpoints/vae.ckpt",
        device=config["device"],
    log:
        f"{LOGS}/train_vae.log",
    benchmark:
        f"{OUT}/benchmarks/train_vae.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    shell:
        "python -m thinslice train-vae --images {input.images:q} --geometries {input.geometries:q}"
        " --settings {input.settings:q} --checkpoint {params.checkpoint:q} --loss-csv {output.loss:q}"
        " --device {params.device} --threads {threads} --out {output.model:q} --log {log:q}"


rule synthesize:
    input:
        model=f"{OUT}/models/vae.pt",
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        synthetic_output("{subject}"),
    params:
        interpolation=config["vae"]["interpolation"],
        synthesis=config["vae"]["synthesis"],
        device=config["device"],
    log:
        f"{LOGS}/synthesize/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/synthesize/{{subject}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=30,
    shell:
        "python -m thinslice synthesize --model {input.model:q} --image {input.image:q}"
        " --geometry {input.geometry:q} --interpolation {params.interpolation} --synthesis {params.synthesis}"
        " --device {params.device} --threads {threads} --out {output:q} --log {log:q}"


rule vae_output:
    # The `vae` method's output: the synthetic volume on the output grid (a copy when the
    # output grid is the working grid, i.e. an integer ratio).
    input:
        image=synthetic_output("{subject}"),
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        f"{OUT}/vae/{{subject}}.nii.gz",
    log:
        f"{LOGS}/vae_output/{{subject}}.log",
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m thinslice output-grid --image {input.image:q} --geometry {input.geometry:q}"
        " --out {output:q} --log {log:q}"
