# make demo : environment + the real-knee demo     make test  : environment + tests
# make bench: the ground-truth benchmark (ch2-z4)  make clean : remove outputs
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all

.PHONY: env demo test bench lint clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[workflow,dev]"
	touch $@

demo: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) --configfile config/config.yaml

test: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH python -m pytest -q

bench: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores $(CORES) --configfile config/ch2-z4.yaml

lint: env
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --lint

clean:
	rm -rf results logs .snakemake
