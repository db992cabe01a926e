# make demo : environment + the real-knee demo     make test  : environment + tests
# make bench: the ground-truth benchmarks ch2-z4, -z2, -z6, -z5t2, -z3t2, -z4n3 (noisy) and their table   make clean : remove outputs
# make report [CONFIG=config/ch2-z4.yaml]: the HTML report of a finished run, in results/<run>/report.html
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all
# extra snakemake options for demo and bench, e.g. SNAKEMAKE_FLAGS="--sdm conda" (brings the ECLARE peer)
SNAKEMAKE_FLAGS ?=
# where pip gets torch: empty = pip's own configuration (on Linux, PyPI's torch is the CUDA build);
# CPU only: TORCH_INDEX=https://download.pytorch.org/whl/cpu ; CUDA 12.6: .../whl/cu126
TORCH_INDEX ?=
CONFIG ?= config/config.yaml

.PHONY: env demo test bench bench-contention bench-profile bench-scale bench-holdout report lint clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet -c constraints.txt torch --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -c constraints.txt -e ".[workflow,dev]"
	touch $@

demo: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) $(SNAKEMAKE_FLAGS) --configfile config/config.yaml

test: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH python -m pytest -q

BENCH_RUNS ?= ch2-z4 ch2-z2 ch2-z6 ch2-z5t2 ch2-z3t2 ch2-z4n3

bench: env
	for run in $(BENCH_RUNS); do \
	  PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) $(SNAKEMAKE_FLAGS) --configfile config/$$run.yaml || exit 1; \
	done
	$(PY) -m thinslice bench-table $(addprefix results/,$(BENCH_RUNS)) --out results/bench.md

# train_sr time alone and beside one busy process, on the prepared ch2-z4 scan
bench-contention: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) $(SNAKEMAKE_FLAGS) \
	  results/ch2-z4/input/ch2.nii.gz results/ch2-z4/input/ch2.json --configfile config/ch2-z4.yaml
	$(PY) bench/contention.py results/ch2-z4/input/ch2.nii.gz results/ch2-z4/input/ch2.json

# the slice-profile estimate on ch2 simulated at FWHM 2, 4, 6 mm and 4 mm spacing, along each axis
bench-profile: resources/ch2.nii.gz
	$(PY) bench/slice_profile.py resources/ch2.nii.gz

# SR training memory and time for cohorts of 1, 8, 32, 128 subjects; inference time and memory
bench-scale: resources/ch2.nii.gz
	$(PY) bench/scale.py resources/ch2.nii.gz

# real slices held out of the demo knee (after make demo): every second slice dropped and predicted
bench-holdout: env
	$(PY) bench/holdout.py results/knee-demo/input/knee_echo1.nii.gz

# the benchmark's ground truth (Colin27), fetched by the workflow's own rule
resources/ch2.nii.gz: | env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores 1 resources/ch2.nii.gz --configfile config/ch2-z4.yaml

report: env
	run=$$($(PY) -c "import yaml; print(yaml.safe_load(open('$(CONFIG)'))['run'])") && \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores 1 --configfile $(CONFIG) --report results/$$run/report.html

lint: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --lint

clean:
	rm -rf results logs .snakemake
