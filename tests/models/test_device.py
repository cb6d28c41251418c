"""Device and dtype policy."""

import pytest
import torch

from labkit.errors import ConfigError
from labkit.models.device import cpu_has_native_bf16, resolve_device, resolve_dtype


def test_auto_device_on_this_machine():
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else dev.type)
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_dtype_follows_the_cpu():
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32") == torch.float32 and resolve_dtype("bf16") == torch.bfloat16


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="dtype.*unknown dtype 'float8'"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device.*no CUDA"):
            resolve_device("cuda")
