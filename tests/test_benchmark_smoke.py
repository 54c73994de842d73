"""The latro_update benchmark's two code paths (latro_core's update and the released trainer's
pattern) on a tiny random model: one update each on the same batch must give the same loss; and the
decode breakdown's timers reach every part without changing a sampled token."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from latro_core.models import tiny_model

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(file: str = "latro_update"):
    name = f"{file}_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _BENCHMARKS / f"{file}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod          # dataclasses look their module up while the file runs
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threading only adds overhead, and on a shared 2-core machine two
    threads ran this test 5x slower than one. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("lora", [False, True])
def test_fast_and_literal_update_agree(smol_tokenizer, lora, one_thread):
    bench = _bench()
    tok = smol_tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    hp = bench.Hyper(k=2, L=8, lr=1e-3)
    prompts, answers = bench.questions(1, tok)
    fast = bench.build_way("fast", tiny_model(tok, seed=0)[0], tok, hp, lora=lora)
    # gc.collect() after every pass is the literal way's only deliberate waste that costs seconds
    # on a tiny model; it changes no number, so the test skips it
    literal = bench.build_way("literal", tiny_model(tok, seed=0)[0], tok, hp, lora=lora, collect=False)
    res = bench.run_pair(fast, literal, prompts, answers, seed=0)       # asserts the losses agree
    f, l = res["fast"], res["literal"]
    # TOL, not the benchmark's LITERAL_TOL: the tiny model's logits have std ~0.16 (near-uniform), where log_softmax
    # loses ~nothing (LOG_SOFTMAX_NOTE); measured |Δloss| = 0 on a loss and scale of ~86 (allowed 8.6e-4)
    assert bench.losses_agree(f["loss"], l["loss"], max(f["loss_scale"], l["loss_scale"]))
    # per-sample log-probs ~ -86 (ulp 7.6e-6, i.e. 9e-8 relative), left- vs right-padded and another head: measured
    # 1.8e-7 (2 ulps), ~50x inside; scoring one token more or less is off by ~0.1 relative
    assert bench.logprobs_rel_diff(f, l) < 1e-5
    assert torch.isfinite(torch.tensor([f["loss"], l["loss"]])).all()
    assert f["grad_norm"] == pytest.approx(l["grad_norm"], rel=1e-4)   # same gradients, another order: measured 1e-7
    assert (f["forwards"], l["forwards"]) == (2, 5)
    if not lora:
        # a second update after one optimizer step each still agrees (both took the same step); AdamW's first step
        # is ~lr·sign(g), so weights differ only where g is at rounding level, which moves the loss to second
        # order: measured |Δloss| = 0 (allowed 8.4e-4 of a loss ~84)
        res2 = bench.run_pair(fast, literal, prompts, answers, seed=1)
        assert bench.losses_agree(res2["fast"]["loss"], res2["literal"]["loss"], res2["fast"]["loss_scale"])


def test_loss_check_catches_a_difference():
    bench = _bench()
    assert bench.losses_agree(-12.3456789, -12.3456790)
    assert not bench.losses_agree(-12.3456, -12.3466)       # 1e-3 apart: 8x over 1e-5·12.35; 1e-7 above agrees
    # judged against the scale of the terms the loss sums: 1e-5 of 2000 is 0.02
    assert bench.losses_agree(30.6773, 30.6765, scale=2000.0)
    assert not bench.losses_agree(30.6773, 30.7173, scale=2000.0)


def test_forward_flops_match_torch_flop_counter(smol_tokenizer, one_thread):
    """The benchmark's model-FLOP formula (its MFU and floor) against torch's own count of a forward:
    the matmuls are 2·P_body per token + 2·P_head per projected position; eager attention computes
    the full T x T scores, of which the formula counts the causal part, T(T+1)/2 of T²."""
    from torch.utils.flop_counter import FlopCounterMode

    bench = _bench()
    model = tiny_model(smol_tokenizer, seed=0)[0].eval()
    model.config._attn_implementation = "eager"          # attention as plain (countable) matmuls
    shape = bench._model_shape(model)
    T = 7
    ids = torch.randint(0, 1000, (2, T))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(input_ids=ids)                              # logits on every position
    counts = {str(op).split(".")[-2 if str(op).endswith("default") else -1]: n
              for op, n in fc.get_flop_counts()["Global"].items()}
    linear = counts.get("mm", 0) + counts.get("addmm", 0)
    attention = sum(counts.values()) - linear
    no_attention = {**shape, "layers": 0}
    assert linear == bench.forward_flops(no_attention, [T, T], scored=2 * T)
    causal = bench.forward_flops(shape, [T, T], 2 * T) - bench.forward_flops(no_attention, [T, T], 2 * T)
    # integer FLOP counts; approx's default rel 1e-6 only absorbs the float division by 2T
    assert attention > 0 and causal == pytest.approx(attention * (T + 1) / (2 * T))


def test_shared_prompt_forward_runs_each_prompt_once(smol_tokenizer, one_thread):
    """latro_core's scoring forward with two questions x 3 samples: torch's count of its matmuls
    equals the formula with each question's prompt run once (``shared``), and is smaller than the
    unshared count by exactly the 4 repeated prompts."""
    from torch.utils.flop_counter import FlopCounterMode

    from latro_core.logprobs import pack, sequence_logprobs

    bench = _bench()
    model = tiny_model(smol_tokenizer, seed=0)[0].eval()
    no_attention = {**bench._model_shape(model), "layers": 0}
    g = torch.Generator().manual_seed(0)
    # equal lengths, so that neither pass pads (the formula counts real tokens only)
    xs = [x for x in (torch.randint(5, 1000, (6,), generator=g).tolist() for _ in range(2)) for _ in range(3)]
    zs = [torch.randint(5, 1000, (4,), generator=g).tolist() for _ in range(6)]
    batch = pack(xs, zs, [[7, 2]] * 6, pad_id=2)
    lens, scored = batch.attention_mask.sum(1).tolist(), int((batch.z_mask | batch.y_mask).sum())

    def linear_flops(share):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            sequence_logprobs(model, batch, share_prompt=share)
        return sum(n for op, n in fc.get_flop_counts()["Global"].items() if str(op).split(".")[1] in ("mm", "addmm"))

    assert linear_flops(False) == bench.forward_flops(no_attention, lens, scored)
    assert linear_flops(True) == bench.forward_flops(no_attention, lens, scored, shared=[6] * 4)
    assert linear_flops(True) < linear_flops(False)


def test_decode_breakdown_times_every_part_and_changes_no_sampled_token(smol_tokenizer, one_thread):
    """Two prompts x K = 2 for 6 tokens on a tiny model: every timed part is reached (each > 0),
    the forward holds more than its timed linears and attention, the instrumented run samples what
    the plain one does (``breakdown`` checks it), and nothing stays patched afterwards."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from latro_core import rollout

    bench, sample_next = _bench("decode_breakdown"), rollout._sample_next
    model = tiny_model(smol_tokenizer, seed=0)[0].eval()
    runs, plain = bench.breakdown(model, smol_tokenizer, ["What is 2 + 3?", "Tom has 5 apples and eats 2."],
                                  k=2, L=6, repeats=1)
    parts = runs[0]["parts_s"]
    assert set(parts) == set(bench.PARTS) and len(plain) == 1
    assert all(parts[p] > 0 for p in bench.PARTS if p != "rest of loop")
    assert sum(parts.values()) == pytest.approx(runs[0]["step_s"])
    assert not any("forward" in vars(m) for m in model.modules())          # packing and timers undone
    assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping and rollout._sample_next is sample_next
    assert "decode" not in vars(smol_tokenizer)


def test_the_generation_benchmarks_baseline_revision_imports_with_every_relative_import_rewritten():
    """``generation.py --baseline-rev REV`` imports rollout.py as of REV outside the package; a relative
    import left unrewritten (rollout imports ``.cpu_kernels`` and ``.tasks``) fails there."""
    mod = _bench("generation").rollout_module_at("HEAD")
    src = Path(mod.__file__).read_text()
    assert "from ." not in src and "from latro_core.cpu_kernels import" in src
    assert callable(mod.sample_rationales)


def _vs_trl_settings(bench):
    return bench.Settings(k=2, questions=1, L=8, warmup=1, updates=1)


def test_vs_trl_latro_side_times_each_update_and_gives_trl_latros_questions_and_checker(tok, tmp_path, one_thread):
    """benchmarks/vs_trl.py without TRL: latro's side (the Trainer, ``--reward verifier``) on a tiny
    model saved as a folder, two updates each timed with its tokens and peak RSS; TRL's dataset holds
    latro's questions in latro's order; TRL's reward function is latro's checker; the report renders."""
    from latro_core.models import save_model
    from latro_core.tasks import load_task
    from latro_core.trainer import question_indices

    bench = _bench("vs_trl")
    s = _vs_trl_settings(bench)
    save_model(tiny_model(tok, seed=0)[0], tok, tmp_path / "model")
    res = bench.run_latro(str(tmp_path / "model"), s)
    ups = res["updates"]
    assert [u["timed"] for u in ups] == [False, True] and res["threads"] == 1
    assert all(u["wall_s"] > 0 and u["cpu_s"] > 0 and u["peak_mb"] > 0 and 0 < u["gen_tokens"] <= s.k * s.L
               and 0 < u["decode_steps"] <= s.L for u in ups)
    assert ups[-1]["sample_s"] + ups[-1]["score_loss_backward_s"] <= ups[-1]["wall_s"]
    task = load_task("arithmetic", "train")
    rows = bench.prompt_rows(task, tok, s)
    assert [r["qi"] for r in rows] == [i for step in range(s.steps) for i in question_indices(step, len(task), 1, 0)]
    assert rows[0]["prompt"] == task.prompt(task[rows[0]["qi"]], tok)
    ex = task[rows[0]["qi"]]
    reward = bench.checker_reward(task)
    right, wrong = f"So {task.answer_sentence(ex.answer)}", "The answer is -12345."
    assert reward(None, [right, wrong], [rows[0]["qi"]] * 2) == [1.0, 0.0]
    res["round"] = 0
    report = bench.to_markdown({"command": "python benchmarks/vs_trl.py", "commit": "abc", "runs": [res],
                                "machine": {"cpu": "x", "cpus": 2}, "summary": bench.summarize([res]),
                                "settings": {**vars(s), "latro_command": "latro train"}})
    assert "| latro (`--reward verifier`) |" in report and "TRL RLOOTrainer |" not in report


def test_vs_trl_trl_side_runs_at_the_same_settings(tok, tmp_path, one_thread):
    """TRL's side, only where trl is installed (its own venv; never latro's): two RLOOTrainer updates on
    the tiny model, the same prompt tokens and EOS ids as latro's sampler (asserted inside), fp32, no
    activation checkpointing, fused AdamW."""
    pytest.importorskip("trl")
    from latro_core.models import save_model

    bench = _bench("vs_trl")
    s = _vs_trl_settings(bench)
    save_model(tiny_model(tok, seed=0)[0], tok, tmp_path / "model")
    res = bench.run_trl(str(tmp_path / "model"), s)
    assert [u["timed"] for u in res["updates"]] == [False, True]
    assert all(u["gen_tokens"] > 0 and u["wall_s"] > u["sample_s"] > 0 for u in res["updates"])
    assert res["checks"]["fused"] and res["checks"]["ref_model"] != "NoneType"


def test_decode_step_benchmark_times_the_step_and_each_linear_shape_and_renders_its_report(smol_tokenizer, tmp_path,
                                                                                           one_thread):
    """benchmarks/decode_step.py's parts on a tiny model: one decode of 4 steps after a prefill (each
    step timed), the model's linear shapes fused as the decoder fuses them, each shape timed with
    both kernels, and the report written from them."""
    bench = _bench("decode_step")
    model = tiny_model(smol_tokenizer, seed=0)[0].eval()
    times, mean_cache = bench.step_times(model, smol_tokenizer, questions=1, k=2, L=5)
    assert len(times) == 4 and all(t > 0 for t in times) and mean_cache > 2
    shapes = bench.linear_shapes(model)
    cfg = model.config
    assert shapes["gate/up (fused)"] == (2 * cfg.intermediate_size, cfg.hidden_size, cfg.num_hidden_layers)
    assert shapes["vocabulary"][2] == 1
    timed = bench.time_shape(*shapes["o"][:2], rows=2, calls=3)
    assert timed["onednn_s"] > 0 and timed["mkl_s"] > 0 and timed["bytes"] == 4 * shapes["o"][0] * shapes["o"][1]
    out = {"command": "x", "git_commit": "y", "machine": {"cpu": "c", "cpus": 2, "torch": "t", "torch_threads": 1},
           "peaks": {"stream_bytes_per_s": 1e10, "matmul_flops": 1e11},
           "settings": {"questions": 1, "k": 2, "rows": 2, "L": 5, "repeats": 1, "calls": 3, "mean_cache_tokens": 4},
           "step_s": 0.01, "steps_timed": 4, "linears_s": {"onednn": 0.005, "mkl": 0.006}, "memory_floor_s": 0.002,
           "compute_floor_s": 0.001, "weight_bytes": 1e6, "kv_bytes": 1e3, "flops": 1e8,
           "shapes": {"o": {"out": 8, "in": 8, "count": 1, **timed}}}
    bench.write(out, tmp_path / "decode_step")
    report = (tmp_path / "decode_step.md").read_text()
    assert "| **the step** | **10.0** | 1.00 |" in report and "| o | 8 x 8 | 1 |" in report
