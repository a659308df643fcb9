"""timm, imported so that it works beside the CPU build of torch (one place for every module that needs it)."""


def import_timm():
    """Import timm on a machine whose torchvision C ops cannot load beside CPU torch.

    timm imports torchvision at import time; PyPI's torchvision for this torch is a CUDA build whose
    C ops fail to register, so `import torchvision` stops at "operator torchvision::nms does not
    exist". Declaring the two schemas it registers fake kernels for lets it import; a ViT never
    uses them.
    """
    import torch

    try:
        import timm
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        import sys

        for mod in [m for m in sys.modules if m.startswith(("torchvision", "timm"))]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm._library = lib  # keep the registration alive
        import timm
    return timm
