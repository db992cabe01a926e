# The ECLARE peer method: its own command, in its own environment, on the same prepared
# LR scans as every other method; skipped (see common.smk) when that command is absent.


rule eclare:
    input:
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        f"{OUT}/eclare/{{subject}}.nii.gz",
    params:
        command=config["eclare"]["command"],
        n_patches=config["eclare"]["n_patches"],
        batch_size=config["eclare"]["batch_size"],
        slice_model=config["slice_model"],
        device=config["device"],
    log:
        f"{LOGS}/eclare/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/eclare/{{subject}}.tsv"
    conda:
        "../../envs/eclare.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    shell:
        "python -m thinslice eclare --image {input.image:q} --geometry {input.geometry:q} --out {output:q}"
        " --command {params.command:q} --n-patches {params.n_patches} --batch-size {params.batch_size}"
        " --slice-model {params.slice_model} --device {params.device} --threads {threads} --log {log:q}"
