# Figures: through-plane reformats of every method on one subject.


rule figure_methods:
    input:
        image=lambda wc: f"{OUT}/input/{figure_subject()}.nii.gz",
        geometry=lambda wc: f"{OUT}/input/{figure_subject()}.json",
        outputs=lambda wc: [method_output(m, figure_subject()) for m in METHODS],
        truth=lambda wc: truth_path(figure_subject()) if has_truth(figure_subject()) else [],
    output:
        report(f"{OUT}/figures/methods.png", caption="../report/methods.rst", category="Figures"),
    params:
        methods=" ".join(METHODS),
        truth=lambda wc, input: f"--truth {shlex.quote(str(input.truth))}" if input.truth else "",
        title=lambda wc: f"{RUN}: {figure_subject()}",
    log:
        f"{LOGS}/figure_methods.log",
    benchmark:
        f"{OUT}/benchmarks/figure_methods.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "python -m thinslice figure --image {input.image} --geometry {input.geometry} --methods {params.methods}"
        " --outputs {input.outputs} {params.truth} --title '{params.title}' --out {output} > {log} 2>&1"
