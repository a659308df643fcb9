"""Where tests keep expensive fixtures (sysroots, built bundles) between runs: edgevit's own cache."""

from compile.cache import edgevit_cache_dir

__all__ = ["edgevit_cache_dir"]
