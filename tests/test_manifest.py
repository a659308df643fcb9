"""The manifest is one typed definition: what compile writes reads back field for field, every
field is documented in docs/manifest.md, and a manifest of another shape is refused with one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from runtime import manifest as schema
from runtime.bundle import read_manifest
from runtime.errors import EdgevitError
from runtime.manifest import Manifest
from tests.helpers import REPO


def _documented_names() -> list[str]:
    """Every field as docs/manifest.md names it: `part.field` for the sections, `field` for the rest."""
    names = []
    for part in dataclasses.fields(Manifest):
        section = getattr(schema, str(part.type), None)
        if dataclasses.is_dataclass(section):
            names += [f"{part.name}.{f.name}" for f in dataclasses.fields(section)]
        else:
            names.append(part.name)
    return names


def test_written_manifest_reads_back_unchanged(int8_tome_bundle):
    written = json.loads((int8_tome_bundle / "manifest.json").read_text())
    manifest = read_manifest(int8_tome_bundle)
    assert json.loads(manifest.to_json()) == written
    assert manifest.quant.mode == "int8" and manifest.input.dtype == "uint8"
    assert len(manifest.tome.tokens_per_block) == manifest.model.depth + 1


def test_every_field_is_documented():
    doc = (REPO / "docs" / "manifest.md").read_text()
    names = _documented_names()
    assert "input.interpolation" in names and "files" in names
    missing = [name for name in names if f"`{name}`" not in doc and f"`{name}`," not in doc]
    assert not missing, f"not in docs/manifest.md: {missing}"


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(schema_version=2), "manifest schema 2"),
    (lambda m: m["model"].pop("depth"), "does not match schema 1"),
    (lambda m: m["input"].update(colour="rgb"), "does not match schema 1"),
])
def test_a_manifest_of_another_shape_is_refused(int8_tome_bundle, change, message):
    data = json.loads((int8_tome_bundle / "manifest.json").read_text())
    change(data)
    with pytest.raises(EdgevitError, match=message):
        Manifest.from_dict(data, where=str(int8_tome_bundle))


def test_a_manifest_without_model_output_is_a_classifier(int8_tome_bundle):
    """Bundles written before `model.output` existed read as logits (the native runner does the same)."""
    data = json.loads((int8_tome_bundle / "manifest.json").read_text())
    assert data["model"].pop("output") == "logits"
    assert Manifest.from_dict(data).model.output == "logits"
