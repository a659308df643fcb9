"""edgevit compiler: timm ViT -> (ToMe, PTQ) -> Relax -> TVM bundle for a target preset."""
