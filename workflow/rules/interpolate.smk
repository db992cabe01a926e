# Baselines: linear and cubic B-spline interpolation along the slice axis.


rule interpolate:
    input:
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
    output:
        f"{OUT}/{{method}}/{{subject}}.nii.gz",
    wildcard_constraints:
        method="|".join(registry.INTERPOLATION_METHODS),
    log:
        f"{LOGS}/interpolate/{{method}}/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/interpolate/{{method}}/{{subject}}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m thinslice upsample --method {wildcards.method} --image {input.image}"
        " --geometry {input.geometry} --out {output} --log {log:q}"
