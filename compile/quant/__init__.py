"""Post-training quantization into integer arithmetic (no retraining).

    calibrate (real images, the float timm model incl. ToMe) -> statistics per activation  (calibration.py)
    -> per-layer int8 weights and static activation scales for a ViT description, outlier channels and
       channel groups                                                  (scales.py, observers.py, weights.py)
    -> the layer table: a format per GEMM layer, the most sensitive ones kept in float32
                                                                      (formats.py, sensitivity.py)
quantize.py puts these together; compile.graph emits the graph the table describes.
"""
