"""PyTorch's ToMe (the reference of the compiled graphs): the merge equals ToMe's own formulation, the patch keeps
timm's math, schedules and their errors, FLOPs of a description."""

import pytest
import torch

from compile.model.models import import_timm, load_model
from compile.model.tome import bipartite_soft_matching, merge_wavg
from compile.model.tome_patch import apply_tome, num_tokens
from compile.model.tome_schedule import largest_constant_r, parse_tome_r
from compile.model.vit import describe
from runtime.errors import EdgevitError


def reference_matching(metric: torch.Tensor, r: int):
    """ToMe's bipartite soft matching with a protected class token, as facebookresearch/ToMe writes it."""
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    scores[..., 0, :] = -float("inf")
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx = edge_idx[..., r:, :].sort(dim=1)[0]
    src_idx = edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="sum")
        return torch.cat([unm, dst], dim=1)

    return merge, unm_idx, src_idx, dst_idx


def reference_wavg(merge, x, size):
    x = merge(x * size)
    size = merge(size)
    return x / size, size


@pytest.mark.parametrize("r", [1, 4, 8, 13, 32, 98])
def test_merge_matches_scatter_reduce_reference(r):
    gen = torch.Generator().manual_seed(r)
    metric = torch.randn(3, 197, 64, generator=gen)
    x = torch.randn(3, 197, 192, generator=gen)
    size = torch.randint(1, 5, (3, 197, 1), generator=gen).float()

    ref_merge, unm_idx, src_idx, _ = reference_matching(metric, r)
    ref_x, ref_size = reference_wavg(ref_merge, x, size)
    got_x, got_size = merge_wavg(bipartite_soft_matching(metric, r, protected=1), x, size)

    assert got_x.shape == (3, 197 - r, 192)
    # same kept tokens: every source token of each output row is the same set (sizes identify merges)
    assert torch.equal(got_size, ref_size)
    assert torch.allclose(got_x, ref_x, atol=1e-5, rtol=0)
    # the class token stays first and unmerged
    assert torch.allclose(got_x[:, 0], x[:, 0], atol=1e-6) and torch.all(got_size[:, 0] == size[:, 0])


def test_distillation_token_is_protected_and_kept_second():
    metric = torch.randn(2, 198, 32)
    metric[:, 1] = metric[:, 2]  # make the distillation token the best match of an A token
    x = torch.randn(2, 198, 16)
    size = torch.ones(2, 198, 1)
    out, out_size = merge_wavg(bipartite_soft_matching(metric, 40, protected=2), x, size)
    assert torch.equal(out[:, :2], x[:, :2]) and torch.all(out_size[:, :2] == 1)
    assert out.shape[1] == 158 and out_size.sum() == size.sum()


def test_r0_equals_stock_timm_on_real_deit():
    model = load_model("deit_tiny_patch16_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = model(x)
        apply_tome(model, [0] * 12)
        got = model(x)
    assert torch.equal(got, expected)


def test_layerscale_and_distillation_model_keeps_parity_and_merges():
    timm = import_timm()
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=64, patch_size=8, embed_dim=48, depth=3, num_heads=3, init_values=1e-1,
                              qk_norm=True, reg_tokens=2, num_classes=10).eval()
    assert isinstance(model.blocks[0].ls1, timm.layers.LayerScale) and model.num_prefix_tokens == 3
    tokens_out = []  # tokens that leave the last block
    model.norm.register_forward_hook(lambda _module, inputs, _output: tokens_out.append(inputs[0].shape[1]))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        apply_tome(model, [0, 0, 0])
        assert torch.equal(model(x), expected)
        schedule = parse_tome_r("6", 3, num_tokens(model), protected=3)
        apply_tome(model, schedule)
        merged = model(x)
    assert tokens_out == [67, 67, 67 - 3 * 6], "ToMe r=6 merges 6 tokens in each of the 3 blocks"
    assert merged.shape == expected.shape and torch.isfinite(merged).all()


def test_schedules_and_errors():
    assert parse_tome_r("8", 12, 197) == [8] * 12
    assert parse_tome_r(4, 12, 197) == [4] * 12
    assert parse_tome_r(",".join(["8"] * 6 + ["4"] * 6), 12, 197) == [8] * 6 + [4] * 6
    decreasing = parse_tome_r("16:decrease", 12, 197)
    assert decreasing[0] == 32 and decreasing[-1] == 0 and decreasing == sorted(decreasing, reverse=True)
    assert largest_constant_r(12, 197, 1) == 15
    with pytest.raises(EdgevitError, match="largest valid constant r for this model is 15"):
        parse_tome_r("16", 12, 197)
    with pytest.raises(EdgevitError, match="12 blocks"):
        parse_tome_r("1,2,3", 12, 197)


def test_gflops_fall_with_r():
    model = load_model("deit_tiny_patch16_224")
    full = describe(model, [0] * 12).gflops()
    assert 2.4 < full < 2.6  # DeiT-tiny: 1.26 GMACs
    assert describe(model, [8] * 12).gflops() < full
