"""Tests for latro_core.results (tables from hand-made summary.json files) and latro_core.plots."""

import csv
import re
import json
import statistics
from pathlib import Path

import pytest

from latro_core.errors import ConfigError
from latro_core.evaluate import SUMMARY_KIND
from latro_core.stats import wilson_interval
from latro_core.results import TablesConfig, build_tables, cell_stats, format_cell


def _acc(c, n):
    return {"accuracy": c / n, "correct": c, "n": n, "ci95": list(wilson_interval(c, n))}


def write_summary(root, name, *, label="SmolLM2-135M-Instruct", method="base", task="gsm8k", split="test",
                  train_seed=None, seed=0, greedy=(50, 100), maj8=None, created="2025-01-01T00:00:00"):
    """A summary.json shaped like run_evaluation's (only the fields tables read, plus a few)."""
    s = {"kind": SUMMARY_KIND, "name": name, "model_label": label, "method": method, "task": task,
         "split": split, "train_seed": train_seed, "seed": seed, "n": greedy[1], "greedy": _acc(*greedy),
         "k": 8 if maj8 else 0, "created": created}
    if maj8:
        s["maj_at_k"] = {"1": _acc(*greedy), "8": _acc(*maj8)}
    path = root / "eval" / name / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(s))
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_summary(root, "base-gsm8k", greedy=(50, 100), maj8=(60, 100))
    for i, c in enumerate([40, 50, 60]):
        write_summary(root, f"latro-s{i}-gsm8k", method="latro", train_seed=i, greedy=(c, 100), maj8=(c + 10, 100))
    # the same seed evaluated twice: only the newer one counts
    write_summary(root, "latro-s0-gsm8k-old", method="latro", train_seed=0, greedy=(0, 100), maj8=(0, 100),
                  created="2024-01-01T00:00:00")
    write_summary(root, "base-arc", task="arc_challenge", greedy=(30, 40))           # no maj@8 run
    write_summary(root, "base-gsm8k-val", split="validation", greedy=(1, 2))         # other split: ignored
    (root / "train" / "x").mkdir(parents=True)
    (root / "train" / "x" / "summary.json").write_text(json.dumps({"foo": 1}))      # not an evaluation
    return root


def test_cell_stats():
    one = cell_stats([(50, 100)])
    assert one["mean"] == 0.5 and one["ci95"] == list(wilson_interval(50, 100))
    assert one["seed_std"] is None and one["seeds"] == 1 and one["n"] == [100]
    three = cell_stats([(40, 100), (50, 100), (60, 100)])
    assert three["mean"] == pytest.approx(0.5) and three["seed_std"] == pytest.approx(0.1)
    assert three["ci95"] == list(wilson_interval(150, 300)) and three["seeds"] == 3
    assert (three["correct"], three["total"]) == (150, 300)
    assert format_cell(one) == "50.0 [40.4, 59.6] (n=100)"
    assert three["ci"] == "pooled wilson"                            # no per-question records given
    assert format_cell(three).startswith("50.0 ± 10.0 sd [44.4, 55.6] pooled (n=100 × 3 seeds)")
    assert format_cell(None) == "–"


def test_seeds_on_the_same_questions_are_resampled_as_seeds_then_questions_not_as_independent_trials():
    from latro_core.stats import SEEDS_AND_QUESTIONS, seed_question_interval

    same = {f"q{i}": i < 50 for i in range(100)}                    # 3 seeds answering identically
    lo, hi, n_q = seed_question_interval([same, same, same])
    assert n_q == 100
    wilson_one = wilson_interval(50, 100)
    pooled = wilson_interval(150, 300)
    # identical seeds add no information: the interval is as wide as one seed's, not 1/sqrt(3) of it
    assert (hi - lo) == pytest.approx(wilson_one[1] - wilson_one[0], rel=0.15)
    assert (hi - lo) > 1.4 * (pooled[1] - pooled[0])
    # seeds that differ (30% / 50% / 70% right) widen it: which models were trained varies too
    spread = [{f"q{i}": i < c for i in range(100)} for c in (30, 50, 70)]
    lo2, hi2, _ = seed_question_interval(spread)
    assert hi2 - lo2 > 1.5 * (hi - lo) and lo2 < 0.4 and hi2 > 0.6
    cell = cell_stats([(50, 100)] * 3, [same, same, same])
    assert cell["ci"] == SEEDS_AND_QUESTIONS and cell["ci95"] == [lo, hi]


def test_a_paired_difference_resamples_each_sides_seeds_and_the_shared_questions():
    from latro_core.stats import paired_difference

    a = [{f"q{i}": i < 60 for i in range(100)}, {f"q{i}": i < 40 for i in range(100)}]   # seeds: 60%, 40%
    b = [{f"q{i}": i < 30 for i in range(100)}]
    d = paired_difference(a, b)
    assert d["n"] == 100 and d["mean"] == pytest.approx(0.20) and d["seeds"] == [2, 1]
    assert d["ci"] == "bootstrap over seeds and questions"
    # A's seed draws alone move the difference between +0.10 (both seeds 40%) and +0.30 (both 60%)
    assert d["ci95"][0] <= 0.10 + 0.02 and d["ci95"][1] >= 0.30 - 0.02
    assert d["p_improvement"] == 1.0                                 # both of A's seeds beat B's
    # identical sides differ by exactly nothing, in every resample
    same = paired_difference(b, b)
    assert (same["mean"], same["ci95"], same["p_improvement"]) == (0.0, [0.0, 0.0], 0.5)


def test_probability_of_improvement_counts_seed_pairs_and_halves_ties():
    from latro_core.stats import probability_of_improvement

    assert probability_of_improvement([0.5, 0.7], [0.6]) == 0.5
    assert probability_of_improvement([0.6, 0.7], [0.6, 0.5]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_question_correct_reads_the_greedy_answers_beside_a_summary(tmp_path):
    from latro_core.results import question_correct

    rows = [{"id": "a", "greedy": {"correct": True}, "maj_correct": False},
            {"id": "b", "greedy": {"correct": False}, "maj_correct": True}]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert question_correct(tmp_path / "summary.json") == {"a": True, "b": False}
    assert question_correct(tmp_path / "summary.json", "maj") == {"a": False, "b": True}
    assert question_correct(tmp_path / "missing" / "summary.json") is None


def test_build_tables(runs, tmp_path):
    out = tmp_path / "results"
    t = build_tables(TablesConfig(runs=str(runs), out=str(out), name="t2"))
    assert t["columns"] == ["arc_challenge GD", "gsm8k GD", "gsm8k maj@8"]
    assert [(r["model"], r["method"]) for r in t["rows"]] == [("SmolLM2-135M-Instruct", "Base"),
                                                              ("SmolLM2-135M-Instruct", "LaTRO")]
    base, latro = (r["cells"] for r in t["rows"])
    assert base["gsm8k GD"]["mean"] == 0.5 and base["gsm8k GD"]["seeds"] == 1
    assert base["gsm8k GD"]["ci95"] == pytest.approx(list(wilson_interval(50, 100)))
    assert base["gsm8k maj@8"]["mean"] == 0.6
    assert base["arc_challenge GD"]["mean"] == 0.75 and base["arc_challenge GD"]["n"] == [40]
    assert latro["arc_challenge GD"] is None
    g = latro["gsm8k GD"]
    assert g["seeds"] == 3 and g["n"] == [100] and g["mean"] == pytest.approx(0.5)        # old s0 (0/100) dropped
    assert g["seed_std"] == pytest.approx(statistics.stdev([0.4, 0.5, 0.6]))
    assert g["ci95"] == pytest.approx(list(wilson_interval(150, 300)))
    assert latro["gsm8k maj@8"]["mean"] == pytest.approx(0.6)
    assert len(t["sources"]) == 5 and len(t["superseded"]) == 1 and t["superseded"][0].endswith("old/summary.json")
    assert t["command"] == f"latro tables --runs {runs} --out {out} --name t2"

    md = (out / "t2.md").read_text()
    assert "| Model | Method | arc_challenge GD | gsm8k GD | gsm8k maj@8 |" in md
    assert "| SmolLM2-135M-Instruct | Base | 75.0 [59.8, 85.8] (n=40) | 50.0 [40.4, 59.6] (n=100) |" in md
    assert "| SmolLM2-135M-Instruct | LaTRO | – | 50.0 ± 10.0 sd [44.4, 55.6] pooled (n=100 × 3 seeds) |" in md
    assert f"- command: latro tables --runs {runs}" in md and "- git commit: " in md
    assert md.count("- source: ") == 5

    text = (out / "t2.csv").read_text()
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert comments[0].startswith("# command: latro tables") and comments[1].startswith("# git commit: ")
    assert sum(ln.startswith("# source: ") for ln in comments) == 5
    rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
    assert len(rows) == 5                                   # 3 base cells + 2 LaTRO cells
    r = next(r for r in rows if r["method"] == "LaTRO" and r["metric"] == "GD")
    assert float(r["mean"]) == pytest.approx(0.5) and r["seeds"] == "3" and r["n"] == "100"

    j = json.loads((out / "t2.json").read_text())
    assert j["command"] == t["command"] and "git_commit" in j and len(j["sources"]) == 5
    assert j["rows"][1]["cells"]["gsm8k GD"]["seeds"] == 3


def test_build_tables_all_splits_and_errors(runs, tmp_path):
    t = build_tables(TablesConfig(runs=str(runs), out=str(tmp_path / "r"), split="all"))
    assert "gsm8k/validation GD" in t["columns"] and "gsm8k/test GD" in t["columns"]
    assert "arc_challenge GD" in t["columns"]             # only one split of ARC: no split in its name
    with pytest.raises(ConfigError):
        build_tables(TablesConfig(runs=str(tmp_path / "empty"), out=str(tmp_path / "r")))


# ----------------------------------------------------------------------------- plots

def test_plots(tmp_path):
    from latro_core import plots

    nll = {"no_rationale": {"mean": 9.0, "se": 0.5, "n": 10}, "gold_rationale": {"mean": 3.0, "se": 0.2, "n": 10},
           "own_correct": {"mean": 2.0, "se": 0.3, "n": 6}, "own_wrong": {"mean": 6.0, "se": None, "n": 1}}
    s = {"model_label": "M", "method": "latro", "max_new_tokens": 64, "greedy": _acc(5, 10),
         "maj_at_k": {"1": _acc(4, 10), "2": _acc(5, 10), "4": _acc(6, 10)}, "answer_nll": nll}
    metrics = [{"step": i, "reward_mean": -3.0 + i, "logp_y_mean": -2.0, "kl_mean": 0.1 * i,
                "frac_truncated": 0.5, **({"eval_accuracy": 0.3} if i % 2 else {})} for i in range(1, 5)]
    mfile = tmp_path / "metrics.jsonl"
    mfile.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    paths = [plots.figure2({"base": {"answer_nll": {"no_rationale": nll["no_rationale"]}}, "latro": s},
                           tmp_path / "figures" / "figure2.png"),
             plots.plot_training(str(mfile), tmp_path / "training.png"),
             plots.plot_training({"a": metrics, "b": str(mfile)}, tmp_path / "training2.png"),
             plots.plot_maj_at_k([s, {**s, "method": "base"}], tmp_path / "maj.png"),
             plots.plot_accuracy_vs_L([{"L": 32, "accuracy": 0.2, "label": "x"}, {"L": 64, "accuracy": 0.3, "label": "x"},
                                       s], tmp_path / "L.png")]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_training_run_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    """Runs with different metrics (LaTRO: rewards; RFT: SFT loss, kept) overlaid in one figure: each
    run's lines have one colour, so the shared legend names them right in every panel."""
    from latro_core import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, tight=True: figures.append(fig) or str(path))
    latro = [{"step": i, "reward_mean": -3.0 + i, "eval_accuracy": 0.2 + 0.1 * i} for i in range(1, 4)]
    rft = [{"step": i, "sft_loss": 1.0 / i, "kept": i, "eval_accuracy": 0.3} for i in range(1, 4)]
    plots.plot_training({"LaTRO": latro, "RFT": rft}, tmp_path / "t.png")
    colours = {}
    for ax in figures[0].axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"LaTRO", "RFT"} and all(len(c) == 1 for c in colours.values())
    assert colours["LaTRO"] != colours["RFT"]


def test_seeds_of_one_method_share_its_colour_differ_in_line_style_and_the_loss_panel_is_named_for_rft(
        tmp_path, monkeypatch):
    from latro_core import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, tight=True: figures.append(fig) or str(path))
    latro = [{"step": i, "reward_mean": -3.0 + i} for i in range(1, 4)]
    rft = [{"step": i, "sft_loss": 1.0 / i} for i in range(1, 4)]
    plots.plot_training({"LaTRO seed 0": latro, "LaTRO seed 1": latro, "RFT seed 0": rft, "RFT seed 1": rft},
                        tmp_path / "t.png")
    lines = {line.get_label(): line for ax in figures[0].axes for line in ax.get_lines()}
    assert lines["LaTRO seed 0"].get_color() == lines["LaTRO seed 1"].get_color() != lines["RFT seed 0"].get_color()
    assert lines["LaTRO seed 0"].get_linestyle() != lines["LaTRO seed 1"].get_linestyle()
    assert "RFT loss (nats per token)" in [ax.get_title() for ax in figures[0].axes]


def test_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    """Importing and using latro_core.plots keeps the notebook's backend (inline plots still show)
    and leaves no pyplot figure open."""
    import subprocess
    import sys
    code = ("import matplotlib; matplotlib.use('svg'); import importlib, latro_core.plots as P; "
            "importlib.reload(P); import matplotlib.pyplot as plt; "
            f"P.plot_accuracy_vs_L([{{'L': 16, 'accuracy': 0.2, 'label': 'a', 'n': 10}}], {str(tmp_path / 'a.png')!r}); "
            "print(matplotlib.get_backend(), len(plt.get_fignums()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["svg", "0"] and (tmp_path / "a.png").exists()


def test_build_tables_reports_self_evaluation(runs, tmp_path):
    """Summaries with a self-evaluation pass get an AUROC row beside the accuracy table."""
    path = runs / "eval" / "latro-s1-gsm8k" / "summary.json"
    s = json.loads(path.read_text())
    s["self_eval"] = {"auroc": 0.73, "auroc_ci95": [0.61, 0.84], "n_samples": 800, "n_correct": 120}
    path.write_text(json.dumps(s))
    t = build_tables(TablesConfig(runs=str(runs), out=str(tmp_path / "r"), name="t"))
    assert [(e["method"], e["train_seed"], e["auroc"]) for e in t["self_eval"]] == [("LaTRO", 1, 0.73)]
    md = (tmp_path / "r" / "t.md").read_text()
    assert "| SmolLM2-135M-Instruct | LaTRO | gsm8k/test | 1 | 0.73 [0.61, 0.84] | 800 (120) |" in md


MACHINE_PATH = re.compile(r"(?<![\w:/.~-])/(?:work|root|home|tmp|Users|mnt|opt|usr|content|var|private)/[\w.-]")


def test_nothing_committed_in_results_or_the_notebooks_holds_a_machine_path():
    root = Path(__file__).resolve().parents[1]
    files = [f for f in (root / "results").rglob("*") if f.is_file()] + sorted((root / "notebooks").glob("*.ipynb"))
    found = [f"{f.relative_to(root)}: {m.group(0)}..." for f in files
             for m in MACHINE_PATH.finditer(f.read_text(errors="replace"))]
    assert not found, found[:10]


def test_portable_drops_the_repository_path_and_names_the_cli_latro():
    from latro_core.provenance import portable

    got = portable({"argv": ["/x/repo/latro_core/cli.py", "evaluate", "--model", "/x/repo/runs/a/final"],
                    "data": "/x/shared/data", "other": 3, "url": "https://x/repo/y"}, root="/x/repo")
    assert got == {"argv": ["latro", "evaluate", "--model", "runs/a/final"], "data": "../shared/data", "other": 3,
                   "url": "https://x/repo/y"}
    assert MACHINE_PATH.search("see /tmp/pytest-1/x") and not MACHINE_PATH.search("https://github.com/home/x")


def test_the_recipe_figure_reads_its_points_and_intervals_back_from_the_committed_table():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "tools"))
    from summarize_sweep import evals_from_table

    md = ("accuracy % [95% Wilson], n = 200 per point; step 0\n\n| run | lr | val accuracy % (step: acc [95%]) |\n"
          "|---|---|---|\n| r01 | 5e-05 | 0: 16.5 [12, 22]; 6: 30.0 [24, 37] |\n")
    evals, n = evals_from_table(md)
    assert n == 200 and evals == {"r01": [{"step": 0, "acc": 16.5, "lo": 12.0, "hi": 22.0},
                                          {"step": 6, "acc": 30.0, "lo": 24.0, "hi": 37.0}]}
