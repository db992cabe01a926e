"""The conda environments (envs/*.yaml, for `snakemake --sdm conda`) against the workflow and the package.

- each file parses, names its channels and pins every dependency;
- every rule that runs a command has a `conda:` directive pointing to an existing env file, and the
  rules that ask for a GPU (`resources: gpu=1`) are exactly the rules of envs/torch.yaml;
- every pin equals constraints.txt (what CI installs) and satisfies pyproject's lower bounds;
- every third-party module that a rule's `python -m thinslice <step>` can import is in the rule's env.
  Found statically (ast over src/thinslice/*.py): from the step's handler in cli.py, follow the
  imports that running it executes: the top level of every module it loads, and the imports inside
  the functions and classes imported by name or referenced from code already followed.

There is no conda here: whether conda-forge solves the envs is checked with
`snakemake --sdm conda --conda-create-envs-only` (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
RULES = REPO / "workflow" / "rules"
PKG = REPO / "src" / "thinslice"

# import name -> the distribution that provides it (PyPI name, as in pyproject and constraints.txt)
DISTRIBUTION = {
    "numpy": "numpy", "scipy": "scipy", "nibabel": "nibabel", "SimpleITK": "SimpleITK", "pydicom": "pydicom",
    "skimage": "scikit-image", "matplotlib": "matplotlib", "tqdm": "tqdm", "torch": "torch", "pandas": "pandas",
}
# conda-forge package name -> PyPI distribution name, where they differ
CONDA_TO_PYPI = {"simpleitk": "SimpleITK", "matplotlib-base": "matplotlib", "pytorch": "torch"}
UNPINNED_OK = {"pip"}  # the installer itself; what it installs is pinned
GPU_ENV = "torch.yaml"
# The ECLARE peer's env: ECLARE pins its own versions (scipy 1.11.4), so only its torch follows
# constraints.txt; what thinslice's `eclare` step imports comes with eclare (its Requires-Dist, 1.0.1).
PEER_ENV = "eclare.yaml"
PEER_PROVIDES = {"eclare": {"numpy", "scipy", "nibabel", "torch", "tqdm", "matplotlib"}}
# the kinds of rule the envs are for: one env per kind of rule (imaging, torch, figures)
EXPECTED_ENV = {
    "fetch_demo": "imaging.yaml", "fetch_ch2": "imaging.yaml", "simulate": "imaging.yaml",
    "prepare": "imaging.yaml", "interpolate": "imaging.yaml", "degrade": "imaging.yaml", "vae_output": "imaging.yaml",
    "evaluate": "imaging.yaml", "collect_metrics": "imaging.yaml", "bids_export": "imaging.yaml",
    "train_vae": "torch.yaml", "synthesize": "torch.yaml", "train_sr": "torch.yaml", "infer": "torch.yaml",
    "eclare": PEER_ENV,
}
GPU_RULES = {rule for rule, env in EXPECTED_ENV.items() if env in (GPU_ENV, PEER_ENV)}
# cli.py's dispatch: main() runs the one handler (in commands.py) its subcommand names, so the
# analysis follows neither main/build_parser (which reference every handler) nor cli's import of
# the whole commands module; it starts from the step's own handler.
DISPATCH = {("cli", "main"), ("cli", "build_parser"), ("commands", None)}


norm = canonicalize_name  # PEP 503 names: SimpleITK == simpleitk, scikit_image == scikit-image


# ---------------------------------------------------------------------------------------------
# env files, constraints, pyproject


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def env_packages(env: dict) -> dict[str, str | None]:
    """Normalised PyPI name -> pinned version (None when unpinned), conda and pip dependencies."""
    out: dict[str, str | None] = {}

    def add(spec: str, pip: bool) -> None:
        spec = str(spec).strip()
        if pip and spec.startswith("-"):  # pip options, e.g. --extra-index-url for a CUDA build
            return
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:(==|=)\s*([0-9][^\s=<>!,*]*))?", spec)
        assert m, f"dependency {spec!r}: write NAME=VERSION (conda) or NAME==VERSION (pip)"
        name = m.group(1) if pip else CONDA_TO_PYPI.get(m.group(1).lower(), m.group(1))
        assert norm(name) not in out, f"{name} is listed twice"
        out[norm(name)] = m.group(3)

    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, dep
            for spec in dep["pip"]:
                add(spec, pip=True)
        else:
            add(dep, pip=False)
    return out


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[norm(name)] = version.strip()
    return pins


def pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def runtime_requirements() -> dict[str, SpecifierSet]:
    """pyproject's [project] dependencies: normalised name -> version specifier."""
    out = {}
    for req in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", req.strip())
        out[norm(m.group(1))] = SpecifierSet(m.group(2))
    return out


# ---------------------------------------------------------------------------------------------
# the rules: name -> conda env, thinslice subcommand, GPU request (parsed from workflow/rules/*.smk)


def _rule_blocks() -> dict[str, tuple[Path, str]]:
    blocks = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, re.M):
            blocks[m.group(1)] = (smk, m.group(2))
    return blocks


def _shell_constants() -> dict[str, str]:
    """Module-level string constants of the rule files (e.g. FIGURE_SHELL in common.smk)."""
    consts = {}
    for smk in RULES.glob("*.smk"):
        for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)\s*=\s*\(?\s*\n?\s*((?:\"[^\"\n]*\"\s*)+)", smk.read_text(), re.M):
            consts[m.group(1)] = "".join(re.findall(r"\"([^\"\n]*)\"", m.group(2)))
    return consts


def _directive(block: str, name: str) -> str | None:
    """The text of one directive of a rule block (up to the next directive)."""
    m = re.search(rf"^(\s+){name}:(.*)\n((?:\1\s+.*\n|\s*\n)*)", block, re.M)
    return None if m is None else (m.group(2) + "\n" + m.group(3))


@lru_cache(maxsize=None)
def workflow_rules() -> dict[str, dict]:
    consts = _shell_constants()
    rules = {}
    for name, (smk, block) in _rule_blocks().items():
        shell = _directive(block, "shell")
        conda = _directive(block, "conda")
        resources = _directive(block, "resources") or ""
        info = {"file": smk, "shell": shell, "conda": None, "step": None,
                "gpu": int(m.group(1)) if (m := re.search(r"\bgpu\s*=\s*(\d+)", resources)) else 0}
        if conda is not None:
            info["conda"] = (smk.parent / re.search(r"\"([^\"]+)\"", conda).group(1)).resolve()
        if shell is not None:
            text = shell
            for ident in re.findall(r"\b([A-Z_][A-Z0-9_]*)\b", shell):
                text += consts.get(ident, "")
            m = re.search(r"python -m thinslice ([a-z][\w-]*)", text)
            info["step"] = m.group(1) if m else None
        rules[name] = info
    return rules


# ---------------------------------------------------------------------------------------------
# static import analysis of the package


@lru_cache(maxsize=None)
def cli_handlers() -> dict[str, str]:
    """Subcommand -> (module, function) of its handler, from the command line's own parser."""
    from thinslice.cli import build_parser

    steps = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: (func.__module__.removeprefix("thinslice."), func.__name__)
            for name, parser in steps.choices.items() for func in [parser.get_default("func")]}


class ModuleInfo:
    """Imports of one module of the package: at its top level, and per top-level def/class."""

    def __init__(self, name: str):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        self.defs = {n.name: n for n in tree.body
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        self.top_imports, self.top_names = [], set()
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # decorators and defaults run at import time
                nodes = [*stmt.decorator_list, *stmt.args.defaults]
            else:  # a statement, or a class (its whole body is read, methods included: conservative)
                nodes = [stmt]
            for node in nodes:
                self.top_imports += self._imports(node, skip_functions=True)
                self.top_names |= self._names(node)

    def _imports(self, node, skip_functions=False) -> list:
        found = []

        def visit(n):
            if skip_functions and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return
            if isinstance(n, ast.Import):
                for alias in n.names:
                    if alias.name.startswith("thinslice."):
                        found.append(("pkg", alias.name.split(".")[1], None))
                    else:
                        found.append(("ext", alias.name.split(".")[0], None))
            elif isinstance(n, ast.ImportFrom):
                if n.level == 0 and not (n.module or "").startswith("thinslice"):
                    found.append(("ext", n.module.split(".")[0], None))
                else:
                    module = (n.module or "").removeprefix("thinslice").lstrip(".")
                    for alias in n.names:
                        if module:
                            found.append(("pkg", module, alias.name))
                        else:  # from . import steps: the names used as steps.<name> where it is imported
                            used = self._attributes(node, alias.asname or alias.name)
                            found.extend([("pkg", alias.name, name) for name in used] or [("pkg", alias.name, None)])
            for child in ast.iter_child_nodes(n):
                visit(child)

        visit(node)
        return found

    @staticmethod
    def _attributes(node, name: str) -> set[str]:
        """The attributes read from `name` in `node` (steps.degrade -> degrade)."""
        return {n.attr for n in ast.walk(node)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == name}

    @staticmethod
    def _names(node) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

    def def_imports(self, name: str) -> list:
        return self._imports(self.defs[name]) if name in self.defs else []

    def def_names(self, name: str) -> set[str]:
        return self._names(self.defs[name]) if name in self.defs else set()


@lru_cache(maxsize=None)
def module_info(name: str) -> ModuleInfo:
    return ModuleInfo(name)


def third_party_imports(entries: list[tuple[str, str | None]]) -> dict[str, set[str]]:
    """Third-party top-level module -> the package modules importing it, reachable from `entries`:
    (module, name) follows a def/class of a module, (module, None) the whole module."""
    return reachable(entries)[0]


def reachable(entries: list[tuple[str, str | None]]) -> tuple[dict[str, set[str]], set[str]]:
    """(third-party module -> the package modules importing it, the package modules loaded),
    reachable from `entries`."""
    found: dict[str, set[str]] = {}
    modules = set()
    seen = set()
    todo = list(entries)
    while todo:
        item = todo.pop()
        if item in seen or item in DISPATCH:
            continue
        seen.add(item)
        mod, name = item
        if not (PKG / f"{mod}.py").exists():
            continue  # e.g. `from .x import CONSTANT` of a module that is not a file: nothing to follow
        modules.add(mod)
        info = module_info(mod)
        if name == "<top>":
            refs, names = info.top_imports, info.top_names
        elif name is None:
            todo.append((mod, "<top>"))
            todo += [(mod, d) for d in info.defs]
            continue
        else:
            todo.append((mod, "<top>"))
            refs, names = info.def_imports(name), info.def_names(name)
        for kind, target, symbol in refs:
            if kind == "ext":
                if target not in sys.stdlib_module_names and target != "__future__":
                    found.setdefault(target, set()).add(mod)
            else:
                todo.append((target, symbol))
        todo += [(mod, n) for n in names if n in info.defs]
    return found, modules


def step_imports(step: str) -> dict[str, set[str]]:
    return third_party_imports([("__main__", "<top>"), cli_handlers()[step]])


# ---------------------------------------------------------------------------------------------
# tests


def test_the_four_envs_exist():
    assert {p.name for p in env_files()} == {"imaging.yaml", "torch.yaml", "figures.yaml", PEER_ENV}


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_file_is_valid_and_pinned(path):
    env = load_env(path)
    assert isinstance(env, dict) and set(env) <= {"name", "channels", "dependencies"}, path.name
    assert env["channels"] and env["channels"][0] == "conda-forge", "conda-forge first"
    assert "defaults" not in env["channels"], "no anaconda defaults channel (licence, mixing)"
    assert env["dependencies"], path.name
    pkgs = env_packages(env)
    assert pkgs.get("python"), f"{path.name}: pin python"
    for name, version in pkgs.items():
        assert version or name in UNPINNED_OK, f"{path.name}: {name} is not pinned"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_pins_agree_with_constraints_and_pyproject(path):
    pkgs = env_packages(load_env(path))
    pins, reqs = constraint_pins(), runtime_requirements()
    python = Version(pkgs.pop("python"))
    assert python in SpecifierSet(pyproject()["project"]["requires-python"]), f"{path.name}: python {python}"
    pkgs.pop("pip", None)
    if path.name == PEER_ENV:  # ECLARE brings its own pins; thinslice only pins torch there
        assert set(pkgs) == {"eclare", "torch"}, f"{path.name}: {sorted(pkgs)}"
        pkgs.pop("eclare")
    for name, version in pkgs.items():
        assert name in reqs, f"{path.name}: {name} is not a dependency in pyproject.toml"
        assert name in pins, f"{path.name}: {name} has no pin in constraints.txt"
        assert Version(version) == Version(pins[name]), \
            f"{path.name}: {name}={version} but constraints.txt pins {pins[name]}"
        assert Version(version) in reqs[name], f"{path.name}: {name}={version} violates pyproject {reqs[name]}"


def test_only_the_network_envs_carry_torch():
    for path in env_files():
        has_torch = "torch" in env_packages(load_env(path))
        assert has_torch == (path.name in (GPU_ENV, PEER_ENV)), path.name


def test_rule_parsing_finds_the_workflow():
    rules = workflow_rules()
    assert set(EXPECTED_ENV) <= set(rules), sorted(rules)
    assert any(n.startswith("figure_") for n in rules)
    assert {n for n, r in rules.items() if r["gpu"]} == GPU_RULES


def test_every_rule_with_a_command_has_an_existing_env():
    for name, rule in workflow_rules().items():
        if rule["shell"] is None:
            continue  # no action (rule all, figures): nothing runs in an env
        assert rule["conda"] is not None, f"rule {name} ({rule['file'].name}) has no conda: directive"
        assert rule["conda"].exists(), f"rule {name}: conda env {rule['conda']} does not exist"
        assert rule["conda"].parent == ENVS, f"rule {name}: env outside envs/"
        assert rule["step"] in cli_handlers(), f"rule {name}: no `python -m thinslice <step>` found"


def test_rules_use_the_env_of_their_kind():
    for name, rule in workflow_rules().items():
        if rule["conda"] is None:
            continue
        expected = "figures.yaml" if name.startswith("figure_") else EXPECTED_ENV.get(name)
        assert expected, f"rule {name} is new: add it to EXPECTED_ENV in this test"
        assert rule["conda"].name == expected, f"rule {name} uses {rule['conda'].name}, expected {expected}"
        assert (rule["gpu"] > 0) == (expected in (GPU_ENV, PEER_ENV)), f"rule {name}: GPU request and env disagree"


def test_figure_rules_track_every_module_the_figure_step_loads():
    """Editing any module `thinslice figure` loads redraws the figures (FIGURE_CODE is an input)."""
    text = (RULES / "common.smk").read_text()
    listed = set(re.search(r"^FIGURE_MODULES = \[([^\]]*)\]", text, re.M).group(1).replace('"', "").replace(" ", "")
                 .replace("\n", "").strip(",").split(","))
    loaded = reachable([("__main__", "<top>"), cli_handlers()["figure"]])[1] - {"__main__", "cli", "commands"}
    assert listed == loaded, f"FIGURE_MODULES in common.smk should be {sorted(loaded)}"


def test_import_analysis_sees_known_imports():
    """The analysis itself: training imports torch and tqdm; interpolation does not import torch."""
    assert {"torch", "tqdm", "numpy"} <= set(step_imports("train-vae"))
    assert {"torch", "tqdm"} <= set(step_imports("train-sr"))
    assert "matplotlib" in step_imports("figure")
    assert {"SimpleITK", "pydicom", "skimage"} <= set(step_imports("prepare"))
    for step in ("upsample", "prepare", "simulate", "evaluate", "degrade"):
        assert "torch" not in step_imports(step), step


@pytest.mark.parametrize("rule", sorted(n for n, r in workflow_rules().items() if r["conda"] is not None))
def test_env_has_every_module_the_rule_imports(rule):
    info = workflow_rules()[rule]
    pkgs = env_packages(load_env(info["conda"]))
    provided = {m for p in pkgs for m in PEER_PROVIDES.get(p, ())}
    for module, importers in sorted(step_imports(info["step"]).items()):
        assert module in DISTRIBUTION, (f"rule {rule}: unknown third-party module {module!r} "
                                        f"(imported by {sorted(importers)}): add it to DISTRIBUTION")
        dist = norm(DISTRIBUTION[module])
        assert dist in pkgs or module in provided, (f"rule {rule} (`thinslice {info['step']}`) imports {module} "
                              f"(in {', '.join(sorted(importers))}.py) but {info['conda'].name} lacks {dist}")


def test_fetch_rules_env_has_pip():
    """fetch-demo runs `python -m pip download` in the rule's env."""
    assert "pip" in env_packages(load_env(ENVS / "imaging.yaml"))
