"""The ARM-only paths of the integer graph, bit-exact on the emulated boards: int8-full (requantizations whose int64
part reads an int32 tile, the multipliers read as int32, the LayerNorm and softmax row kernels, padded logits)
on rpi5 (SDOT tiles) and rpi4 (the c16 tiles), against the numpy reference, with ToMe."""

from __future__ import annotations

import numpy as np
import pytest

from compile.model.models import import_timm, model_spec
from runtime.evaluate import read_labels
from targets import load_preset
from tests import integer_reference
from tests.helpers import cross_compiled_library, quantized_graph

MODEL = "deit_tiny_patch16_224"


@pytest.mark.slow
@pytest.mark.parametrize("preset, cpu", [("rpi5", "cortex-a76"), ("rpi4", "cortex-a72")])
def test_int8_full_is_the_reference_on_emulated_boards(preset, cpu, data, images_dir, labels_csv, tmp_path):
    import torch

    from tests.emulated_board import emulated_board, run_vm_functions

    torch.manual_seed(0)
    model = import_timm().create_model(MODEL, pretrained=False, depth=2).eval()
    spec = model_spec(MODEL)
    module, qvit = quantized_graph(model, spec, "int8-full", 8, target=load_preset(preset).target())
    library = cross_compiled_library(module, preset, tmp_path / "model.so")
    (name, _), = read_labels(labels_csv, skip=256, limit=1)
    pixels = spec.preprocess("uint8").load(images_dir / name)[None]
    got = run_vm_functions(emulated_board(cpu), library, {"main": [pixels]}, tmp_path)["main"]
    np.testing.assert_array_equal(got, integer_reference.run(qvit, pixels))
