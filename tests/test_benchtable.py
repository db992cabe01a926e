"""The benchmark table reads metrics.csv and the rules' Snakemake benchmark files."""

import math

from thinslice.benchtable import markdown, method_stages, run_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, seconds, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n")


def test_table_sums_training_and_inference_per_method(tmp_path):
    run = tmp_path / "ch2-z4"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "subject,method,psnr,ssim,ssim_fg,sharpness,consistency_psnr\n"
        "a,cubic,30,0.9,0.8,0.1,0\nb,cubic,32,0.95,0.8,0.1,0\na,sr_vae,33,0.97,0.9,0.2,0.1\n")
    b = run / "benchmarks"
    _bench(b / "interpolate/cubic/a.tsv", 1.5, 100)
    _bench(b / "interpolate/cubic/b.tsv", 2.5, 120)
    _bench(b / "train_vae.tsv", 100, 900)
    _bench(b / "synthesize/a.tsv", 5, 300)
    _bench(b / "train_sr/vae.tsv", 50, 800)
    _bench(b / "infer/sr_vae/a.tsv", 4, 500)
    rows = {r["method"]: r for r in run_table(run)}
    assert rows["cubic"]["psnr"] == 31 and math.isclose(rows["cubic"]["ssim"], 0.925)
    assert rows["cubic"]["train_s"] == 0 and rows["cubic"]["infer_s"] == 4.0 and rows["cubic"]["peak_mb"] == 120
    assert rows["sr_vae"]["train_s"] == 155 and rows["sr_vae"]["infer_s"] == 4 and rows["sr_vae"]["peak_mb"] == 900
    text = markdown(list(rows.values()))
    assert "| ch2-z4 | sr_vae | 33.00 | 0.9700 | 155 | 4.0 | 900 |" in text


def test_stages_of_every_method():
    assert method_stages("sr_self") == (["train_sr/self.tsv"], ["infer/sr_self/*.tsv"])
    assert "train_vae.tsv" in method_stages("sr_vae")[0] and "train_vae.tsv" in method_stages("sr_both")[0]
    assert method_stages("linear") == ([], ["interpolate/linear/*.tsv"])


def test_rows_follow_the_reading_order_not_the_alphabet(tmp_path):
    run = tmp_path / "ch2-z6"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "subject,method,psnr,ssim,ssim_fg,sharpness,consistency_psnr\n"
        "a,cubic,30,0.9,0.8,0.1,0\na,eclare,31,0.9,0.8,0.1,0\na,linear,29,0.9,0.8,0.1,0\n"
        "a,my_method,31,0.9,0.8,0.1,0\na,sr_self,33,0.97,0.9,0.2,0.1\na,sr_vae,32,0.97,0.9,0.2,0.1\n")
    assert [r["method"] for r in run_table(run)] == ["linear", "cubic", "sr_vae", "sr_self", "eclare", "my_method"]
