"""Run manifests: content hashes and their cache, what a manifest records, write-once files, and RunDir's
statuses and decisions (new, skip, resume, forced rerun)."""

from __future__ import annotations

import functools
import json
import os
import stat

import pytest

from labkit.runs.manifest import (
    Budget,
    HashCache,
    Manifest,
    ManifestError,
    RunDir,
    build_manifest,
    content_hash,
    data_record,
    find_runs,
    git_state,
    library_versions,
    model_record,
    plan_start,
    read_manifest,
    reward_record,
    write_manifest,
)

GIT = {"commit": "abc", "dirty": False}


def make(tmp_path, **overrides):
    """A manifest without probing the machine or git, hashing with an in-memory cache."""
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text('{"prompt": "1+1", "completion": "2"}\n')
    cfg = {"model": "org/tiny", "max_steps": 5, "seed": 3, "data_seed": 4, **overrides.pop("cfg", {})}
    kwargs = {"preset": "cpu-smoke", "data": [data], "machine": {}, "git": GIT, "cache": HashCache(),
              **overrides}
    return build_manifest("sft", cfg, **kwargs)


def test_file_and_folder_hashes_and_the_cache(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    cache = HashCache(tmp_path / "cache.json")
    first = content_hash(f, cache)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    # Same path, size and mtime: the cached value is trusted, so different bytes go unnoticed…
    st = f.stat()
    f.write_bytes(b"xyz")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert content_hash(f, cache) == first
    # …and the cache survives the process (a JSON file), while a new mtime means hashing again.
    assert HashCache(tmp_path / "cache.json").file_hash(f) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert content_hash(f, cache) != first
    # A folder: its files' relative paths and hashes; dot-files (download metadata) are left out.
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "w.safetensors").write_bytes(b"1")
    before = content_hash(d, cache)
    (d / ".cache").mkdir()
    (d / ".cache" / "meta").write_text("x")
    assert content_hash(d, cache) == before
    (d / "sub" / "w.safetensors").write_bytes(b"2")
    assert content_hash(d, cache) != before
    with pytest.raises(ManifestError, match="no such file"):
        content_hash(tmp_path / "missing", cache)


def test_model_data_and_library_records(tmp_path):
    cache = HashCache()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_record(str(tmp_path / "m"), cache=cache)["kind"] == "dir"
    rec = model_record(str(gguf), cache=cache)
    assert rec["kind"] == "gguf" and rec["hash"] == content_hash(gguf, cache)
    hub = model_record("org/model", revision="r1")
    assert hub == {"name": "org/model", "kind": "hub", "id": "org/model", "revision": "r1"}
    assert data_record("sft_format") == {"path": "sft_format", "hash": None, "bytes": None}
    versions = library_versions()
    wanted = {"python", "labkit", "torch", "transformers", "trl", "peft", "datasets", "accelerate"}
    assert wanted <= set(versions)
    assert versions["torch"].startswith("2.")


def test_hub_revision_is_read_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "models--org--model" / "refs"
    ref.mkdir(parents=True)
    (ref / "main").write_text("0123abcd\n")
    assert model_record("org/model")["revision"] == "0123abcd"
    assert model_record("org/other")["revision"] is None


def plain_reward(prompts, completions, **kw):
    return [0.0 for _ in completions]


class Scaled:
    def __init__(self, k):
        self.k = k
        self.__name__ = "scaled"

    def __call__(self, prompts, completions, **kw):
        return [self.k for _ in completions]

    def __repr__(self):
        return f"Scaled({self.k})"


def test_reward_records_hash_the_source():
    rec = reward_record(plain_reward)
    assert rec["name"] == "plain_reward" and len(rec["source_hash"]) == 64
    assert reward_record(functools.partial(plain_reward, extra=1))["source_hash"] == rec["source_hash"]
    a, b = reward_record(Scaled(1)), reward_record(Scaled(2))
    assert a["name"] == "scaled" and a["source_hash"] == b["source_hash"] and a["repr"] != b["repr"]
    assert reward_record(len)["source_hash"] is None and "unavailable" in reward_record(len)["source"]


def test_manifest_identity_ignores_when_and_where(tmp_path):
    one, two = make(tmp_path), make(tmp_path, machine={"cpus": 99})
    assert one.run_id != two.run_id or one.created != two.created or one.machine != two.machine
    assert one.hash() == two.hash()
    assert one.seeds == {"seed": 3, "data_seed": 4} and one.budget == Budget(max_steps=5).to_dict()
    assert one.model["kind"] == "hub" and one.data[0]["hash"] and one.git == GIT
    assert make(tmp_path, cfg={"seed": 4}).hash() != one.hash()
    assert make(tmp_path, budget=Budget(max_tokens=100)).hash() != one.hash()
    (tmp_path / "train.jsonl").write_text("changed\n")
    assert make(tmp_path).hash() != one.hash()  # the data's content is part of the identity
    assert Manifest.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    with pytest.raises(ManifestError, match="not a labkit run manifest"):
        Manifest.from_dict({"stage": "sft"})


def test_git_state_tolerates_no_checkout_and_no_git(tmp_path, monkeypatch):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary on the PATH
    assert git_state() == {"commit": None, "dirty": None}


def test_manifest_is_written_once_read_only_and_atomically(tmp_path):
    m = make(tmp_path)
    path = write_manifest(tmp_path / "run" / "manifest.json", m)
    assert read_manifest(path) == m and read_manifest(tmp_path / "run") == m
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222  # nobody may write it
    with pytest.raises(ManifestError, match="written once"):
        write_manifest(path, make(tmp_path))
    assert read_manifest(path) == m
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]  # no temp file left


def test_run_dir_statuses_and_start_decisions(tmp_path):
    m = make(tmp_path)
    run = RunDir(tmp_path / "run")
    assert run.status() == {} and plan_start(run.path, m).action == "new"
    with pytest.raises(ManifestError, match="before start"):
        run.finish("done")
    assert run.start(m).action == "new"
    assert run.status()["status"] == "running" and run.checkpoints_dir.is_dir()
    assert run.status()["manifest_hash"] == m.hash() and run.status()["attempt"] == 1
    try:
        raise RuntimeError("loss is nan")
    except RuntimeError as exc:
        record = run.finish("failed", error=exc, last_checkpoint="checkpoints/step-3")
    assert record["error"] == "RuntimeError: loss is nan" and "Traceback" in record["traceback"]
    assert run.status() == record
    # The same manifest after a failure resumes (same manifest file, next attempt).
    again = make(tmp_path)
    assert run.start(again).action == "resume" and run.status()["attempt"] == 2
    assert run.manifest() == m  # never rewritten
    run.finish("done", steps=5)
    # Finished: running it again is a no-op, unless forced, which moves the old run aside.
    plan = run.start(again)
    assert plan.action == "skip" and run.status()["status"] == "done"
    plan = run.start(again, force=True)
    assert plan.action == "rerun" and (plan.moved_to / "manifest.json").is_file()
    assert run.status()["status"] == "running" and run.manifest() == again
    # Another manifest in the same folder is refused: it holds another run's files.
    with pytest.raises(ManifestError, match="holds another run"):
        run.start(make(tmp_path, cfg={"seed": 9}))
    with pytest.raises(ManifestError, match="final status must be one of"):
        run.finish("running")
    for status in ("budget_exceeded", "interrupted"):
        assert run.finish(status)["status"] == status
    assert [r.path for r in find_runs(tmp_path)] == sorted([run.path, plan.moved_to])


def test_machine_record_probes_capabilities_once(monkeypatch):
    import sys
    import types

    from labkit.runs.manifest import machine_record

    calls = []

    class Report:
        def to_dict(self):
            return {"cuda": {"usable": False}}

    fake = types.SimpleNamespace(capability_report=lambda: calls.append(1) or Report())
    monkeypatch.setitem(sys.modules, "labkit.models.capabilities", fake)  # the real probe takes seconds
    machine_record.cache_clear()
    try:
        first = machine_record()
        assert machine_record() is first and calls == [1]
        assert first["capabilities"] == {"cuda": {"usable": False}} and first["cpus"] >= 1
    finally:
        machine_record.cache_clear()
