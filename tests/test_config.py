"""Configs and presets: wrong values fail with the field's name; every preset builds every config."""

import dataclasses

import pytest

from labkit import config as config_mod
from labkit.config import Config, SetupConfig, TourConfig
from labkit.errors import ConfigError
from labkit.presets import PRESETS


def config_classes():
    return [c for c in vars(config_mod).values()
            if isinstance(c, type) and issubclass(c, Config) and c is not Config]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_every_config(preset):
    for cls in config_classes():
        cls.from_preset(preset)


def test_presets_only_name_real_configs_and_fields():
    classes = {c.__name__: c for c in config_classes()}
    for preset, per_config in PRESETS.items():
        for name, values in per_config.items():
            assert name in classes, f"preset {preset} names unknown config {name}"
            fields = {f.name for f in dataclasses.fields(classes[name])}
            assert set(values) <= fields


def test_every_field_has_help():
    for cls in config_classes():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("values, message", [
    ({"max_new_tokens": "many"}, "SetupConfig.max_new_tokens': expected int, got 'many'"),
    ({"max_new_tokens": True}, "max_new_tokens': expected int"),
    ({"dtype": "float8"}, "SetupConfig.dtype': 'float8' is not one of"),
    ({"temperature": 0.7}, "SetupConfig.temperature': unknown field"),
])
def test_bad_values_name_config_and_field(values, message):
    with pytest.raises(ConfigError) as err:
        SetupConfig.from_dict(values)
    assert message in str(err.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of cpu-smoke"):
        TourConfig.from_preset("huge")


def test_overrides_win_over_preset():
    cfg = SetupConfig.from_preset("cpu-smoke", max_new_tokens=5)
    assert (cfg.max_new_tokens == 5
            and cfg.n_baseline_prompts == PRESETS["cpu-smoke"]["SetupConfig"]["n_baseline_prompts"])
    assert "max_new_tokens" in SetupConfig.help()
