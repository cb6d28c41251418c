"""`labkit tour`: the post-training chain run headless on one model, written up as one HTML report.

Each stage is a function `(ctx, report) -> metrics` appended to STAGES; later stages (SFT, preference,
RL, evaluation…) add themselves here and read what earlier ones left in `ctx`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import torch

from labkit.config import SetupConfig, TourConfig
from labkit.runs.report import Report

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TourContext:
    """What the tour's stages share: the config, the report folder, the loaded model and tokenizer, and
    each finished stage's metrics in `results` (by stage name)."""

    cfg: TourConfig
    out_dir: pathlib.Path
    model: Any = None
    tokenizer: Any = None
    # cfg.notebooks, resolved up front
    notebooks: list[pathlib.Path] = dataclasses.field(default_factory=list)
    results: dict[str, dict] = dataclasses.field(default_factory=dict)
    # the SFT → DPO → GRPO chain: each link's adapter merged into the model the next link starts from
    chain: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)


def stage_setup(ctx: TourContext, report: Report) -> dict:
    """Capabilities, model load, chat template and masks, baseline generations and probe losses."""
    from labkit.data.chat import assistant_mask, render
    from labkit.data.samples import extract_answer, format_ok, load_sample
    from labkit.metrics.probes import forgetting_probe
    from labkit.models import capability_report, generate, load_model

    cfg = SetupConfig.from_preset(ctx.cfg.preset, model=ctx.cfg.model)
    caps = capability_report()
    report.section("Machine", "What labkit found on this machine and what it will use.")
    report.table([{"": "✓" if c.usable else "·", "name": c.name, "present": c.present, "usable": c.usable,
                   "version": c.version, "detail": c.detail} for c in caps.rows])

    start = time.perf_counter()
    ctx.model, ctx.tokenizer = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    load_s = time.perf_counter() - start
    model, tok = ctx.model, ctx.tokenizer
    n_params = sum(p.numel() for p in model.parameters())
    report.section("Model", f"`{cfg.model}` loaded offline.")
    report.metrics({"load seconds": load_s, "parameters (M)": n_params / 1e6, "dtype": str(model.dtype),
                    "device": str(model.device), "vocabulary": len(tok)})

    convo = [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "3 + 4 = 7."}]
    ids, mask = assistant_mask(tok, convo)
    report.section("Chat template and loss mask",
                   "The conversation as the model sees it. SFT trains only on the assistant's tokens "
                   f"({sum(mask)} of {len(ids)} here), the end-of-turn token included.")
    report.generations([{"templated": render(tok, convo),
                         "trained tokens": "".join(tok.decode([i]) for i, m in zip(ids, mask) if m)}])

    rows = load_sample("sft_format", split="heldout")[: cfg.n_baseline_prompts]
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    start = time.perf_counter()
    outs = generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens)
    gen_s = time.perf_counter() - start
    new_tokens = sum(len(o.token_ids) for o in outs)
    report.section("Baseline generations", "Greedy replies before any training, next to the format that the "
                   "SFT stage teaches.")
    report.generations([{"prompt": r["messages"][-2]["content"], "model": o.text,
                         "target": r["messages"][-1]["content"]} for r, o in zip(rows, outs)])

    probe = forgetting_probe(model, tok)["per_prompt"]
    report.section("Forgetting probe (baseline)",
                   "Mean per-token loss of short reference answers to general questions. Later stages are "
                   "scored on the same probe: a rise means the model forgot some of what it knew.")
    report.figure(_bar([p["prompt"][:40] for p in probe], [p["loss"] for p in probe],
                       "per-token loss on reference answers (lower is better)"))
    mean_probe = sum(p["loss"] for p in probe) / len(probe)
    metrics = {"load_seconds": load_s, "generate_tokens_per_s": new_tokens / gen_s, "probe_loss": mean_probe,
               "format_accuracy": sum(format_ok(o.text) for o in outs) / len(outs),
               "answer_accuracy": sum(extract_answer(o.text) == r["answer"]
                                      for r, o in zip(rows, outs)) / len(outs)}
    report.metrics(metrics, caption="setup metrics")
    return metrics


def stage_sft(ctx: TourContext, report: Report) -> dict:
    """LoRA SFT on the format data: held-out format accuracy before/after, next to the forgetting probe."""
    from labkit.config import SFTConfig
    from labkit.dash.plots import before_after, loss_curve
    from labkit.runs.chain import merge_run
    from labkit.stages.sft import train

    ctx.model = None  # the stage loads its own trainable copy; free the setup one first
    cfg = SFTConfig.from_preset(ctx.cfg.preset, model=ctx.cfg.model, output_dir=str(ctx.out_dir / "sft"))
    result = train(cfg)
    ctx.chain["sft"] = merge_run(result.output_dir)
    m = result.metrics
    report.section("SFT (LoRA)", f"{m['steps']} steps of LoRA SFT (r={cfg.lora_r}) via {m['backend']} on the "
                   "`#### n` answer format. Held-out questions are scored before and after; the forgetting "
                   "probe shows what the new skill cost.")
    report.metrics({"format accuracy": f"{m['before']['format_accuracy']:.0%} → "
                    f"{m['after']['format_accuracy']:.0%}",
                    "answer accuracy": f"{m['before']['answer_accuracy']:.0%} → "
                    f"{m['after']['answer_accuracy']:.0%}",
                    "probe loss": f"{m['before']['probe_loss']:.3f} → {m['after']['probe_loss']:.3f}",
                    "held-out eval loss": m["after"].get("eval_loss"), "train seconds": m["train_seconds"],
                    "tokens/s": m["tokens_per_s"], "trainable params": m["trainable_params"]})
    report.figure(before_after(m))
    report.figure(loss_curve(result.log_path, title="SFT training loss"))
    report.generations([{"prompt": s["prompt"], "before": s["before"], "after": s["after"]}
                        for s in result.samples[:4]], caption="held-out questions, greedy replies")
    return {"format_accuracy_before": m["before"]["format_accuracy"],
            "format_accuracy_after": m["after"]["format_accuracy"], "sft_tokens_per_s": m["tokens_per_s"]}


def stage_reward(ctx: TourContext, report: Report) -> dict:
    """A reward model on the preference pairs: held-out accuracy per kind and calibration."""
    from labkit.config import RewardConfig
    from labkit.dash.plots import loss_curve
    from labkit.dash.preference import calibration_plot, reward_spread
    from labkit.metrics.reward_model import expected_calibration_error
    from labkit.stages.reward import train

    cfg = RewardConfig.from_preset(ctx.cfg.preset, model=ctx.cfg.model,
                                   output_dir=str(ctx.out_dir / "reward"))
    result = train(cfg)
    m = result.metrics
    ece = expected_calibration_error(m["calibration"])
    report.section("Reward model",
                   f"LoRA reward model (TRL RewardTrainer, Bradley-Terry loss), {m['steps']} steps on "
                   f"{m['pairs']} pairs. Held-out pairwise accuracy overall and per kind of rejected "
                   "reply: `slip` (arithmetic slip), `guess` (bare wrong answer), `padded` (right answer "
                   "in filler).")
    report.metrics({"held-out accuracy": f"{m['before']['accuracy']:.0%} → {m['after']['accuracy']:.0%}",
                    **{k.replace("accuracy/", "accuracy, "): f"{v:.0%}" for k, v in m["after"].items()
                       if k.startswith("accuracy/")},
                    "expected calibration error": ece, "train seconds": m["train_seconds"]})
    report.figure(reward_spread(result.samples))
    report.figure(calibration_plot(m["calibration"]))
    report.figure(loss_curve(result.log_path, title="reward-model training loss"))
    return {"reward_accuracy": m["after"]["accuracy"], "reward_ece": ece}


def stage_preference(ctx: TourContext, report: Report) -> dict:
    """DPO on the correct-vs-wrong pairs: held-out preference accuracy before/after and sampled KL."""
    from labkit.config import PreferenceConfig
    from labkit.dash.plots import loss_curve
    from labkit.runs.chain import merge_run
    from labkit.stages.preference import train

    # The chain: DPO starts from the SFT model (adapter merged), which is also its reference.
    cfg = PreferenceConfig.from_preset(ctx.cfg.preset, model=str(ctx.chain["sft"]), method="dpo",
                                       kinds="slip,guess", output_dir=str(ctx.out_dir / "dpo"))
    result = train(cfg)
    ctx.chain["dpo"] = merge_run(result.output_dir)
    m = result.metrics
    b, a = m["before"], m["after"]
    report.section("Preference optimisation (DPO)",
                   f"DPO (β={m['beta']}) with a LoRA adapter on the SFT model, {m['steps']} steps on "
                   f"{m['pairs']} correct-vs-wrong pairs; the reference is the SFT model (the adapter off). "
                   "Held-out "
                   "preference accuracy: how often the policy gives the correct reply a higher "
                   "log-probability than the wrong one.")
    report.metrics({"held-out preference accuracy": f"{b['preference_accuracy']:.0%} → "
                    f"{a['preference_accuracy']:.0%}",
                    **{k.replace("accuracy/", "accuracy, "): f"{b[k]:.0%} → {a[k]:.0%}" for k in a
                       if k.startswith("accuracy/")},
                    "implicit-reward accuracy": a["implicit_reward_accuracy"],
                    "KL to reference (nats)": a["kl"],
                    "train seconds": m["train_seconds"]})
    report.figure(loss_curve(result.log_path, title="DPO training loss"))
    return {"dpo_accuracy_before": b["preference_accuracy"], "dpo_accuracy_after": a["preference_accuracy"],
            "dpo_kl": a["kl"]}


def stage_rl(ctx: TourContext, report: Report) -> dict:
    """GRPO from verifiable rewards on the arithmetic prompts: pre-flight, held-out accuracy,
    the RL signals."""
    from labkit.config import RLConfig
    from labkit.dash.rl import accuracy_vs_time, rl_curves, rollout_html
    from labkit.runs.chain import merge_run
    from labkit.stages.grpo import train

    # The chain's last link: GRPO starts from the DPO model.
    cfg = RLConfig.from_preset(ctx.cfg.preset, model=str(ctx.chain["dpo"]),
                               output_dir=str(ctx.out_dir / "grpo"))
    result = train(cfg)
    ctx.chain["grpo"] = merge_run(result.output_dir)
    m = result.metrics
    b, a, pre = m["before"], m["after"], m["preflight"] or {}
    report.section("RL from verifiable rewards (GRPO)",
                   f"GRPO ({cfg.loss_type}) with a LoRA adapter on the DPO model: {m['steps']} steps, "
                   f"{cfg.prompts_per_step} prompts × {cfg.num_generations} sampled answers each, rewarded "
                   f"by code ({', '.join(m['rewards'])}). Pre-flight sampled a probe batch first: reward "
                   "signal, truncation and group variance were checked before any step. Held-out accuracy is "
                   "greedy, on arithmetic questions never trained on.")
    report.metrics({"held-out accuracy": f"{b['accuracy']:.0%} → {a['accuracy']:.0%}",
                    "answer length (tokens)": f"{b['mean_length']:.0f} → {a['mean_length']:.0f}",
                    "pre-flight reward mean": pre.get("reward_mean"),
                    "pre-flight truncation": pre.get("truncation_rate"),
                    "train seconds": m["train_seconds"]})
    report.figure(rl_curves(result.log_path, title="GRPO: reward, KL, length, held-out accuracy"))
    report.figure(accuracy_vs_time([{"method": "GRPO", **p} for p in m["curve"]]))
    report.html(rollout_html(result.output_dir, step=m["steps"]))
    report.generations([{"prompt": s["prompt"], "before": s["before"], "after": s["after"]}
                        for s in result.samples[:4]], caption="held-out questions, greedy replies")
    return {"rl_accuracy_before": b["accuracy"], "rl_accuracy_after": a["accuracy"],
            "rl_train_seconds": m["train_seconds"]}


def stage_inference(ctx: TourContext, report: Report) -> dict:
    """The chain's SFT and DPO adapters served side by side over the base model in one engine (vLLM when
    there is a vLLM environment, else transformers), picked per request: greedy answers and tokens/s."""
    from labkit.config import InferenceConfig
    from labkit.data.samples import load_sample
    from labkit.infer.serving import adapter_rank, choose_engine, side_by_side, stack_adapters, start_engine
    from labkit.runs.chain import adapter_chain

    cfg = InferenceConfig.from_preset(ctx.cfg.preset, model=ctx.cfg.model)
    base, sft_chain = adapter_chain(ctx.chain["sft"])
    _, dpo_chain = adapter_chain(ctx.chain["dpo"])
    kind, why = choose_engine(cfg.vllm)
    questions = [r["messages"][-2]["content"]
                 for r in load_sample("sft_format", split="heldout")[: cfg.n_prompts]]
    # Stacking adds ranks; a vLLM server launched now (wait=False) loads while the adapters are stacked.
    rank = max(adapter_rank(sft_chain[-1]), sum(map(adapter_rank, dpo_chain)))
    start = time.perf_counter()
    engine = start_engine(kind, base, dtype=cfg.dtype, max_lora_rank=rank, max_loras=2,
                          run_dir=ctx.out_dir / "serve", wait=False)
    start_s = time.perf_counter() - start   # the hf engine's load; for vLLM, launch to ready below
    try:
        # DPO trained on the SFT-merged model: over the base it is served as SFT's and DPO's adapters stacked.
        adapters = {"sft": sft_chain[-1],
                    "dpo": stack_adapters(base, dpo_chain, ctx.out_dir / "serve" / "dpo-stacked")}
        if kind == "vllm":
            start_s = engine.wait_ready()
        # hot loads into the running engine, timed
        load_s = {name: engine.update_weights(adapter=name, path=str(path))
                  for name, path in adapters.items()}
        rows = side_by_side(engine, questions, [None, *adapters], max_new_tokens=cfg.max_new_tokens)
    finally:
        engine.close()
    report.section("Serving: the adapters side by side",
                   f"One {kind} engine ({why}) serves the base model and, hot-loaded without a restart, the "
                   "SFT adapter and the DPO link of the chain, each request picking its adapter. DPO "
                   "trained on the SFT-merged model, so over the base it is the SFT and DPO adapters stacked "
                   "into one (PEFT `cat`: the same weights as the merged DPO model). Greedy answers to "
                   f"held-out questions, {cfg.max_new_tokens} tokens at most, {cfg.dtype}; tokens/s is each "
                   "adapter's batch of questions.")
    report.metrics({"engine": kind, "engine start seconds": start_s,
                    **{f"{name} adapter load seconds": s for name, s in load_s.items()}})
    report.table([{k: r[k] for k in ("adapter", "question", "answer", "tokens_per_s")} for r in rows],
                 caption="one engine, three models: base, + SFT adapter, + DPO (stacked) adapter")
    rates = {r["adapter"]: r["tokens_per_s"] for r in rows}
    return {"serve_engine": kind, "serve_start_seconds": start_s,
            **{f"serve_{name}_tokens_per_s": rate for name, rate in rates.items()}}


def stage_eval(ctx: TourContext, report: Report) -> dict:
    """The eval suite on the base model and on the SFT adapter: two cards,
    their comparison and the default gate."""
    from labkit.config import EvalConfig
    from labkit.eval.card import compare, comparison_figure, evaluate
    from labkit.eval.gates import DEFAULT_GATE
    from labkit.eval.sandbox import boundary

    cfg = EvalConfig.from_preset(ctx.cfg.preset, model=ctx.cfg.model, output_dir=str(ctx.out_dir / "eval"))
    wall = boundary()
    if not wall.available and "humaneval" in cfg.tasks and not cfg.allow_weak_sandbox:
        # Model-written code runs only inside the OS sandbox: without it the tour leaves HumanEval out
        # rather than stopping (labkit eval --tasks humaneval still refuses and says how to install it).
        print(f"[tour] HumanEval left out: {wall.reason} (apt-get install bubblewrap)", flush=True)
        cfg = cfg.replace(tasks=",".join(t for t in cfg.tasks.split(",") if t.strip() != "humaneval"))
    base = evaluate(None, cfg=cfg)
    base.save(ctx.out_dir / "eval" / "base.json")
    # A card per link of the chain (its merged model): the registry stage gates each on it.
    cards = {}
    for link, model_dir in ctx.chain.items():
        cards[link] = evaluate(None, cfg=cfg.replace(model=str(model_dir)),
                               name=f"{cfg.model} + {link.upper()}")
        cards[link].save(ctx.out_dir / "eval" / f"{link}.json")
    tuned = cards["sft"]
    rows = compare(base, tuned, n_boot=cfg.bootstrap, seed=cfg.seed)
    gate = DEFAULT_GATE.check(tuned, baseline=base, n_boot=cfg.bootstrap, seed=cfg.seed)
    report.section("Evaluation suite",
                   f"Every eval task on the base model and on the SFT adapter, {cfg.limit or 'all'} rows "
                   f"each from the offline items ({cfg.source}). "
                   + ("HumanEval programs ran in labkit's sandbox. " if "humaneval" in cfg.tasks else
                      f"HumanEval was left out: {wall.reason}. ")
                   + "The change per metric carries a paired bootstrap 95% CI; a metric is called a "
                   "regression only when the whole CI is on the worse side of zero.")
    report.figure(base.figure())
    report.table([{k: r[k]
                   for k in ("task", "metric", "base", "new", "delta", "ci_low", "ci_high", "verdict")}
                  for r in rows if r["slice"] == "all"], caption="base → SFT adapter")
    report.figure(comparison_figure(rows, title="SFT adapter − base, with 95% bootstrap CI"))
    heads = {"base": base.headline(), **{link: card.headline() for link, card in cards.items()}}
    report.table([{"metric": k, **{who: h.get(k) for who, h in heads.items()}} for k in heads["base"]],
                 caption="headline metrics along the chain: base → SFT → DPO → GRPO")
    report.text(f"**Default gate: {'passed' if gate.passed else 'failed'}.** " +
                ("; ".join(gate.reasons) if gate.reasons
                 else "No headline metric regressed beyond its allowance."))
    judge = base.meta["info"].get("judge", {})
    report.generations([{k: str(v) for k, v in s.items()} for task in ("gsm8k", "humaneval") for s in
                        tuned.samples.get(task, [])[:2]], caption="SFT adapter: sample outputs")
    return {"eval_seconds": sum(base.meta["seconds"].values()) + sum(tuned.meta["seconds"].values()),
            "gate_passed": gate.passed, "judge_agreement": base.headline().get("judge/agreement"),
            "judge_position_a_rate": judge.get("position_a_rate"),
            **{f"base/{k}": v for k, v in base.headline().items()}}


def stage_registry(ctx: TourContext, report: Report) -> dict:
    """The chain into the registry: each link registered with its eval card and promoted through candidate
    and production, gated against the link before it; the production model's lineage back to the data."""
    from labkit.config import EvalConfig
    from labkit.dash.lineage import lineage_figure
    from labkit.runs.chain import promote_chain
    from labkit.runs.registry import Registry
    from labkit.runs.tracking import default_registry

    db = default_registry(ctx.out_dir / "sft")
    eval_dir = ctx.out_dir / "eval"
    links = [(link, path, eval_dir / f"{link}.json") for link, path in ctx.chain.items()]
    steps = promote_chain(db, links, n_boot=EvalConfig.from_preset(ctx.cfg.preset).bootstrap)
    with Registry(db) as reg:
        holder = reg.holder("production")
        graph = reg.lineage(holder) if holder else None
        history = reg.history("production")
    report.section("Registry: the chain gated and promoted",
                   "Each link of SFT → DPO → GRPO is registered with its eval card, promoted to `candidate` "
                   "(no gate) and then to `production`, where the default gate judges its card against the "
                   "link that holds production now. A blocked link leaves production where it was. "
                   f"Registry and lineage: `{db.name}` beside this report (`labkit lineage --db {db}`).")
    report.table([s.row() for s in steps], caption="promotions, in chain order")
    report.table([{k: h.get(k) for k in ("at", "action", "label")} for h in history],
                 caption="production channel history, newest first")
    if graph is not None:
        report.text(f"**Lineage of `{holder}`**, back to the base model and data:")
        report.figure(lineage_figure(graph, title=f"lineage of {holder}"))
        report.html(f"<pre>{_escape(graph.to_text())}</pre>")
    return {"chain_promoted": [s.name for s in steps if s.promoted], "production": holder}


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def stage_notebooks(ctx: TourContext, report: Report) -> dict:
    """Execute the selected notebooks (cfg.notebooks) headless with papermill, in the notebook preset."""
    from labkit.runs.notebooks import run_notebooks

    books = ctx.notebooks
    runs = run_notebooks(books, out_dir=ctx.out_dir / "notebooks", preset=ctx.cfg.notebook_preset,
                         workers=ctx.cfg.notebook_workers)
    report.section("Notebooks", f"Executed headless with papermill in preset `{ctx.cfg.notebook_preset}`"
                   f"{f', {ctx.cfg.notebook_workers} at a time' if len(books) > 1 else ''}; the executed "
                   "copies sit next to this report. `labkit tour --notebooks all` runs every notebook here, "
                   "and `labkit notebooks` runs them on their own (the nightly job; `make test` runs "
                   "them too).")
    report.table([{"notebook": r.source.name, "ok": r.ok, "seconds": round(r.seconds, 1),
                   "output": str(r.output.relative_to(ctx.out_dir)), "error": r.error[-300:]} for r in runs])
    failed = [r.source.name for r in runs if not r.ok]
    if failed:
        raise TourError(f"notebooks failed: {', '.join(failed)} (see {ctx.out_dir / 'notebooks'})")
    return {"notebooks": len(runs), "notebook_seconds": sum(r.seconds for r in runs)}


STAGES: list[tuple[str, Callable[[TourContext, Report], dict]]] = [
    ("setup", stage_setup),
    ("sft", stage_sft),
    ("reward", stage_reward),
    ("preference", stage_preference),
    ("rl", stage_rl),
    ("inference", stage_inference),
    ("eval", stage_eval),
    ("registry", stage_registry),
    ("notebooks", stage_notebooks),
]


class TourError(RuntimeError):
    """A tour stage failed; the partial report was still written."""


def run_tour(cfg: TourConfig | None = None) -> pathlib.Path:
    """Run every stage in order and write report.html; returns its path (written even if a stage fails)."""
    import os

    # The tour is the offline path: make any accidental hub access fail fast instead of hanging.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = cfg or TourConfig()
    from labkit.runs.notebooks import select_notebooks

    notebooks = select_notebooks(cfg.notebooks)  # a typo in the selection fails now, not after the stages
    out_dir = pathlib.Path(cfg.out_dir).resolve() / f"tour-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = TourContext(cfg, out_dir, notebooks=notebooks)
    report = Report("labkit tour",
                    meta={"preset": cfg.preset, "model": cfg.model, "torch": torch.__version__})
    timings = []
    try:
        for name, stage in STAGES:
            if name == "notebooks" and not notebooks:
                continue
            log.info("tour stage: %s", name)
            print(f"[tour] {name} …", flush=True)
            start = time.perf_counter()
            ctx.results[name] = stage(ctx, report)
            timings.append({"stage": name, "seconds": round(time.perf_counter() - start, 1)})
            print(f"[tour] {name} done in {timings[-1]['seconds']} s", flush=True)
    finally:
        report.section("Timings", "Wall-clock seconds per stage on this machine.")
        report.table(timings)
        path = report.save(out_dir / "report.html")
    return path


def _bar(labels: list[str], values: list[float], title: str):
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h"))
    fig.update_layout(title=title, height=max(300, 22 * len(labels)),
                      margin={"l": 260, "r": 20, "t": 40, "b": 30})
    return fig
