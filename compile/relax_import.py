"""torch.export -> Relax: the model as a static-shape Relax IRModule with weights as constants."""

from __future__ import annotations

import torch


def to_relax(model: torch.nn.Module, input_shape: tuple[int, ...]):
    """Export `model` for one static input shape and import it into Relax.

    The model is first rewritten into export-friendly equivalents (compile.export_friendly, in place).

    The weights are bound as constants so the compiler can pre-pack and fold them; the result has
    a single function `main(x: [N, 3, H, W] float32) -> logits [N, classes]`.
    """
    from tvm.relax.frontend.torch import from_exported_program

    from compile.export_friendly import prepare_for_export

    model = prepare_for_export(model)
    example = torch.zeros(input_shape, dtype=torch.float32)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    mod = from_exported_program(exported, keep_params_as_input=False, unwrap_unit_return_tuple=True)
    return mod
