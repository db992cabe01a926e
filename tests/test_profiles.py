"""The Snakemake profiles: workflow/profiles/slurm run for real against a fake SLURM, and dry runs.

The fake SLURM (FAKE_SLURM below) is one Python script installed under the names of the SLURM
commands that snakemake-executor-plugin-slurm 2.x calls: sbatch, srun, sacct, squeue, scontrol,
sinfo, sacctmgr, sshare, scancel. Each call is appended to calls.jsonl. sbatch accepts only the
options the plugin emits, rejects an unknown account or partition, or GPUs outside the `gpu`
partition, runs the job script synchronously (the plugin's `--wrap`: a nested `snakemake
--executor slurm-jobstep`, which calls srun, which runs the job's own snakemake) and records the
final state, COMPLETED or FAILED, that sacct and squeue then report under the run's job name.

Projects are built like tests/test_workflow.py's: nibabel's real T1 as the ground truth of a
simulated thick-slice scan, in a temporary folder.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import job_stats, output_tail, snakemake

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "workflow" / "profiles"

pytestmark = pytest.mark.workflow

GPU_RULES = {"train_vae", "synthesize", "train_sr", "infer"}
ACCOUNT = "testacct"
# what the docs tell users to type (docs/cluster.md), with the fake cluster's names
CLUSTER_ARGS = [
    "--default-resources", f"slurm_account={ACCOUNT}", "slurm_partition=cpu", "runtime=60",
    "--set-resources", *[f"{rule}:slurm_partition=gpu" for rule in sorted(GPU_RULES)],
]
# the first status check 1 s after a submission (the plugin's default, 40 s, suits a real queue)
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1"]

FAKE_SLURM = r'''
"""Fake SLURM for tests/test_profiles.py: `fake_slurm.py COMMAND ARGS...`; state in $FAKE_SLURM_DIR."""
import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])
NAME = sys.argv[1]
PARTITIONS = ("cpu", "gpu")  # cpu is the default partition


def locked(fn):
    with open(STATE / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return fn()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append(line):
    with open(STATE / "calls.jsonl", "a") as f:
        f.write(line)


def fail(msg):
    print(f"{NAME}: error: {msg}", file=sys.stderr)
    sys.exit(1)


def accounts():
    return [a.lower() for a in os.environ.get("FAKE_SLURM_ACCOUNTS", "testacct").split(",") if a]


def save_job(job):
    tmp = STATE / "jobs" / f".{job['id']}.tmp"
    tmp.write_text(json.dumps(job))
    tmp.rename(STATE / "jobs" / f"{job['id']}.json")


def jobs():
    return [json.loads(p.read_text()) for p in sorted((STATE / "jobs").glob("*.json"))]


def next_id():
    def bump():
        counter = STATE / "next_id"
        n = int(counter.read_text()) if counter.exists() else 1001
        counter.write_text(str(n + 1))
        return n
    return locked(bump)


def sbatch(argv):
    p = argparse.ArgumentParser(prog="sbatch", add_help=False, allow_abbrev=False)
    p.error = fail
    p.add_argument("--parsable", action="store_true")
    for opt in ("--job-name", "--output", "--export", "--comment", "--clusters", "--qos", "--mem",
                "--mem-per-cpu", "--nodes", "--reservation", "--exclude", "--ntasks", "--ntasks-per-gpu",
                "--ntasks-per-node", "--cpus-per-task", "--cpus-per-gpu", "--gres", "--gpus", "--wrap", "--array"):
        p.add_argument(opt)
    p.add_argument("-A", "--account")
    p.add_argument("-p", "--partition")
    p.add_argument("-t", "--time")
    p.add_argument("-C", "--constraint")
    p.add_argument("-D", "--chdir")
    p.add_argument("--requeue", action="store_true")
    p.add_argument("--no-requeue", action="store_true")
    p.add_argument("script", nargs="?")
    a = p.parse_args(argv)
    if a.partition and a.partition not in PARTITIONS:
        fail(f"invalid partition specified: {a.partition}")
    if a.account and a.account.lower() not in accounts():
        fail(f"invalid account or account/partition combination specified: {a.account}")
    if (a.gpus or a.gres) and (a.partition or PARTITIONS[0]) != "gpu":
        fail(f"requested node configuration is not available: no GPUs in partition {a.partition}")
    if a.wrap is not None:
        script = "#!/bin/sh\n" + a.wrap + "\n"
    elif a.script == "/dev/stdin":
        script = sys.stdin.read()
    else:
        fail("neither --wrap nor a script on /dev/stdin")
    jobid = next_id()
    job = {"id": jobid, "name": a.job_name, "comment": a.comment, "state": "RUNNING", "start": time.time()}
    save_job(job)
    env = dict(os.environ, SLURM_JOB_ID=str(jobid), SLURM_JOBID=str(jobid), SLURM_JOB_NAME=a.job_name or "",
               SLURM_CPUS_PER_TASK=a.cpus_per_task or "1", SLURM_SUBMIT_DIR=os.getcwd())
    if a.gpus:
        env["SLURM_GPUS"] = a.gpus
    log = Path((a.output or "slurm-%j.out").replace("%j", str(jobid)))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        rc = subprocess.run(["/bin/sh", "-c", script], cwd=a.chdir or None, env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    job.update(state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc, end=time.time())
    save_job(job)
    print(jobid if a.parsable else f"Submitted batch job {jobid}")


def option(argv, name):
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def status(argv):
    name = option(argv, "--name")
    if name is not None:  # the plugin's status query: <jobid>|<state>
        for job in jobs():
            if job["name"] == name:
                print(f"{job['id']}|{job['state']}")
    elif NAME == "sacct" and option(argv, "-j"):  # reason of a failed job step
        print("None")


def main():
    argv = sys.argv[2:]
    locked(lambda: append(json.dumps({"cmd": NAME, "argv": argv}) + "\n"))
    if NAME == "sbatch":
        sbatch(argv)
    elif NAME in ("sacct", "squeue"):
        status(argv)
    elif NAME in ("sacctmgr", "sshare"):
        print("\n".join(accounts()))
    elif NAME == "sinfo":
        print("PARTITION\n" + "\n".join(p + ("*" if i == 0 else "") for i, p in enumerate(PARTITIONS)))
    elif NAME == "scontrol":
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")
    elif NAME == "srun":  # drop the job step's options, run its command
        cmd = list(argv)
        while cmd and cmd[0].startswith("-"):
            cmd.pop(0)
        if not cmd:
            fail("no command")
        os.execvp(cmd[0], cmd)
    elif NAME != "scancel":
        fail("not a fake SLURM command")


main()
'''

SLURM_COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel")


class FakeSlurm:
    def __init__(self, root: Path):
        self.bin, self.state = root / "bin", root / "state"
        self.bin.mkdir(parents=True)
        (self.state / "jobs").mkdir(parents=True)
        script = root / "fake_slurm.py"
        script.write_text(FAKE_SLURM)
        for name in SLURM_COMMANDS:
            cmd = self.bin / name
            cmd.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} {name} \"$@\"\n")
            cmd.chmod(0o755)

    def env(self) -> dict:
        return {"FAKE_SLURM_DIR": str(self.state), "PATH": str(self.bin)}

    def calls(self, cmd: str | None = None) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r["argv"] for r in rows if cmd is None or r["cmd"] == cmd]

    def jobs(self) -> dict[int, dict]:
        return {j["id"]: j for j in (json.loads(p.read_text()) for p in (self.state / "jobs").glob("*.json"))}


def _write_project(d: Path, anatomical_path: Path, config: str, sheet: str = "subject\tpath\nt1\tdata/gt.nii.gz\n"):
    (d / "data").mkdir(parents=True)
    img = nib.load(anatomical_path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), d / "data" / "gt.nii.gz")
    (d / "samples.tsv").write_text(sheet)
    (d / "tiny.yaml").write_text(config.strip() + "\n")
    return d


TINY = """
run: tiny
samples: samples.tsv
methods: [linear, cubic, vae, sr_vae, sr_self]
device: cpu
simulate:
  enabled: true
  axis: 2
  factor: 3
  profile: gaussian
  fwhm_mm: 6.0
vae:
  train: {steps: 4, batch_size: 2, crop_size: 16, base_channels: 4, levels: 1, checkpoint_every: 2,
          kl_warmup_steps: 1}
sr:
  train: {steps: 4, batch_size: 2, patch_size: 16, channels: 4, depth: 1, checkpoint_every: 2}
"""

# The SLURM run asks for these outputs: every method's volume (so every GPU rule), one evaluation,
# one figure. The CPU rules simulate, prepare, interpolate, evaluate and a figure rule (one job
# per env) then run too; each SLURM job costs two nested snakemake starts, so the rest of
# `rule all` (more evaluations and figures, alike) is left to the dry run below.
TARGETS = [f"results/tiny/{m}/t1.nii.gz" for m in ("linear", "cubic", "vae", "sr_vae", "sr_self")] + [
    "results/tiny/metrics/sr_vae/t1.json", "results/tiny/figures/training.png"]
EXPECTED_JOBS = {"simulate": 1, "prepare": 1, "interpolate": 2, "train_vae": 1, "synthesize": 1, "vae_output": 1, "train_sr": 2,
                 "infer": 2, "evaluate": 1, "figure_training": 1}


def _opt(argv: list[str], *names: str) -> str | None:
    """Value of an sbatch/srun option given as `--name value`, `--name=value` or `-X value`."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _rule_of_sbatch(argv: list[str]) -> str:
    """The rule of a submission, from the plugin's --comment rule_<rule>[_wildcards_<values>]."""
    comment = _opt(argv, "--comment")
    return re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", comment).group(1)


def _rule_of_srun(argv: list[str]) -> str:
    return _opt(argv, "--allowed-rules")


# ---------------------------------------------------------------------------------------------
# a real run through the slurm profile


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, anatomical_path):
    root = tmp_path_factory.mktemp("slurm")
    slurm = FakeSlurm(root / "cluster")
    project = _write_project(root / "project", anatomical_path, TINY)
    done = snakemake(project, "--profile", str(PROFILES / "slurm"), "--configfile", "tiny.yaml", *CLUSTER_ARGS,
                     *FAST_STATUS, *TARGETS, extra_env=slurm.env())
    return project, slurm, done


def test_slurm_run_completes(slurm_run):
    project, slurm, done = slurm_run
    assert done.returncode == 0, output_tail(done)
    for target in TARGETS:
        assert (project / target).stat().st_size > 0, target
    sr = nib.load(project / "results/tiny/sr_vae/t1.nii.gz")
    assert sr.shape == (33, 41, 25)
    metrics = json.loads((project / "results/tiny/metrics/sr_vae/t1.json").read_text())
    assert metrics["method"] == "sr_vae" and float(metrics["psnr"]) > 10
    assert all(job["state"] == "COMPLETED" for job in slurm.jobs().values())
    # the rules' own logs are written by the jobs, as in a local run
    assert (project / "logs/tiny/train_vae.log").exists() and (project / "logs/tiny/train_sr/self.log").exists()


def test_every_job_is_submitted_once_with_its_rule(slurm_run):
    _, slurm, done = slurm_run
    assert done.returncode == 0, output_tail(done)
    counts: dict[str, int] = {}
    for argv in slurm.calls("sbatch"):
        counts[_rule_of_sbatch(argv)] = counts.get(_rule_of_sbatch(argv), 0) + 1
    assert counts == EXPECTED_JOBS


def test_gpu_rules_get_a_gpu_and_cpu_rules_none(slurm_run):
    _, slurm, done = slurm_run
    assert done.returncode == 0, output_tail(done)
    lines = slurm.calls("sbatch")
    assert {_rule_of_sbatch(a) for a in lines} & GPU_RULES == GPU_RULES
    for argv in lines:
        rule, text = _rule_of_sbatch(argv), shlex.join(argv)
        assert _opt(argv, "-A") == ACCOUNT, text
        assert _opt(argv, "--mem") and int(_opt(argv, "--mem")) >= 1000, text
        assert _opt(argv, "-t"), text  # every job has a wall time
        assert _opt(argv, "--job-name") and _opt(argv, "--job-name") == _opt(lines[0], "--job-name"), text  # one name per run
        assert "--parsable" in argv and _opt(argv, "--wrap"), text
        if rule in GPU_RULES:
            assert _opt(argv, "--gpus") == "1", text
            assert _opt(argv, "-p") == "gpu", text
            assert int(_opt(argv, "--cpus-per-task")) >= 2, text  # the rule's threads
            assert _opt(argv, "--ntasks") is None, text
        else:
            assert _opt(argv, "--gpus") is None and _opt(argv, "--gres") is None, text
            assert not any("gpu" in a for a in argv if not a.startswith("--wrap")), text
            assert _opt(argv, "-p") == "cpu", text
            assert _opt(argv, "--ntasks") == "1" and _opt(argv, "--cpus-per-task"), text


def test_job_steps_get_the_gpu_too(slurm_run):
    """Inside the allocation the jobstep executor runs the job with srun; GPU jobs' srun asks for it."""
    _, slurm, done = slurm_run
    assert done.returncode == 0, output_tail(done)
    steps = slurm.calls("srun")
    assert len(steps) == sum(EXPECTED_JOBS.values())
    for argv in steps:
        rule = _rule_of_srun(argv)
        assert ("--gpus=1" in argv) == (rule in GPU_RULES), shlex.join(argv[:8])


def test_job_states_are_polled_by_run_name(slurm_run):
    _, slurm, done = slurm_run
    assert done.returncode == 0, output_tail(done)
    name = _opt(slurm.calls("sbatch")[0], "--job-name")
    assert name, "sbatch got no --job-name"
    polls = [a for a in slurm.calls("sacct") + slurm.calls("squeue") if _opt(a, "--name") == name]
    assert polls, "the plugin never asked for the jobs' states"
    assert slurm.calls("sacctmgr"), "the account was not validated"
    assert not slurm.calls("scancel")


# ---------------------------------------------------------------------------------------------
# a failing job: FAILED in sacct, one retry (the profile's `retries: 1`), the run fails


def test_a_failed_job_is_retried_once_then_the_run_fails(tmp_path, anatomical_path):
    slurm = FakeSlurm(tmp_path / "cluster")
    project = _write_project(tmp_path / "project", anatomical_path,
                             "run: frac\nsamples: samples.tsv\ntarget_spacing_mm: 2.5\nmethods: [linear]",
                             sheet="subject\tpath\tslice_axis\nt1\tdata/gt.nii.gz\t2\n")
    done = snakemake(project, "--profile", str(PROFILES / "slurm"), "--configfile", "tiny.yaml", *CLUSTER_ARGS,
                     *FAST_STATUS, extra_env=slurm.env())
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    submitted = [_rule_of_sbatch(a) for a in slurm.calls("sbatch")]
    assert submitted == ["prepare", "prepare"], submitted
    assert [j["state"] for j in slurm.jobs().values()] == ["FAILED", "FAILED"]
    attempts = sorted(_opt(a, "--attempt") for a in slurm.calls("srun"))
    assert attempts == ["1", "2"], attempts
    assert "SLURM status is: 'FAILED'" in text, text[-3000:]
    log = (project / "logs/frac/prepare/t1.log").read_text()
    assert "thinslice prepare: error:" in log and "not finer" in log


# ---------------------------------------------------------------------------------------------
# dry runs: what users type, from the repository root


@pytest.fixture(scope="module")
def dry_project(tmp_path_factory, anatomical_path):
    return _write_project(tmp_path_factory.mktemp("dry"), anatomical_path, TINY)


def _dry_run(project: Path, profile: str, *extra: str):
    # relative profile path, as in the docs; no SLURM on PATH: a dry run needs none
    return snakemake(None, "--profile", profile, "--directory", str(project), "--configfile",
                     str(project / "tiny.yaml"), "-n", *extra, timeout=180)


def test_slurm_dry_run_lists_every_job(dry_project):
    done = _dry_run(dry_project, "workflow/profiles/slurm", *CLUSTER_ARGS)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    stats = job_stats(text)
    expected = {"simulate": 1, "prepare": 1, "interpolate": 2, "train_vae": 1, "synthesize": 1, "vae_output": 1, "degrade": 1,
                "train_sr": 2, "infer": 2, "evaluate": 5, "collect_metrics": 1, "figure_pipeline": 1,
                "figure_reformats": 1, "figure_errors": 1, "figure_uncertainty": 1, "figure_profile": 1,
                "figure_metrics": 1, "figure_training": 1, "bids_export": 1, "figure_qc": 2, "write_settings": 3,
                "all": 1}
    assert stats == {**expected, "total": sum(expected.values())}, stats
    # the GPU rules carry gpu=1 and the GPU partition; nothing else asks for a GPU
    blocks = re.split(r"\n(?=\[[^\]]+\]\n)", text)
    seen = set()
    for block in blocks:
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not m or not res or m.group(1) == "all":
            continue
        seen.add(m.group(1))
        resources = res.group(1)
        if m.group(1) in GPU_RULES:
            assert "gpu=1" in resources and "slurm_partition=gpu" in resources, (m.group(1), resources)
        else:
            assert "gpu=" not in resources and "slurm_partition=cpu" in resources, (m.group(1), resources)
    assert GPU_RULES <= seen


def test_local_and_slurm_profiles_plan_the_same_jobs(dry_project):
    local = _dry_run(dry_project, "workflow/profiles/local")
    slurm = _dry_run(dry_project, "workflow/profiles/slurm")
    assert local.returncode == 0, output_tail(local)
    assert slurm.returncode == 0, output_tail(slurm)
    assert job_stats(local.stdout + local.stderr) == job_stats(slurm.stdout + slurm.stderr)


# ---------------------------------------------------------------------------------------------
# the profile files themselves


def test_profiles_are_what_the_docs_say():
    assert not (PROFILES / "default").exists(), "profiles/default would override --profile key by key"
    assert not (REPO / "profiles" / "default").exists()
    local = yaml.safe_load((PROFILES / "local" / "config.yaml").read_text())
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert "executor" not in local and local["cores"] == "all" and local["resources"]["gpu"] == 1
    assert slurm["executor"] == "slurm"
    assert slurm["retries"] >= 1 and slurm["latency-wait"] >= 30 and slurm["rerun-incomplete"] is True
    # account and partition are site-specific: given on the command line (docs/cluster.md)
    for key in ("slurm_account", "slurm_partition"):
        assert key not in (slurm.get("default-resources") or {})
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert "--profile workflow/profiles/slurm" in doc and "slurm_account=" in doc and "--sdm conda" in doc
