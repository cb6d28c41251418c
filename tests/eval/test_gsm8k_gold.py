"""Every real GSM8K gold answer reads right: scripts/check_gsm8k_gold.py on the test split named by
LABKIT_GSM8K_TEST (GSM8K's grade_school_math/data/test.jsonl, 1,319 rows; not shipped with labkit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_gsm8k_gold.py"


@pytest.mark.slow
def test_every_gsm8k_test_gold_answer_extracts():
    path = os.environ.get("LABKIT_GSM8K_TEST")
    if not path or not Path(path).is_file():
        pytest.skip("set LABKIT_GSM8K_TEST to GSM8K's test.jsonl (grade_school_math/data/test.jsonl in "
                    "github.com/openai/grade-school-math) to check every gold answer")
    done = subprocess.run([sys.executable, str(SCRIPT), path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ok, total = done.stdout.split()[0].split("/")
    assert ok == total and int(total) > 0, done.stdout
