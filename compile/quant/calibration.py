"""Calibration: run the float model over real images and summarize every activation to quantize.

Two passes over the same images: the first records each site's per-channel |x| maximum, the second
a histogram of |x| over that fixed range (what the observers read) and a few sampled rows (what the
sensitivity pass re-quantizes). Sites are named `blocks.<i>.<site>` (see SITES; `q` / `k` are qkv's
outputs, `q_normed` / `k_normed` those of a q/k norm, `probs` each image's largest attention probability
per head, read with timm's unfused attention) plus `head_in` (the head's LayerNorm output on the
pooled rows) and `residual` (every value the residual stream holds); the model may be ToMe-patched,
so statistics see the token counts that will run. Low-bit modes also accumulate X^T X of every GEMM
input (compile.quant.hessian), the Hessian their int4 rounding compensates against, and `mixed` holds
the last quarter of the calibration images out of all of it to estimate accuracy on.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compile.model.tome_patch import transformer_blocks
from compile.quant.config import MIN_CALIB_IMAGES, QuantConfig
from compile.quant.hessian import Gram
from runtime.errors import EdgevitError

BINS = 2048  # per-tensor histograms
CHANNEL_BINS = 256  # per-channel histograms (one per channel)
CHANNEL_HIST_ROWS = 2048  # rows per batch that feed the per-channel histograms (tokens are alike)
SAMPLE_ROWS = 512  # rows per site kept for the sensitivity pass
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
# what each site records: a per-channel or per-tensor histogram, or (None) only maxima and samples
SITES = {"ln1": "channel", "q": "tensor", "k": "tensor", "v": "tensor", "q_normed": "tensor", "k_normed": "tensor",
         "attn_out": "tensor", "ln2": "channel", "fc1_out": None, "fc2_in": "channel", "head_in": "channel",
         "patch_in": None, "residual": None, "probs": None}
UNSAMPLED = {"residual", "probs"}  # sites that only need their maxima
GEMM_INPUTS = {"ln1", "attn_out", "ln2", "fc2_in", "head_in", "patch_in"}  # sites a GEMM reads: X^T X for low-bit modes
HELDOUT_SHARE = 4  # mixed: 1 in 4 calibration images (the last ones) estimate accuracy, the rest calibrate


@dataclass
class SiteStats:
    """|x| statistics of one activation: per-channel maxima, histogram(s) over [0, max], sampled rows."""

    absmax: np.ndarray  # [C]
    histogram: str | None  # "channel": hist [C, CHANNEL_BINS]; "tensor": hist [BINS] over the tensor's max
    hist: np.ndarray | None = None
    samples: list[np.ndarray] = field(default_factory=list)
    gram: Gram | None = None  # X^T X of a GEMM input, when collected

    @property
    def tensor_absmax(self) -> float:
        return float(self.absmax.max())

    def sample_rows(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros((0, len(self.absmax)), np.float32)


def calibration_files(config: QuantConfig) -> list[Path]:
    """The calibration images: --calib-images DIR (sorted), else the data directory's calibration split."""
    if config.calib_images is None:
        from compile.data import CALIBRATION_ROWS, calibration_rows, labelled_images

        if config.calib_count > CALIBRATION_ROWS:
            raise EdgevitError(f"--calib-count {config.calib_count}: the default calibration split has {CALIBRATION_ROWS} "
                               "images (the rest are for evaluation); pass --calib-images DIR for more")
        return [labelled_images() / "images" / name for name, _ in calibration_rows(config.calib_count)]
    folder = Path(config.calib_images)
    if not folder.is_dir():
        raise EdgevitError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise EdgevitError(f"calibration folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) < MIN_CALIB_IMAGES:
        raise EdgevitError(f"calibration folder {folder} has {len(files)} images; at least {MIN_CALIB_IMAGES} are needed")
    return files[: config.calib_count]


@dataclass(frozen=True)
class CalibrationSplit:
    """The images that calibrate and, for --quant mixed, those held out to estimate the accuracy drop."""

    fit: list[Path]
    heldout: list[Path]
    heldout_labels: list[int] | None  # None: images of a --calib-images folder (no labels)


def calibration_split(config: QuantConfig) -> CalibrationSplit:
    """calibration_files, the last 1 / HELDOUT_SHARE of them held out when the mode chooses formats by accuracy."""
    files = calibration_files(config)
    if config.mode != "mixed":
        return CalibrationSplit(files, [], None)
    held = max(1, len(files) // HELDOUT_SHARE)
    labels = None
    if config.calib_images is None:
        from compile.data import calibration_rows

        labels = [label for _, label in calibration_rows(config.calib_count)][-held:]
    return CalibrationSplit(files[:-held], files[-held:], labels)


def load_images(files: list[Path], preprocess, progress: Callable[[], None] | None = None) -> np.ndarray:
    """[n, 3, H, W] float32, preprocessed like the runtime does; an unreadable file is a clear error."""
    batch = np.empty((len(files), 3, preprocess.size, preprocess.size), dtype=np.float32)
    for i, path in enumerate(files):
        preprocess.load(path, out=batch[i])
        if progress is not None:
            progress()
    return batch


class _Recorder:
    """Forward hooks that feed each site's tensor [rows, channels] to a per-pass callback."""

    def __init__(self, model: torch.nn.Module):
        self.handles = []
        self.callback: Callable[[str, torch.Tensor], None] = lambda name, x: None
        for i, block in enumerate(transformer_blocks(model)):
            dim = block.attn.qkv.in_features
            self._hook(block.norm1, lambda m, a, out, i=i: (self._emit("residual", a[0]), self._emit(f"blocks.{i}.ln1", out)))
            self._hook(block.attn.qkv, lambda m, a, out, i=i, d=dim: [
                self._emit(f"blocks.{i}.{part}", out[..., j * d:(j + 1) * d]) for j, part in enumerate("qkv")])
            if isinstance(block.attn.q_norm, torch.nn.LayerNorm):
                for part in "qk":
                    self._hook(getattr(block.attn, f"{part}_norm"),
                               lambda m, a, out, i=i, part=part: self._emit(f"blocks.{i}.{part}_normed", out))
            block.attn.fused_attn = False  # the probabilities pass through attn_drop (an identity in eval)
            self._hook(block.attn.attn_drop, lambda m, a, out, i=i: self._emit(f"blocks.{i}.probs", out.amax(dim=(2, 3))))
            self._hook(block.attn.proj, lambda m, a, out, i=i: self._emit(f"blocks.{i}.attn_out", a[0]))
            self._hook(block.norm2, lambda m, a, out, i=i: (self._emit("residual", a[0]), self._emit(f"blocks.{i}.ln2", out)))
            self._hook(block.mlp.fc1, lambda m, a, out, i=i: self._emit(f"blocks.{i}.fc1_out", out))
            self._hook(block.mlp.fc2, lambda m, a, out, i=i: self._emit(f"blocks.{i}.fc2_in", a[0]))
        self._hook(model.norm_pre, lambda m, a, out: self._emit("residual", a[0]))
        if model.global_pool == "avg":  # fc_norm reads the pooled rows
            self._hook(model.norm, lambda m, a, out: self._emit("residual", a[0]))
            self._hook(model.fc_norm, lambda m, a, out: self._emit("head_in", out))
        else:  # the heads read the class (and distillation) rows of norm's output
            heads = 2 if getattr(model, "dist_token", None) is not None else 1
            self._hook(model.norm, lambda m, a, out: (self._emit("residual", a[0]), self._emit("head_in", out[:, :heads])))
        patch = model.patch_embed.patch_size[0]
        self._hook(model.patch_embed, lambda m, a, out: self._emit("patch_in", image_patches(a[0], patch)))

    def _hook(self, module, fn) -> None:
        """A forward hook that only observes (a hook returning a value would replace the output)."""

        def observe(module, args, out) -> None:
            fn(module, args, out)

        self.handles.append(module.register_forward_hook(observe))

    def _emit(self, name: str, x: torch.Tensor) -> None:
        self.callback(name, x.detach().reshape(-1, x.shape[-1]).float())

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _histogram_kind(name: str) -> str | None:
    return SITES[name.rsplit(".", 1)[-1]]


def collect_stats(model: torch.nn.Module, images: np.ndarray, batch_size: int = 32,
                  progress: Callable[[], None] | None = None, grams: bool = False) -> dict[str, SiteStats]:
    """Two passes over `images` (float, normalized) -> statistics per site. `progress` ticks per batch;
    `grams`: also X^T X of every GEMM input (first pass)."""
    stats: dict[str, SiteStats] = {}
    recorder = _Recorder(model)
    batches = [torch.from_numpy(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    rng = np.random.default_rng(0)  # row sampling is seeded: the same images give the same scales
    generator = torch.Generator().manual_seed(0)
    rows_per_batch = -(-SAMPLE_ROWS // len(batches))

    def first_pass(name: str, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x, dim=0)
        absmax = torch.maximum(high, low.neg()).numpy()
        if name in stats:
            np.maximum(stats[name].absmax, absmax, out=stats[name].absmax)
        else:
            stats[name] = SiteStats(absmax=absmax, histogram=_histogram_kind(name))
            if grams and name.rsplit(".", 1)[-1] in GEMM_INPUTS:
                stats[name].gram = Gram.empty(x.shape[1])
        if stats[name].gram is not None:
            stats[name].gram.add(x)

    def second_pass(name: str, x: torch.Tensor) -> None:
        site = stats[name]
        if site.histogram == "channel":
            rows = x
            if x.shape[0] > CHANNEL_HIST_ROWS:
                rows = x[torch.randperm(x.shape[0], generator=generator)[:CHANNEL_HIST_ROWS]]
            top = torch.from_numpy(np.maximum(site.absmax, 1e-30))
            index = (rows.abs() / top * CHANNEL_BINS).long().clamp_(max=CHANNEL_BINS - 1)
            index += torch.arange(rows.shape[1]) * CHANNEL_BINS
            counts = torch.bincount(index.flatten(), minlength=rows.shape[1] * CHANNEL_BINS)
            counts = counts.reshape(rows.shape[1], CHANNEL_BINS)
        elif site.histogram == "tensor":
            counts = torch.histc(x.abs(), bins=BINS, min=0.0, max=max(site.tensor_absmax, 1e-30))
        else:
            counts = None
        if counts is not None:
            counts = counts.numpy().astype(np.float64)
            site.hist = counts if site.hist is None else site.hist + counts
        if name.rsplit(".", 1)[-1] not in UNSAMPLED:
            pick = rng.choice(x.shape[0], size=min(rows_per_batch, x.shape[0]), replace=False)
            site.samples.append(x[pick].numpy())

    try:
        with torch.inference_mode():
            for callback in (first_pass, second_pass):
                recorder.callback = callback
                for batch in batches:
                    model(batch)
                    if progress is not None:
                        progress()
    finally:
        recorder.close()
    return stats


def image_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), C*p*p], channel-major inside a patch (the conv weight's order)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


_STATS_CACHE: dict[tuple, dict] = {}  # one calibration per model / schedule / image set in a process


def calibrate(model, spec, schedule: list[int], config: QuantConfig, log: Callable[[str], None] = print) -> dict:
    """Statistics of every activation to quantize, from the float model (ToMe-patched copy) on real images.

    They do not depend on the recipe (observer, outliers, groups, ...), so a process that builds several
    recipes of one model (python -m results ptq) calibrates once.
    """
    from rich.progress import Progress

    from compile.model.tome_patch import apply_tome

    files = calibration_split(config).fit
    key = (spec.name, _weights_digest(model), tuple(schedule), tuple(map(str, files)))
    cached = _STATS_CACHE.get(key)
    if cached is not None and (not config.low_bit or any(site.gram is not None for site in cached.values())):
        return cached
    preprocess = spec.preprocess()
    calibrated = copy.deepcopy(model)
    if any(schedule):
        apply_tome(calibrated, schedule)
    log(f"      calibrating on {len(files)} images")
    with Progress(transient=True) as progress:
        task = progress.add_task("loading calibration images", total=len(files))
        images = load_images(files, preprocess, lambda: progress.advance(task))
        task = progress.add_task("calibrating (2 passes)", total=2 * -(-len(images) // 32))
        stats = collect_stats(calibrated, images, progress=lambda: progress.advance(task), grams=config.low_bit)
    _STATS_CACHE[key] = stats
    return stats


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()
