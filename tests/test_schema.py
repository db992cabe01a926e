"""The config schema: its network settings are generated from the settings dataclasses, and a
bad value of any of them stops a run before any job, named by its key."""

import copy
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from thinslice import settings
from thinslice.errors import ThinsliceError
from thinslice.settings import SRConfig, VAEConfig

REPO = Path(__file__).parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_the_committed_schema_is_the_generated_one():
    assert SCHEMA == settings.generated_schema(SCHEMA), (
        "workflow/schemas/config.schema.yaml is out of date with src/thinslice/settings.py: "
        "run `PYTHONPATH=src python -m thinslice.settings`")


@pytest.mark.parametrize("cls", [VAEConfig, SRConfig])
def test_schema_defaults_equal_dataclass_defaults(cls):
    section = cls.SECTION.split(".")[0]
    props = SCHEMA["properties"][section]["properties"]["train"]["properties"]
    assert list(props) == [f.name for f in fields(cls)]
    for f in fields(cls):
        assert props[f.name]["default"] == f.default, f.name
        assert props[f.name]["description"], f.name
    assert cls() == cls.from_dict({})


def test_every_schema_key_has_default_and_description():
    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{name}"
            assert "default" in sub, f"{path}{name}"
            walk(sub, f"{path}{name}.")

    walk(SCHEMA, "")


def bad_values(f):
    """Values the constraints of a settings field reject: one of another type, one past each
    bound, one outside the enum."""
    kind = settings.JSON_TYPES[f.type]
    yield {"boolean": "yes", "integer": 1.5, "number": "0.5", "string": 1}[kind]
    for bound, past in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
        if bound in f.metadata:
            yield f.metadata[bound] + past
    if "enum" in f.metadata:
        yield "none-of-them"


BAD = [pytest.param(cls, f.name, value, id=f"{cls.SECTION}.{f.name}={value!r}")
       for cls in (VAEConfig, SRConfig) for f in fields(cls) for value in bad_values(f)]


def test_every_setting_has_a_bad_value_to_try():
    tried = {(cls.SECTION, name) for cls, name, _ in (p.values for p in BAD)}
    assert tried == {(cls.SECTION, f.name) for cls in (VAEConfig, SRConfig) for f in fields(cls)}


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_configs_are_valid(path):
    errors = Draft202012Validator(SCHEMA).iter_errors(yaml.safe_load(path.read_text()))
    assert [e.message for e in errors] == []


@pytest.mark.parametrize("cls, name, value", BAD)
def test_a_bad_setting_fails_the_schema_and_the_dataclass_naming_its_key(cls, name, value):
    section = cls.SECTION.split(".")[0]
    config = copy.deepcopy(CONFIG)
    config.setdefault(section, {}).setdefault("train", {})[name] = value
    errors = list(Draft202012Validator(SCHEMA).iter_errors(config))
    assert {tuple(e.absolute_path) for e in errors} == {(section, "train", name)}
    # the same value passed to the network by other means (e.g. a --settings file) is refused alike
    with pytest.raises(ThinsliceError, match=re.escape(f"{cls.SECTION}.{name} must be")):
        cls.from_dict({name: value})


def test_whole_numbers_are_integers_as_in_json_schema():
    config = SRConfig(channels=8.0, learning_rate=1)
    assert type(config.channels) is int and type(config.learning_rate) is float
    assert config == SRConfig(channels=8, learning_rate=1.0)


def test_rules_across_settings_and_unknown_keys_name_the_key():
    with pytest.raises(ThinsliceError, match=re.escape("vae.train.crop_size (60) must be a multiple")):
        VAEConfig(levels=3, crop_size=60)
    for cls in (VAEConfig, SRConfig):
        with pytest.raises(ThinsliceError, match=re.escape(f"{cls.SECTION}: unknown setting(s) ['nope']")):
            cls.from_dict({"nope": 1})
