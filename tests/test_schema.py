"""The config schema mirrors the networks' settings: same keys, same defaults."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from thinslice.sr import SRConfig
from thinslice.vae import VAEConfig

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())


@pytest.mark.parametrize("key, cls", [("vae", VAEConfig), ("sr", SRConfig)])
def test_schema_defaults_equal_dataclass_defaults(key, cls):
    props = SCHEMA["properties"][key]["properties"]["train"]["properties"]
    assert set(props) == {f.name for f in fields(cls)}
    for f in fields(cls):
        assert props[f.name]["default"] == f.default, f.name
        assert props[f.name]["description"], f.name


def test_every_schema_key_has_default_and_description():
    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{name}"
            assert "default" in sub, f"{path}{name}"
            walk(sub, f"{path}{name}.")

    walk(SCHEMA, "")
