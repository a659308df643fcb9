"""Board presets: one TOML file per board under targets/presets/, loaded into TargetPreset records."""

from targets.preset import TargetPreset, list_presets, load_preset, preset_file

__all__ = ["TargetPreset", "list_presets", "load_preset", "preset_file"]
