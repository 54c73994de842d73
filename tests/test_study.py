"""The study machinery (latro_core/experiments/study.py): the same pick rule for every method, recorded cells
skipped on a rerun, table cells and comparisons that resample seeds and questions."""

import dataclasses
import json
from pathlib import Path

import pytest

from latro_core.stats import SEEDS_AND_QUESTIONS
from latro_core.experiments.study import (Cell, Design, StudyConfig, compare, grid_name, pick, row_stats, run_cells,
                                         study_main, write_report)

POINTS = [{"lr": 5e-6, "temperature": 0.7}, {"lr": 5e-6, "temperature": 1.0}, {"lr": 5e-5, "temperature": 0.7}]


def record_done(out, cell):
    (out / cell.name).mkdir(parents=True, exist_ok=True)
    (out / cell.name / "done.json").write_text(json.dumps({"cell": dataclasses.asdict(cell)}))


def record_tuning(out, method, point, seed, acc):
    d = out / grid_name(method, point, seed)
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text(json.dumps({"step": 6, "eval_accuracy": 0.9}) + "\n"
                                     + json.dumps({"step": 12, "eval_accuracy": acc}) + "\n")
    (d / "done.json").write_text("{}")


def record_eval(out, cell, split, correct):
    d = out / cell.name / f"eval-{split}"
    d.mkdir(parents=True)
    n = len(correct)
    (d / "summary.json").write_text(json.dumps({"greedy": {"correct": sum(correct), "n": n, "accuracy": sum(correct) / n,
                                                          "frac_truncated": 0.25}}))
    (d / "predictions.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "greedy": {"correct": c}}) + "\n"
                                                 for i, c in enumerate(correct)))
    record_done(out, cell)


def test_the_pick_is_the_highest_mean_over_seeds_at_the_last_evaluation_ties_to_the_earlier_point(tmp_path):
    assert pick("rft", POINTS, (0, 1), tmp_path)[0] is None            # nothing recorded yet
    for p, accs in zip(POINTS, ((0.4, 0.6), (0.7, 0.3), (0.2, 0.3))):
        for s, a in zip((0, 1), accs):
            record_tuning(tmp_path, "rft", p, s, a)
    best, rows = pick("rft", POINTS, (0, 1), tmp_path)
    assert best == POINTS[0]                                          # 0.5 ties 0.5: the earlier point
    assert [r["mean"] for r in rows] == [0.5, 0.5, 0.25] and rows[0]["picked"] and "picked" not in rows[1]
    assert rows[0]["validation"] == [0.4, 0.6]                        # the last evaluation, not the best one


def test_recorded_cells_are_skipped_on_a_rerun(tmp_path, capsys):
    cells = [Cell("tune/a_seed0", "sft", {"steps": 1}), Cell("tune/b_seed0", "sft", {"steps": 1})]
    record_done(tmp_path, cells[0])
    assert run_cells(cells, StudyConfig(out=str(tmp_path), dry_run=True), {}) == []
    out = capsys.readouterr().out
    assert "1 of 2 cells recorded; 1 to run" in out and "would run tune/b_seed0" in out and "tune/a_seed0" not in out


def test_a_record_made_for_another_plan_is_run_again_and_not_read(tmp_path, capsys):
    """A final cell recorded for an earlier pick (lr 5e-5) when the pick is now lr 1.5e-5: stale."""
    old = Cell("final/rft_12steps_seed10", "rft", {"lr": 5e-5, "steps": 12}, ("test",))
    new = dataclasses.replace(old, train={"lr": 1.5e-5, "steps": 12})
    record_eval(tmp_path, old, "test", [True, False])
    assert run_cells([new], StudyConfig(out=str(tmp_path), dry_run=True), {}) == []
    out = capsys.readouterr().out
    assert "0 of 1 cells recorded; 1 to run (1 recorded for another plan, run again: final/rft_12steps_seed10)" in out
    assert row_stats(tmp_path, [new], "test") is None and row_stats(tmp_path, [old], "test")["seeds"] == 1


def test_a_row_and_a_comparison_resample_seeds_and_questions(tmp_path):
    latro = [Cell(f"final/latro_seed{s}", "latro", {}) for s in range(3)]
    base = [Cell("base", "base")]
    for s, k in enumerate((60, 50, 40)):
        record_eval(tmp_path, latro[s], "test", [i < k for i in range(100)])
    record_eval(tmp_path, base[0], "test", [i < 20 for i in range(100)])
    row = row_stats(tmp_path, latro, "test")
    assert row["ci"] == SEEDS_AND_QUESTIONS and row["seeds"] == 3 and row["per_seed"] == [0.6, 0.5, 0.4]
    assert abs(row["mean"] - 0.5) < 1e-12 and row["finished"] == 0.75
    assert row["ci95"][0] < 0.4 < 0.6 < row["ci95"][1]                 # the seeds' own spread is inside
    assert row_stats(tmp_path, base, "test")["ci"].startswith("wilson")
    d = compare(tmp_path, latro, base, "test")
    assert d["ci"] == SEEDS_AND_QUESTIONS and d["seeds"] == [3, 1] and d["p_improvement"] == 1.0
    assert abs(d["mean"] - 0.3) < 1e-12
    assert compare(tmp_path, latro, [Cell("final/rft_seed0", "rft", {})], "test") is None   # not recorded


def test_a_row_shared_with_another_study_is_read_and_skipped_in_its_own_folder(tmp_path, capsys):
    other, mine = tmp_path / "other", tmp_path / "mine"
    shared = Cell("final/latro_seed0", "latro", {}, ("test",), "LaTRO", home=str(other))
    record_eval(other, shared, "test", [True, False])
    assert run_cells([shared], StudyConfig(out=str(mine), dry_run=True), {}) == []
    assert "1 of 1 cells recorded" in capsys.readouterr().out
    assert row_stats(mine, [shared], "test")["mean"] == 0.5 and not mine.exists()


def test_the_replay_check_ignores_timings_and_names_the_metric_that_moved():
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay_record", Path(__file__).parents[1] / "scripts" / "tools" / "replay_record.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    recorded = [{"step": 1, "reward_mean": -45.3, "kl_mean": 0.0, "step_s": 30.0},
                {"step": 2, "reward_mean": -40.1, "kl_mean": 0.2, "step_s": 31.0}]
    same = [{**r, "step_s": r["step_s"] + 5} for r in recorded]             # only the clock differs
    assert replay.compare(recorded, same) == [(1, "none (all equal)", 0.0), (2, "none (all equal)", 0.0)]
    moved = [recorded[0], {**recorded[1], "kl_mean": 0.25}]
    assert replay.compare(recorded, moved)[1][:2] == (2, "kl_mean")


def test_the_report_says_how_many_seeds_each_row_has_and_draws_the_rows_with_their_intervals(tmp_path, monkeypatch):
    """A row still running (1 of 2 seeds, or none yet) is written as such in the table and the JSON, and
    the rows figure is drawn beside them; the comparison with a row not yet run is empty, not zero."""
    monkeypatch.chdir(tmp_path)                                       # the figures go to ./figures/
    out = tmp_path / "study"
    base = Cell("base", "base", None, ("test",), "Base")
    short = [Cell(f"final/latro_12steps_seed{s}", "latro", {"steps": 12}, ("test",), "LaTRO, 12 steps") for s in (0, 1)]
    long = [Cell(f"final/latro_36steps_seed{s}", "latro", {"steps": 36}, ("test",), "LaTRO, 36 steps") for s in (0, 1)]
    record_eval(out, base, "test", [i < 2 for i in range(10)])
    record_eval(out, short[0], "test", [i < 6 for i in range(10)])
    design = Design(title="t", name="s", intro="", grid="", splits=("test",), info={},
                    comparisons=[("LaTRO, 12 steps", "Base"), ("LaTRO, 36 steps", "Base")])
    meta = write_report(StudyConfig(out=str(out)), "python s.py", [base, *short, *long], {}, design)
    rows = {r["row"]: r for r in meta["rows"]}
    assert rows["LaTRO, 12 steps"]["test"]["seeds"] == 1 and rows["LaTRO, 12 steps"]["seeds_planned"] == 2
    assert rows["LaTRO, 36 steps"]["test"] is None
    assert "mean" in meta["comparisons"][0] and "mean" not in meta["comparisons"][1]
    md = (tmp_path / "study.md").read_text()
    assert "| LaTRO, 12 steps | 60.0 [" in md and "| 1 of 2 |" in md and "| LaTRO, 36 steps | – | – | 0 of 2 |" in md
    assert meta["rows_figure"] == "figures/s_rows.png" and (tmp_path / "figures/s_rows.png").stat().st_size > 1000
    assert f"`{meta['rows_figure']}`" in md


def test_a_notebook_reads_a_written_study_back_as_formatted_rows_and_paired_comparisons(tmp_path):
    from latro_core.experiments.study import read_report

    stats = {"mean": 0.5, "ci95": [0.4, 0.6], "seeds": 5}
    diff = {"mean": 0.1, "ci95": [0.02, 0.2], "p_improvement": 0.8}
    (tmp_path / "s.json").write_text(json.dumps({
        "command": "python scripts/study_arithmetic.py", "git_commit": "0123456789abcdef",
        "rows": [{"row": "LaTRO, 12 steps", "test": stats, "unseen": None}],
        "comparisons": [{"a": "LaTRO, 12 steps", "b": "Base", "split": "test", **diff},
                        {"a": "LaTRO, 12 steps", "b": "Base", "split": "unseen"}]}))
    made_by, rows, comparisons = read_report(tmp_path / "s.json")
    assert made_by == "command `python scripts/study_arithmetic.py`, commit `0123456789ab`"
    assert rows == [{"row": "LaTRO, 12 steps", "test % [95%]": "50.0 [40.0, 60.0]", "unseen % [95%]": "–", "seeds": 5}]
    assert comparisons == [{"A": "LaTRO, 12 steps", "B": "Base", "test": "+10.0 [+2.0, +20.0], P(A>B) = 0.80",
                            "unseen": "–"}]


def test_a_study_scripts_help_shows_its_own_defaults_not_the_config_classes(capsys):
    """``study_main(defaults=…)`` replaces StudyConfig's defaults; ``--help`` must show the replaced ones."""
    design = Design(title="t", name="t", intro="", grid="", curve_n=0, info={}, comparisons=[])
    with pytest.raises(SystemExit):
        study_main(["--help"], script="s.py", tuning=list, finals=None, design=design, eval_kw={}, doc="d",
                   defaults={"out": "results/study_elsewhere"})
    out = " ".join(capsys.readouterr().out.split())
    assert "(default results/study_elsewhere)" in out and "(default results/study_arithmetic)" not in out
