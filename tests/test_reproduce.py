"""``latro reproduce`` (papermill over the notebooks, done markers, summary) and the profile table,
with tiny stand-in notebooks in a temporary folder (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from latro_core.experiments import profiles
from latro_core.cli import build_parser, main
from latro_core.errors import ConfigError, LatroError
from latro_core.provenance import cli_flags, config_from_args
from latro_core.experiments.reproduce import ReproduceConfig, ReproduceError, reproduce, select_notebooks
from latro_core.experiments.runs import launch_command, run_report, selection_markdown

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path, body: str):
    """A notebook with a papermill parameters cell (profile) and one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "demo"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_tiny.ipynb", "from pathlib import Path\n"
              "(Path('..') / 'figures').mkdir(exist_ok=True)\n"
              "(Path('..') / 'figures' / f'01_tiny_{profile}.png').write_text(profile)\n"
              "print('profile is', profile)")
    _notebook(nbs / "02_other.ipynb", "x = 1")
    return tmp_path


def _cfg(project, **kw):
    return ReproduceConfig(**{"profile": "smoke", "out": str(project / "out"),
                              "notebook_dir": str(project / "notebooks"), **kw})


@pytest.mark.slow
def test_runs_writes_marker_and_skips_second_time(project, capsys):
    s = reproduce(_cfg(project, notebooks="01_tiny"))
    executed = project / "out" / "smoke" / "01_tiny.ipynb"
    marker = project / "out" / "smoke" / "01_tiny.done"
    assert executed.exists() and marker.exists()
    done = json.loads(marker.read_text())
    assert done["profile"] == "smoke" and done["wall_s"] >= 0 and done["source_sha256"]
    assert [r["status"] for r in s["notebooks"]] == ["ran"]
    assert "figures/01_tiny_smoke.png" in s["files"]
    assert (project / "figures" / "01_tiny_smoke.png").read_text() == "smoke"   # the profile was injected
    out = json.loads(executed.read_text())
    assert any("profile is smoke" in "".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))
    assert "01_tiny" in capsys.readouterr().out                            # the summary table

    mtime = executed.stat().st_mtime_ns
    s2 = reproduce(_cfg(project, notebooks="01_tiny"))
    assert [r["status"] for r in s2["notebooks"]] == ["skipped"]
    assert executed.stat().st_mtime_ns == mtime
    assert s2["files"] == []

    s3 = reproduce(_cfg(project, notebooks="01", force=True))                # prefix; force reruns
    assert [r["status"] for r in s3["notebooks"]] == ["ran"]


@pytest.mark.slow
def test_all_notebooks_in_order_and_source_change_reruns(project):
    s = reproduce(_cfg(project))
    assert [r["notebook"] for r in s["notebooks"]] == ["01_tiny", "02_other"]
    _notebook(project / "notebooks" / "02_other.ipynb", "x = 2")
    s = reproduce(_cfg(project))
    assert [r["status"] for r in s["notebooks"]] == ["skipped", "ran"]


@pytest.mark.slow
def test_profile_settings_change_reruns(project, monkeypatch):
    """A notebook the profile table knows reruns when its settings change, not otherwise."""
    _notebook(project / "notebooks" / "01_tiny.ipynb", "x = 1")
    monkeypatch.setitem(profiles._SETTINGS, "01_tiny", {p: {"n": 1} for p in profiles.PROFILES})
    assert [r["status"] for r in reproduce(_cfg(project, notebooks="01"))["notebooks"]] == ["ran"]
    assert [r["status"] for r in reproduce(_cfg(project, notebooks="01"))["notebooks"]] == ["skipped"]
    monkeypatch.setitem(profiles._SETTINGS, "01_tiny", {p: {"n": 2} for p in profiles.PROFILES})
    assert [r["status"] for r in reproduce(_cfg(project, notebooks="01"))["notebooks"]] == ["ran"]


@pytest.mark.slow
def test_failure_names_notebook_and_stops(project):
    _notebook(project / "notebooks" / "01_tiny.ipynb", "raise ValueError('boom')")
    with pytest.raises(ReproduceError, match=r"01_tiny.*boom.*01_tiny\.ipynb") as e:
        reproduce(_cfg(project))
    assert "out/smoke/01_tiny.ipynb" in str(e.value)
    assert not (project / "out" / "smoke" / "01_tiny.done").exists()
    assert not (project / "out" / "smoke" / "02_other.ipynb").exists()      # stopped at the failure


def test_config_errors(project, monkeypatch):
    with pytest.raises(ConfigError, match="unknown profile"):
        reproduce(_cfg(project, profile="fast"))
    with pytest.raises(ConfigError, match="not found"):
        reproduce(_cfg(project, notebooks="07_missing"))
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="GPU"):
        reproduce(_cfg(project, profile="paper"))
    with pytest.raises(ConfigError, match="gpu profile trains Qwen.*gpu-smoke"):
        reproduce(_cfg(project, profile="gpu"))
    assert main(["reproduce", "--profile", "paper", "--notebook-dir", str(project / "notebooks"),
                 "--out", str(project / "out")]) == 2


def test_a_profiles_smoke_form_cuts_every_size_and_keeps_model_task_and_method_settings():
    gpu, small = profiles.settings("04_train_latro", "gpu"), profiles.settings("04_train_latro", "gpu-smoke")
    smoke = profiles.settings("04_train_latro", "smoke")
    assert small["models"] == gpu["models"] == [profiles.GPU_MODEL]
    for method in ("latro", "sft", "rft"):
        assert small[method]["lora"] is True and small[method]["task"] == "gsm8k" and small[method]["lr"] == gpu[method]["lr"]
        for size in ("steps", "questions_per_step", "max_new_tokens", "micro_batch"):
            assert small[method][size] == smoke[method][size], (method, size)
        assert small[method]["eval_every"] == 0          # switched off in gpu: stays off
    assert small["eval"]["limit"] == smoke["eval"]["limit"] and small["eval"]["task"] == "gsm8k"
    assert small["maj_methods"] == gpu["maj_methods"] and small["run"]["parallel"] == 1
    with pytest.raises(ConfigError, match="-smoke"):
        profiles.settings("04_train_latro", "fast-smoke")


def test_notebook_settings_apply_overrides_and_refuse_a_misspelt_one():
    s = profiles.notebook_settings("01_variational_bound", "smoke", {"n_votes": 7})
    assert s["n_votes"] == 7 and s["ks"] == profiles.settings("01_variational_bound", "smoke")["ks"]
    with pytest.raises(ConfigError, match=r"\['n_vote'\] are not settings of 01_variational_bound; it has: seed, n_votes"):
        profiles.notebook_settings("01_variational_bound", "smoke", {"n_vote": 7})
    with pytest.raises(ConfigError, match="stepz"):        # nested entries are still checked against TrainConfig
        profiles.notebook_settings("04_train_latro", "smoke", {"latro": {"stepz": 1}})


def test_cli_fills_config():
    ns = build_parser().parse_args(["reproduce", "--profile", "smoke", "--notebooks", "04_train_latro", "--force"])
    cfg = config_from_args(ReproduceConfig, ns)
    assert (cfg.profile, cfg.notebooks, cfg.force, cfg.kernel) == ("smoke", "04_train_latro", True, None)


def test_select_notebooks(project):
    nbs = project / "notebooks"
    assert [p.stem for p in select_notebooks(nbs, "02_other, 01_tiny.ipynb")] == ["01_tiny", "02_other"]
    with pytest.raises(ConfigError, match="ambiguous"):
        select_notebooks(nbs, "0")


# ----------------------------------------------------------------------------- profiles

def test_profiles_cover_every_notebook():
    for p in profiles.PROFILES:
        for nb in profiles.NOTEBOOKS:
            s = profiles.settings(nb, p)
            assert s["profile"] == p and s["notebook"] == nb
    assert profiles.settings("notebooks/04_train_latro.ipynb", "smoke")["notebook"] == "04_train_latro"
    with pytest.raises(ConfigError, match="unknown profile"):
        profiles.settings("04_train_latro", "full")
    with pytest.raises(ConfigError, match="no settings"):
        profiles.settings("99_nothing", "smoke")


def test_settings_are_copies():
    s = profiles.settings("04_train_latro", "demo")
    s["latro"]["steps"] = -1
    assert profiles.settings("04_train_latro", "demo")["latro"]["steps"] > 0


def test_training_settings_are_valid_configs():
    from latro_core.evaluate import EvalConfig
    from latro_core.train_config import TrainConfig

    for p in profiles.PROFILES:
        for nb in ("04_train_latro", "05_arc_challenge", "06_ablations"):
            s = profiles.settings(nb, p)
            for method in ("sft", "latro"):
                if method in s and s[method].get("steps", 1):
                    TrainConfig(method=method, **s[method]).validate()
            EvalConfig(**{**s["eval"], "max_new_tokens": 8}).validate()
    demo = profiles.settings("04_train_latro", "demo")
    assert len(demo["seeds"]) >= 3


def test_paper_profile_numbers():
    s = profiles.settings("04_train_latro", "paper")
    assert s["models"] == list(profiles.PAPER_MODELS)
    lat = s["latro"]
    assert (lat["k"], lat["max_new_tokens"], lat["temperature"], lat["lr"], lat["beta"]) == (16, 500, 1.0, 5e-7, 0.05)
    assert lat["steps"] == 6 * -(-7473 // profiles.PAPER_BATCH)
    arc = profiles.settings("05_arc_challenge", "paper")["latro"]
    assert arc["beta"] == 0.25 and arc["steps"] == 12 * -(-1119 // profiles.PAPER_BATCH)


def test_launch_command_parses_with_the_cli():
    from latro_core.train_config import TrainConfig

    s = profiles.settings("04_train_latro", "paper")
    cfg = TrainConfig(method="latro", model=s["models"][0], out_dir="runs/paper/x", **s["latro"])
    cmd = launch_command(cfg)
    assert cmd[:4] == ["accelerate", "launch", "--config_file", profiles.ACCELERATE_CONFIG]
    i = cmd.index("latro_core.cli")
    ns = build_parser().parse_args(cmd[i + 1:])
    back = config_from_args(TrainConfig, ns, method="latro")
    assert back == cfg
    assert "--method" not in cli_flags(TrainConfig(method="sft"), skip=("method",))


def test_run_report_and_selection_table(tmp_path):
    run = tmp_path / "latro-seed0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "latro", "seed": 0, "steps": 4,
                                                 "eval_split": "validation", "max_new_tokens": 16}))
    rows = [{"step": 2, "eval_accuracy": 0.5, "test_accuracy": 0.4},
            {"step": 4, "eval_accuracy": 0.25, "test_accuracy": 0.6}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "best.json").write_text(json.dumps({"step": 2, "eval_split": "validation", "eval_accuracy": 0.5}))
    (run / "best").mkdir()
    r = run_report(run)
    assert r["model"] == str(run / "best") and r["best_step"] == 2 and r["best_eval"] == 0.5
    assert r["paper_rule"] == {"step": 4, "test_accuracy": 0.6}
    md = selection_markdown({"latro seed 0": r})
    assert "| latro seed 0 | validation accuracy | 2 | 50.0 | 40.0 | 60.0 (4) |" in md


# ----------------------------------------------------------------------------- model selection

def _tiny_run(tmp_path, monkeypatch, smol_tokenizer, val, test, **kw):
    """train_run on a tiny random model for len(val) steps, with scripted greedy accuracies."""
    import latro_core.answers as ev
    from latro_core.models import prepare_tokenizer, tiny_model
    from latro_core.experiments.runs import train_run
    from latro_core.train_config import TrainConfig

    calls = {"validation": iter(val), "test": iter(test)}
    monkeypatch.setattr(ev, "greedy_report", lambda model, tok, task, **_: {"accuracy": next(calls[task.split]), "n": 2})
    tok = prepare_tokenizer(smol_tokenizer)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=len(val), k=2, questions_per_step=2, max_new_tokens=4,
                      micro_batch=4, eval_every=1, eval_limit=2, device="cpu", progress=False, **kw)
    return train_run(cfg, model=tiny_model(tok)[0], tokenizer=tok, test_limit=2, keep_resume_state=False)


def test_train_run_keeps_the_best_checkpoint_by_validation(tmp_path, monkeypatch, smol_tokenizer):
    from safetensors.torch import load_file

    r = _tiny_run(tmp_path, monkeypatch, smol_tokenizer, val=[0.2, 0.6, 0.6, 0.4], test=[0.1, 0.3, 0.2, 0.5])
    run = tmp_path / "run"
    assert r["best_step"] == 2 and r["best_eval"] == 0.6                     # ties keep the earlier step
    assert r["model"] == str(run / "best") and r["selected_by"] == "validation accuracy"
    assert r["paper_rule"] == {"step": 4, "test_accuracy": 0.5}
    assert json.loads((run / "best.json").read_text())["step"] == 2
    assert not (run / "checkpoint").exists()                                 # keep_resume_state=False
    best, final = (load_file(str(next((run / d).glob("*.safetensors")))) for d in ("best", "final"))
    assert best.keys() == final.keys() and any(not (best[k] == final[k]).all() for k in best)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_accuracy"] for m in lines] == [0.1, 0.3, 0.2, 0.5]


def test_train_run_best_at_the_end_points_to_final(tmp_path, monkeypatch, smol_tokenizer):
    r = _tiny_run(tmp_path, monkeypatch, smol_tokenizer, val=[0.1, 0.5], test=[0.0, 0.0], method="sft")
    assert r["best_step"] == 2 and r["model"] == str(tmp_path / "run" / "final")
    assert not (tmp_path / "run" / "best").exists()


@pytest.mark.slow
def test_train_runs_trains_child_processes_two_at_a_time_and_keeps_the_best(tmp_path, smol_tokenizer):
    from latro_core.models import prepare_tokenizer, tiny_model
    from latro_core.experiments.runs import train_runs
    from latro_core.train_config import TrainConfig

    tok = prepare_tokenizer(smol_tokenizer)
    model, _ = tiny_model(tok)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    cfgs = [TrainConfig(model=str(tmp_path / "tiny"), out_dir=str(tmp_path / "runs" / f"s{seed}"), seed=seed, steps=2,
                        k=2, questions_per_step=2, max_new_tokens=4, micro_batch=4, eval_every=1, eval_limit=2,
                        task_kwargs={"n": 8}, device="cpu") for seed in (0, 1)]
    reports = train_runs(cfgs, parallel=2, cwd=ROOT, keep_resume_state=False)
    for cfg, rep in zip(cfgs, reports):
        out = Path(cfg.out_dir)
        assert (out / "final").exists() and (out / "best.json").exists() and not (out / "checkpoint").exists()
        assert rep["seed"] == cfg.seed and [h[0] for h in rep["history"]] == [1, 2]
        assert Path(f"{cfg.out_dir}.log").exists()
    bad = [TrainConfig(model=str(tmp_path / "no-such-model"), out_dir=str(tmp_path / "runs" / "bad"), steps=1)]
    with pytest.raises(LatroError, match=r"training failed: .*bad \(exit 2, see .*bad.log\)"):
        train_runs(bad, cwd=ROOT)


@pytest.mark.slow
def test_evaluate_all_in_child_processes_gives_what_evaluating_here_gives(tmp_path, smol_tokenizer):
    from latro_core.evaluate import EvalConfig
    from latro_core.models import prepare_tokenizer, tiny_model
    from latro_core.experiments.runs import evaluate_all

    tok = prepare_tokenizer(smol_tokenizer)
    model, _ = tiny_model(tok)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    cfgs = {where: [EvalConfig(model=str(tmp_path / "tiny"), limit=3, max_new_tokens=4, k=k, auroc=False,
                               device="cpu", task_kwargs={"n": 8}, out=str(tmp_path / where / f"k{k}"))
                    for k in (0, 2)] for where in ("here", "children")}
    here = evaluate_all(cfgs["here"], parallel=1)
    children = evaluate_all(cfgs["children"], parallel=2, cwd=ROOT)
    for h, c, cfg in zip(here, children, cfgs["children"]):
        assert c["out"] == cfg.out and Path(f"{cfg.out}.log").exists()
        assert c["greedy"] == h["greedy"] and c.get("maj_at_k") == h.get("maj_at_k")
        assert (Path(cfg.out) / "predictions.jsonl").read_text() == (Path(h["out"]) / "predictions.jsonl").read_text()
    with pytest.raises(LatroError, match=r"evaluation failed: .*bad \(exit 2, see .*bad.log\)"):
        evaluate_all([EvalConfig(model=str(tmp_path / "no-such-model"), out=str(tmp_path / "bad"))] * 2,
                     parallel=2, cwd=ROOT)


def test_save_outputs_puts_the_run_outputs_into_the_notebook_without_papermills_cell(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from latro_core.experiments.reproduce import ReproduceError, save_outputs

    src = new_notebook(cells=[new_markdown_cell("# title"),
                              new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
                              new_code_cell("print(profile)")])
    nbformat.write(src, tmp_path / "nb.ipynb")
    ran = nbformat.from_dict(json.loads(json.dumps(src)))
    ran.cells.insert(2, new_code_cell('profile = "demo"', metadata={"tags": ["injected-parameters"]}))
    ran.cells[3].outputs = [new_output("stream", name="stdout", text="demo\n")]
    ran.cells[3].execution_count = 3
    nbformat.write(ran, tmp_path / "ran.ipynb")
    save_outputs(tmp_path / "ran.ipynb", tmp_path / "nb.ipynb", {"outputs": "latro reproduce --profile demo"})
    nb = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == ["# title", 'profile = "smoke"', "print(profile)"]
    assert nb.cells[2].outputs[0].text == "demo\n" and nb.cells[2].execution_count == 3
    assert nb.metadata["latro"] == {"outputs": "latro reproduce --profile demo"}
    ran.cells[3].source = "print(profile, 1)"                    # the notebook changed while it ran
    nbformat.write(ran, tmp_path / "ran.ipynb")
    with pytest.raises(ReproduceError, match="changed while it ran"):
        save_outputs(tmp_path / "ran.ipynb", tmp_path / "nb.ipynb", {})


def test_every_profile_setting_names_fields_of_its_config_and_a_typo_fails_at_once():
    from latro_core.errors import ConfigError as CE
    from latro_core.experiments.profiles import PROFILES, check_settings, table

    for profile in PROFILES:
        assert table(profile)                      # settings() checks each notebook's entries
    with pytest.raises(CE, match=r"latro=\{learning_rate: \.\.\.\} is not among the fields of TrainConfig"):
        check_settings({"latro": {"steps": 2, "learning_rate": 1e-5}})
    with pytest.raises(CE, match=r"run=\{paralel: \.\.\.\}"):
        check_settings({"run": {"paralel": 2}})


def test_committed_outputs_drop_progress_bars_of_any_unit_and_keep_other_stderr():
    """tqdm bars in steps, batches or iterations, and its IProgress warning, are dropped; a warning
    that is not a bar, and stdout, are kept, with this machine's repository path made relative."""
    from nbformat.v4 import new_output

    from latro_core.experiments.reproduce import clean_outputs
    from latro_core.provenance import REPO_ROOT as ROOT

    bars = ["\rlatro arithmetic:  25%|██▌       | 3/12 [00:41<02:01, 13.53s/step, reward_mean=-39]",
            "\rgenerate arithmetic (k=1, T=0.0): 100%|██████████| 1/1 [00:05<00:00,  5.63s/batch]",
            "\rscore:  50%|█████     | 5/10 [00:01<00:01,  4.20it/s]",
            "TqdmWarning: IProgress not found. Please update jupyter and ipywidgets."]
    kept = ["UserWarning: 3/4 of the rows were cut at L\n"]
    outs = [new_output("stream", name="stderr", text=t) for t in bars + kept]
    outs.append(new_output("stream", name="stdout", text=f"wrote {ROOT}/results/table.md\n"))
    cleaned = clean_outputs(outs)
    assert [o["text"] for o in cleaned] == kept + ["wrote results/table.md\n"]
