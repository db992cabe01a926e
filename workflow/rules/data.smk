# Data: fetch the public demo and benchmark data, simulate benchmark scans, prepare each subject;
# the settings files the training and export commands read.


rule fetch_demo:
    output:
        directory("resources/demo/MESE_T2_dicom_data"),
    log:
        "logs/fetch_demo.log",
    benchmark:
        "logs/benchmarks/fetch_demo.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "python -m thinslice fetch-demo --out {output} --cache resources/cache --log {log:q}"


rule fetch_ch2:
    output:
        "resources/ch2.nii.gz",
    log:
        "logs/fetch_ch2.log",
    benchmark:
        "logs/benchmarks/fetch_ch2.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m thinslice fetch-ch2 --out {output} --log {log:q}"


rule simulate:
    input:
        lambda wc: SAMPLES[wc.subject]["path"],
    output:
        lr=f"{OUT}/simulated/{{subject}}.nii.gz",
        truth=f"{OUT}/truth/{{subject}}.nii.gz",
    params:
        axis=config["simulate"]["axis"],
        factor=config["simulate"]["factor"],
        profile=config["simulate"]["profile"],
        fwhm=config["simulate"]["fwhm_mm"],
        noise=config["simulate"]["noise_percent"],
        target=simulate_options,
    log:
        f"{LOGS}/simulate/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/simulate/{{subject}}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m thinslice simulate --truth {input:q} --out-lr {output.lr} --out-truth {output.truth}"
        " --axis {params.axis} --factor {params.factor} --profile {params.profile}"
        " --fwhm {params.fwhm} --noise {params.noise} {params.target} --log {log:q}"


rule prepare:
    input:
        scan_path,
    output:
        image=f"{OUT}/input/{{subject}}.nii.gz",
        geometry=f"{OUT}/input/{{subject}}.json",
        mask=f"{OUT}/input/{{subject}}_mask.nii.gz",
    params:
        options=prepare_options,
    log:
        f"{LOGS}/prepare/{{subject}}.log",
    benchmark:
        f"{OUT}/benchmarks/prepare/{{subject}}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m thinslice prepare --input {input:q} {params.options} --out-image {output.image}"
        " --out-geometry {output.geometry} --out-mask {output.mask} --log {log:q}"


rule write_settings:
    output:
        settings_file("{name}"),
    wildcard_constraints:
        name="|".join(SETTINGS),
    params:
        settings=lambda wc: SETTINGS[wc.name](),
    log:
        f"{LOGS}/settings/{{name}}.log",
    localrule: True
    run:
        write_settings_file(output[0], params.settings, log[0])
