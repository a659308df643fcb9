"""Post-training quantization into integer arithmetic (no retraining).

    calibrate (real images, the float timm model incl. ToMe) -> statistics per activation  (calibration.py)
    -> per-layer int8 weights and static activation scales for a ViT description, outlier channels and
       channel groups                                                  (scales.py, observers.py, weights.py)
    -> w4a8 / mixed: int4 weights by GPTQ or round-to-nearest against each GEMM input's X^T X and the error
       of every layer format                        (int4.py, gptq.py, hessian.py, format_error.py)
    -> the layer table: a format per GEMM layer, the most sensitive ones kept in float32, or --quant mixed's
       choice under a budget, estimated on held-out calibration images through a torch simulation
                                      (formats.py, sensitivity.py, mofq.py, accuracy_proxy.py, simulate.py)
quantize.py puts these together; compile.graph emits the graph the table describes.
"""
