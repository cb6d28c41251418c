"""labkit's error messages carry source, row and field; missing extras name the extra."""

import pytest

from labkit.errors import DataError, LabkitError, MissingExtraError, require


def test_data_error_names_source_row_field():
    err = DataError("data/train.jsonl", 3, "chosen", "is empty")
    assert str(err) == "data/train.jsonl, row 3, field 'chosen': is empty"
    assert (err.source, err.row, err.field) == ("data/train.jsonl", 3, "chosen")
    assert isinstance(err, LabkitError) and isinstance(err, ValueError)


def test_require_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'labkit\[gpu\]'"):
        require("surely_not_a_real_module_xyz", "gpu", "fast QLoRA")
    assert require("json", "dev").dumps([]) == "[]"
