"""Other timm ViTs of the standard structure compile and match PyTorch."""

import numpy as np
import pytest
import torch

from compile.model.models import import_timm
from runtime.model import Model
from tests.helpers import run_module


@pytest.mark.slow
def test_deit_small_random_init_matches_pytorch(tmp_path):
    from safetensors.torch import save_file

    timm = import_timm()
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    weights = tmp_path / "deit_small.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    out = tmp_path / "bundle"
    result = run_module("compile", "--model", "deit_small_patch16_224", "--weights", weights, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)

    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = Model(out).run_tensor(x)
    assert np.abs(got - expected).max() <= 1e-3
