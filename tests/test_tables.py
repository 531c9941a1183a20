"""Tables and plots from a small synthetic ledger, checked against numpy computed here."""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fedjax_syn.runs.ledger as ledger_lib
import fedjax_syn.runs.records as records_lib
from fedjax_syn.core.errors import UserError
from fedjax_syn.report import plots, published, render, specs, tables

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ("mnist", "cifar10")
ALGORITHMS = ("fedavg", "fedlog", "local")
SETTINGS = ("seen", "global")
SEEDS = (0, 1, 2)


def make_records(skip=()):
    """One vision record per (dataset, algorithm, seed), with random best/last numbers."""
    rng = np.random.default_rng(7)
    records = []
    for ds, alg, seed in itertools.product(DATASETS, ALGORITHMS, SEEDS):
        curves = {name: rng.uniform(0.3, 0.9, size=6).tolist() for name in ("val", *SETTINGS)}
        best, last = records_lib.summarize_curves(curves)
        record = {
            "run_id": f"{ds}-{alg}-{seed}",
            "track": "vision",
            "dataset": ds,
            "algorithm": alg,
            "seed": seed,
            "protocol": {"partition": "dirichlet", "alpha": 0.1, "num_clients": 5},
            "eval_rounds": [1, 2, 3, 4, 5, 6],
            "curves": curves,
            "best": best,
            "last": last,
        }
        if (ds, alg, seed) not in skip:
            records.append(record)
    return records


def spec(**layout):
    return specs.accuracy_spec(
        "t", {"track": "vision"}, ("dataset", "algorithm"), SETTINGS, "both", **layout
    )


def md_rows(markdown: str) -> dict[tuple, list[str]]:
    """Table body rows keyed by (dataset, algorithm): the remaining cells, stripped."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in DATASETS:
            rows[cells[0], cells[1]] = cells[2:]
    return rows


def test_cells_are_mean_and_population_std_with_bold_best_per_dataset():
    records = make_records()
    markdown = render.to_markdown(tables.build_table(records, spec()))
    rows = md_rows(markdown)
    columns = [(m, s) for s in SETTINGS for m in ("best", "last")]
    for j, (metric, setting) in enumerate(columns):
        for ds in DATASETS:
            means = {}
            for alg in ALGORITHMS:
                values = 100 * np.array(
                    [
                        r[metric][setting]
                        for r in records
                        if (r["dataset"], r["algorithm"]) == (ds, alg)
                    ]
                )
                means[alg] = round(values.mean(), 2)
                text = f"{values.mean():.2f} ± {values.std(ddof=0):.2f}"
                cell = rows[ds, alg][1 + j]  # after the n column
                assert cell.strip("*") == text
                assert rows[ds, alg][0] == "3"
            best = max(means.values())
            for alg in ALGORITHMS:
                assert rows[ds, alg][1 + j].startswith("**") == (means[alg] == best)
    assert "| Seen (best) | Seen (last) | Global (best) | Global (last) |" in markdown
    assert "population std" in markdown and "ddof=0" in markdown
    assert 'Query: `select(ledger=ledger, filters={"track": "vision"}) -> 18 runs' in markdown


def test_single_metric_table_has_one_column_per_setting():
    records = make_records()
    table = tables.build_table(
        records, specs.accuracy_spec("t", {}, ("dataset", "algorithm"), SETTINGS, "last")
    )
    assert [c.path for c in table.spec.columns] == ["last.seen", "last.global"]
    assert "| Seen | Global |" in render.to_markdown(table)


def test_missing_runs_are_shown_never_dropped():
    records = make_records(skip={("mnist", "local", 2)})
    expected = [(ds, alg) for ds in DATASETS for alg in (*ALGORITHMS, "fedprox")]
    table = tables.build_table(records, spec(expected_rows=tuple(expected), seeds=SEEDS))
    markdown = render.to_markdown(table)
    rows = md_rows(markdown)
    assert rows["mnist", "fedprox"] == ["0/3"] + ["missing"] * 4
    assert rows["mnist", "local"][0] == "2/3"
    assert rows["mnist", "fedavg"][0] == "3/3"
    assert "- dataset=mnist, algorithm=local: seed(s) 2" in markdown
    assert "- dataset=cifar10, algorithm=fedprox: seed(s) 0, 1, 2" in markdown
    # The partial row is averaged over the seeds that exist.
    values = [100 * r["best"]["seen"] for r in records if r["run_id"].startswith("mnist-local")]
    assert rows["mnist", "local"][1].strip("*") == f"{np.mean(values):.2f} ± {np.std(values):.2f}"
    assert "missing" in render.to_latex(table)


def test_a_group_not_run_at_all_is_one_note_and_gets_no_verdict_line():
    records = [r for r in make_records() if r["dataset"] == "mnist"]
    for i, r in enumerate(records):
        r["wall_time_s"] = 360.0 * (i + 1)
    expected = tuple(itertools.product(("mnist", "svhn"), ALGORITHMS))
    layout = dict(seeds=SEEDS, verdict_for=("fedlog",), cost=True, expected_rows=expected)
    markdown = render.to_markdown(tables.build_table(records, spec(**layout)))
    assert "- dataset=svhn: no run yet (all 3 rows)" in markdown
    assert "dataset=svhn, algorithm=" not in markdown.split("Missing runs:")[1]
    assert md_rows(markdown).get(("mnist", "fedlog")) and "| svhn | fedlog | 0/3 |" in markdown
    verdicts = markdown.split("Verdict for fedlog")[1]
    assert "| mnist | fedlog |" in verdicts and "| svhn |" not in verdicts
    hours = sum(360.0 * (i + 1) for i in range(len(records))) / 3600
    assert f"Cost: {len(records)} runs, {hours:.1f} hours of run wall time summed." in markdown
    # Per group of rows (here the dataset): only groups with runs, each its own runs' sum.
    assert f"By dataset: mnist: {len(records)} runs, {hours:.1f} h." in markdown


def test_cost_is_summed_per_group_of_rows():
    records = make_records()
    for i, r in enumerate(records):
        r["wall_time_s"] = 3600.0 * (i % 4)  # 0 to 3 hours, unevenly over the datasets
    table = tables.build_table(records, spec(cost=True))
    markdown = render.to_markdown(table)
    parts = [
        f"{ds}: {n} runs, {h:.1f} h"
        for ds in dict.fromkeys(key[0] for key in table.row_keys)  # in row order
        for group in [[r for r in records if r["dataset"] == ds]]
        for n, h in [(len(group), sum(r["wall_time_s"] for r in group) / 3600)]
    ]
    assert f"By dataset: {'; '.join(parts)}." in markdown


def test_cpu_time_is_summed_over_the_runs_that_measure_it():
    records = make_records()
    for i, r in enumerate(records):
        r["wall_time_s"] = 3600.0
        if i % 3 == 1:
            r["cpu_time_s"] = 1800.0 * (i % 2 + 1)
        elif i % 3 == 2:
            r["cpu_time_s"] = None  # resumed from a checkpoint that did not measure it
    table = tables.build_table(records, spec(cost=True))
    measured = [r for r in records if r.get("cpu_time_s") is not None]
    cpu = sum(r["cpu_time_s"] for r in measured) / 3600
    assert table.cost == tables.Cost(len(records), len(records), len(measured), cpu)
    markdown = render.to_markdown(table)
    assert (
        f"Cost: {len(records)} runs, {len(records):.1f} hours of run wall time summed; "
        f"{cpu:.1f} CPU hours over the {len(measured)} runs that measure it."
    ) in markdown
    for ds in DATASETS:
        group = [r for r in measured if r["dataset"] == ds]
        hours = sum(r["cpu_time_s"] for r in group) / 3600
        assert f" ({hours:.1f} CPU h over {len(group)})" in markdown.split(f"{ds}: ")[-1]


def test_rows_found_but_not_expected_are_still_listed():
    table = tables.build_table(make_records(), spec(expected_rows=(("mnist", "fedavg"),)))
    assert table.row_keys[0] == ("mnist", "fedavg")
    assert len(table.row_keys) == len(DATASETS) * len(ALGORITHMS)


def test_cell_with_fewer_values_than_the_row_says_so():
    records = make_records()
    for r in records:
        if r["run_id"] == "mnist-fedavg-0":
            r["best"]["global"] = None  # e.g. a setting with no examples in that run
    rows = md_rows(render.to_markdown(tables.build_table(records, spec())))
    assert rows["mnist", "fedavg"][3].endswith("(n=2)")


def test_duplicate_runs_for_one_seed_are_refused():
    records = make_records()
    twin = {**records[0], "run_id": "other-lr", "config": {"lr": 0.5}}
    with pytest.raises(UserError, match="several runs for seed"):
        tables.build_table([*records, twin], spec())


def test_latex_escaping_and_bold():
    assert render.latex_escape(r"a_b&c%d$e#f{g}h~i^j\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    records = make_records()
    for r in records:
        r["algorithm"] = r["algorithm"].replace("fedlog", "fed_log&co")
    latex = render.to_latex(tables.build_table(records, spec()))
    assert r"fed\_log\&co" in latex and "fed_log&co" not in latex
    assert r"\textbf{" in latex and r"$\pm$" in latex
    assert r"\multicolumn{2}{c}{Seen}" in latex and r"\cmidrule(lr){4-5}" in latex
    assert latex.count(r"\begin{tabular}") == 1 and r"Accuracy (\%)" in latex
    assert "% Query: select(" in latex


def test_condensation_table():
    rng = np.random.default_rng(1)
    records = [
        {
            "run_id": f"{m}-{ipc}-{s}",
            "track": "condense",
            "dataset": "mnist",
            "method": m,
            "config": {"dsa": False, "iterations": 100},
            "ipc": ipc,
            "seed": s,
            "metrics": {"syn_acc": float(rng.uniform()), "random_acc": float(rng.uniform())},
        }
        for m, ipc, s in itertools.product(("dm", "gm"), (1, 10), SEEDS)
    ]
    table = tables.build_table(records, specs.NAMED_SPECS["condense"])
    markdown = render.to_markdown(table)
    for m, ipc in itertools.product(("dm", "gm"), (1, 10)):
        syn = [
            100 * r["metrics"]["syn_acc"] for r in records if (r["method"], r["ipc"]) == (m, ipc)
        ]
        assert f"| mnist | {m} | False | {ipc} | 100 | 3 | " in markdown
        assert f"{np.mean(syn):.2f} ± {np.std(syn):.2f}" in markdown
    # Methods are compared within each (dataset, ipc): exactly one bold per column per ipc.
    assert len(table.bold) == 2 * 2
    # The published figure closes each row: DC's for gradient matching, none for DM here.
    rows = {
        tuple(line.split(" | ")[1:4:2]): line
        for line in markdown.splitlines()
        if "| mnist |" in line
    }
    assert rows["gm", "1"].endswith("| 91.7 |") and rows["gm", "10"].endswith("| 97.4 |")
    assert rows["dm", "1"].endswith("| — |") and "| Published |" in markdown
    assert "VICO-UoE/DatasetCondensation" in markdown
    latex = render.to_latex(table)
    assert r"\begin{tabular}{lllllrccr}" in latex and r"& 91.7 \\" in latex


def test_published_figures_are_looked_up_by_their_own_keys_only():
    reference = published.CONDENSATION
    rows = ("dataset", "method", "config.dsa", "ipc", "config.iterations")
    assert reference.lookup(rows, ("fashion_mnist", "gm", True, 10, 200)) == 84.6
    assert reference.lookup(rows, ("fashion_mnist", "gm", True, 20, 200)) is None
    assert reference.lookup(rows, ("mnist_5k", "gm", False, 1, 100)) == 91.7  # MNIST's figure
    assert reference.lookup(("dataset", "method", "ipc"), ("fashion_mnist", "gm", 1)) is None


def test_resolve_spec_named_inline_file_and_errors(tmp_path):
    assert specs.resolve_spec("graph").rows == ("dataset", "protocol.num_clients", "algorithm")
    text = json.dumps(
        {
            "name": "grid",
            "rows": ["dataset", "algorithm"],
            "settings": ["seen"],
            "metric": "best",
            "expected_rows": {"dataset": ["a", "b"], "algorithm": ["x", "y", "z"]},
            "seeds": [0, 1],
        }
    )
    inline = specs.resolve_spec(text)
    assert len(inline.expected_rows) == 6 and inline.seeds == (0, 1)
    path = tmp_path / "spec.json"
    path.write_text(text)
    assert specs.resolve_spec(str(path)) == inline
    with pytest.raises(UserError, match="neither a named spec"):
        specs.resolve_spec("nonesuch")
    with pytest.raises(UserError, match="unknown table spec field"):
        specs.resolve_spec('{"rows": ["dataset"], "settings": ["seen"], "colour": 1}')
    with pytest.raises(UserError, match="unknown metric set"):
        specs.resolve_spec('{"rows": ["dataset"], "settings": ["seen"], "metric": "mean"}')
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="must be a JSON object, got an array"):
        specs.resolve_spec(str(path))


def test_tables_mode_writes_files(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    for record in make_records():
        ledger_lib.append_record(ledger, record)
    out = tmp_path / "tables"
    spec_json = json.dumps(
        {"name": "mine", "rows": ["dataset", "algorithm"], "settings": list(SETTINGS)}
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tables_mode = [sys.executable, "-m", "experiments.main", "--mode=tables"]
    args = [f"--ledger={ledger}", f"--spec={spec_json}", "--format=both", f"--out={out}"]
    done = subprocess.run([*tables_mode, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "mine.md").read_text() in done.stdout
    assert r"\begin{table}" in (out / "mine.tex").read_text()
    bad = subprocess.run(
        [*tables_mode, f"--ledger={tmp_path / 'absent.jsonl'}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: results ledger {tmp_path / 'absent.jsonl'} does not exist"
    ]


def _assert_images(paths):
    png, pdf = paths
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1_000


def test_plots_write_png_and_pdf(tmp_path):
    records = make_records()
    for r in records:  # spread runs over alphas for the alpha plot
        r["protocol"]["alpha"] = {"mnist": 0.1, "cifar10": 1.0}[r["dataset"]]
    fig = plots.plot_accuracy_vs_alpha(
        records, SETTINGS, paths=[tmp_path / "a.png", tmp_path / "a.pdf"]
    )
    assert len(fig.axes) == len(SETTINGS)
    _assert_images([tmp_path / "a.png", tmp_path / "a.pdf"])
    mnist = records_lib.select(records, dataset="mnist")
    fig = plots.plot_round_curves(mnist, SETTINGS, paths=[tmp_path / "c.png", tmp_path / "c.pdf"])
    assert len(fig.axes) == len(ALGORITHMS)
    _assert_images([tmp_path / "c.png", tmp_path / "c.pdf"])
    fig = plots.plot_best_last_gap(mnist, SETTINGS, paths=[tmp_path / "g.png", tmp_path / "g.pdf"])
    bars = fig.axes[0].patches
    gaps = [
        100 * (r["best"]["seen"] - r["last"]["seen"]) for r in mnist if r["algorithm"] == "fedavg"
    ]
    assert bars[0].get_height() == pytest.approx(np.mean(gaps))
    _assert_images([tmp_path / "g.png", tmp_path / "g.pdf"])


def test_plots_refuse_empty_selection_and_bad_suffix(tmp_path):
    with pytest.raises(UserError, match="matched nothing"):
        plots.plot_best_last_gap([], SETTINGS)
    with pytest.raises(UserError, match="must end in"):
        plots.plot_best_last_gap(make_records()[:3], SETTINGS, paths=[tmp_path / "x.jpg"])


def test_select_on_picks_per_row_and_mode_the_value_with_the_best_mean_validation():
    """Two betas per (dataset, algorithm): the table shows, per evaluation mode, the beta whose mean
    best-round validation accuracy is highest, and the other mode may choose differently."""
    records = []
    for alg, beta, seed in itertools.product(("fedlog",), (0.1, 1.0), SEEDS):
        local_val = {0.1: 0.8, 1.0: 0.6}[beta] + 0.01 * seed
        global_val = {0.1: 0.5, 1.0: 0.7}[beta]
        records.append(
            {
                "run_id": f"{alg}-{beta}-{seed}",
                "track": "vision",
                "dataset": "mnist",
                "algorithm": alg,
                "seed": seed,
                "config": {"fedlog": {"beta": beta}},
                "best": {"val": 0.0, "seen": 0.0},
                "last": {"val": 0.0, "seen": 0.0},
                "modes": {
                    "local": {
                        "best": {"val": local_val, "seen": beta},
                        "last": {"val": 0.0, "seen": beta},
                    },
                    "global": {
                        "best": {"val": global_val, "seen": beta},
                        "last": {"val": 0.0, "seen": beta},
                    },
                },
            }
        )
    table = tables.build_table(
        records,
        specs.accuracy_spec(
            "t",
            {"track": "vision"},
            ("dataset", "algorithm"),
            ("seen",),
            "best",
            modes=("local", "global"),
            select_on=("config.fedlog.beta",),
        ),
    )
    key = ("mnist", "fedlog")
    assert table.cells[key, 0].mean == pytest.approx(10.0)  # local: beta 0.1 (val 0.8 > 0.6)
    assert table.cells[key, 1].mean == pytest.approx(100.0)  # global: beta 1.0 (val 0.7 > 0.5)
    assert table.seeds_found[key] == SEEDS
    markdown = render.to_markdown(table)
    assert "local: beta=0.1; global: beta=1" in markdown
    assert "the server's global model" in markdown


def test_verdict_judges_each_cell_against_the_best_other_row_within_one_std():
    """fedlog vs the best baseline per (dataset) and column: a win beyond the larger std, a tie
    within it, a loss beyond it naming the baseline."""
    means = {  # algorithm -> (seen, global) per seed 0, 1
        "fedlog": ((0.80, 0.82), (0.50, 0.60)),
        "fedavg": ((0.60, 0.62), (0.52, 0.56)),
        "local": ((0.70, 0.72), (0.90, 0.92)),
    }
    records = []
    for alg, (seen, glob) in means.items():
        for seed in (0, 1):
            row = {"val": 0.5, "seen": seen[seed], "global": glob[seed]}
            records.append(
                {
                    "run_id": f"{alg}-{seed}",
                    "track": "vision",
                    "dataset": "mnist",
                    "algorithm": alg,
                    "seed": seed,
                    "best": row,
                    "last": row,
                }
            )
    table = tables.build_table(records, spec(verdict_for=("fedlog",)))
    key = ("mnist", "fedlog")  # columns: seen best, seen last, global best, global last
    assert tables.verdict(table, key, 0) == "win +10.00"  # 81 vs local 71, stds 1
    assert tables.verdict(table, key, 2) == "loss -36.00 (local)"  # 55 vs 91
    assert tables.verdict(table, ("mnist", "fedavg"), 0) == "loss -10.00 (local)"
    records[4]["best"] = {"val": 0.5, "seen": 0.60, "global": 0.9}  # local seen: 66 +- 6
    table = tables.build_table(records, spec(verdict_for=("fedlog",)))
    assert tables.verdict(table, key, 0) == "win +15.00"
    records[5]["best"] = {"val": 0.5, "seen": 0.92, "global": 0.92}  # local seen: 76 +- 16
    table = tables.build_table(records, spec(verdict_for=("fedlog",)))
    assert tables.verdict(table, key, 0) == "tie +5.00 (local)"
    markdown = render.to_markdown(table)
    assert "Verdict for fedlog" in markdown
    # The summary counts the four columns (seen: tie, win; global: loss, loss) and lists losses.
    summary = markdown.split("Verdict in short")[1].split("Verdict for")[0]
    lost = "Global (best) -36.00 (local); Global (last) -36.00 (local)"
    assert f"| mnist | fedlog | 1 / 1 / 2 | {lost} |" in summary
    assert "| mnist | fedavg |" not in summary  # only the judged rows


def test_validation_choices_name_the_personalised_mode():
    records = [
        {
            "run_id": f"r{beta}-{seed}",
            "track": "vision",
            "dataset": "mnist",
            "algorithm": "fedlog",
            "seed": seed,
            "config": {"fedlog": {"beta": beta}},
            "best": {"val": beta, "seen": beta},
            "last": {"val": beta, "seen": beta},
        }
        for beta in (0.1, 1.0)
        for seed in (0, 1)
    ]
    table = tables.build_table(
        records,
        specs.accuracy_spec(
            "t", {}, ("dataset", "algorithm"), ("seen",), select_on=("config.fedlog.beta",)
        ),
    )
    assert "algorithm=fedlog: personalized: beta=1" in render.to_markdown(table)


def _scored_records(scores, datasets=("mnist",), seeds=SEEDS):
    """Records whose `local` and `global` best/last Seen accuracy is `scores[alg]`, + 1 point a
    seed."""
    return [
        {
            "run_id": f"{ds}-{alg}-{seed}",
            "track": "vision",
            "dataset": ds,
            "algorithm": alg,
            "seed": seed,
            "best": {"val": 0.5, "seen": 0.5},
            "last": {"val": 0.5, "seen": 0.5},
            "modes": {
                mode: {
                    "best": {"val": 0.5, "seen": score + 0.01 * seed},
                    "last": {"val": 0.5, "seen": score},
                }
                for mode, score in zip(("local", "global"), scores[alg])
            },
        }
        for ds in datasets
        for alg in scores
        for seed in seeds
    ]


def _judged_spec(**layout):
    return specs.accuracy_spec(
        "t",
        {"track": "vision"},
        ("dataset", "algorithm"),
        ("seen",),
        "both",
        modes=("local", "global"),
        seeds=SEEDS,
        **layout,
    )


def test_verdict_summary_counts_each_scoring_apart():
    """fedlog beats fedavg scored `local` and loses scored `global`: one count per scoring."""
    records = _scored_records({"fedlog": (0.9, 0.3), "fedavg": (0.5, 0.7)})
    markdown = render.to_markdown(
        tables.build_table(records, _judged_spec(verdict_for=("fedlog",)))
    )
    assert (
        "| dataset | algorithm | local: won / tied / lost | global: won / tied / lost |" in markdown
    )
    lost = "Seen (global best) -40.00 (fedavg); Seen (global last) -40.00 (fedavg)"
    assert f"| mnist | fedlog | 2 / 0 / 0 | 0 / 0 / 2 | {lost} |" in markdown


def test_verdict_summary_counts_each_scoring_apart_with_one_metric():
    """metric="best": the sub-headers are the bare mode names, yet each mode keeps its count."""
    records = _scored_records({"fedlog": (0.9, 0.3), "fedavg": (0.5, 0.7)})
    spec = specs.accuracy_spec(
        "t",
        {"track": "vision"},
        ("dataset", "algorithm"),
        ("seen",),
        "best",
        modes=("local", "global"),
        seeds=SEEDS,
        verdict_for=("fedlog",),
    )
    markdown = render.to_markdown(tables.build_table(records, spec))
    assert "| local: won / tied / lost | global: won / tied / lost |" in markdown
    assert "| mnist | fedlog | 1 / 0 / 0 | 0 / 0 / 1 | Seen (global) -40.00 (fedavg) |" in markdown


def test_scoring_of_reads_back_every_scored_path_and_nothing_else():
    for scoring in itertools.product(
        ("personalized", "local", "global"), ("best", "last"), SETTINGS
    ):
        assert specs.scoring_of(specs.scored_path(*scoring)) == scoring
    for other in ("metrics.syn_acc", "best", "modes", "modes.local.best", "wall_time_s"):
        assert specs.scoring_of(other) is None


def test_verdict_figure_draws_complete_cells_with_the_verdict_as_marker(tmp_path):
    """fedlog wins scored `local` and loses scored `global` against fedavg; cifar10 lacks a
    seed of fedavg, so only mnist is drawn."""
    scores = {"fedlog": (0.9, 0.3), "fedavg": (0.5, 0.7), "local": (0.4, 0.2)}
    records = _scored_records(scores, datasets=DATASETS)
    records = [r for r in records if r["run_id"] != "cifar10-fedavg-2"]
    table = tables.build_table(records, _judged_spec(verdict_for=("fedlog",)))
    paths = [tmp_path / "v.png", tmp_path / "v.pdf"]
    fig = plots.plot_verdict(table, paths=paths)
    _assert_images(paths)
    assert [ax.get_title() for ax in fig.axes] == ["Seen, scored local", "Seen, scored global"]
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["mnist"]
    for ax, (fedlog, fedavg), marker in zip(fig.axes, ((91, 51), (31, 71)), "^v", strict=True):
        markers = [line for line in ax.lines if line.get_marker() in ("s", "^", "o", "v")]
        points = {line.get_marker(): line.get_ydata()[0] for line in markers}  # not the caps
        assert points == pytest.approx({"s": fedavg, marker: fedlog})
        assert [t.get_text() for t in ax.texts] == ["fedavg"]
    last = plots.plot_verdict(table, modes=("global",), metric="last")
    assert [ax.get_title() for ax in last.axes] == ["Seen, scored global"]


def test_verdict_figure_refuses_a_table_without_judged_rows_or_complete_cells():
    records = _scored_records({"fedlog": (0.9, 0.3), "fedavg": (0.5, 0.7)})
    with pytest.raises(UserError, match="judges no rows"):
        plots.plot_verdict(tables.build_table(records, _judged_spec()))
    judged = tables.build_table(records, _judged_spec(verdict_for=("fedlog",)))
    with pytest.raises(UserError, match="no 'best' columns scored 'personalized'"):
        plots.plot_verdict(judged, modes=("personalized",))
    partial = tables.build_table(records[1:], _judged_spec(verdict_for=("fedlog",)))
    with pytest.raises(UserError, match="no complete cell"):
        plots.plot_verdict(partial)


def test_plots_mode_draws_the_verdict_of_a_spec(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    for record in _scored_records({"fedlog": (0.9, 0.3), "fedavg": (0.5, 0.7)}):
        ledger_lib.append_record(ledger, record)
    spec_json = json.dumps(
        {
            "name": "mine",
            "rows": ["dataset", "algorithm"],
            "settings": ["seen"],
            "modes": ["local", "global"],
            "verdict_for": ["fedlog"],
        }
    )
    mode = [sys.executable, "-m", "experiments.main", "--mode=plots", "--plot=verdict"]
    args = [f"--ledger={ledger}", f"--spec={spec_json}", f"--out={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*mode, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_images([tmp_path / "mine_verdict.png", tmp_path / "mine_verdict.pdf"])


def test_a_sweep_config_file_is_a_table_spec_of_its_own_table():
    """--spec=<config>.py draws the table the sweep itself prints, so it is defined once."""
    from experiments import configs
    from experiments.configs import comparison

    spec = configs.table_spec(str(REPO / "experiments/configs/comparison.py"))
    assert spec == specs.table_spec(comparison.get_config(), "comparison")
    assert spec.filters == {"track": "graph"}
    assert spec.select_on == ("config.fedlog.beta", "config.moon.mu")
    assert configs.table_spec("graph") == specs.NAMED_SPECS["graph"]
    with pytest.raises(UserError, match="does not exist"):
        configs.table_spec(str(REPO / "experiments/configs/nope.py"))


def test_each_row_is_tuned_on_its_own_option_and_the_notes_name_only_that_one():
    """select_on over two algorithms' options: FedLoG picks beta, MOON picks mu, on validation."""
    options = {"fedlog": ("fedlog", "beta", (0.1, 1.0)), "moon": ("moon", "mu", (0.1, 1.0))}
    records = []
    for alg, (group, name, values) in options.items():
        for value, seed in itertools.product(values, SEEDS):
            val = {0.1: 0.6, 1.0: 0.8}[value] if alg == "fedlog" else {0.1: 0.9, 1.0: 0.5}[value]
            summary = {"val": val, "seen": value}
            records.append(
                {
                    "run_id": f"{alg}-{value}-{seed}",
                    "track": "vision",
                    "dataset": "mnist",
                    "algorithm": alg,
                    "seed": seed,
                    "config": {group: {name: value}},
                    "best": summary,
                    "last": summary,
                }
            )
    spec = specs.accuracy_spec(
        "t",
        {"track": "vision"},
        ("dataset", "algorithm"),
        ("seen",),
        "best",
        select_on=("config.fedlog.beta", "config.moon.mu"),
    )
    table = tables.build_table(records, spec)
    assert table.cells[("mnist", "fedlog"), 0].mean == pytest.approx(100.0)  # beta 1 (val 0.8)
    assert table.cells[("mnist", "moon"), 0].mean == pytest.approx(10.0)  # mu 0.1 (val 0.9)
    markdown = render.to_markdown(table)
    assert "algorithm=fedlog: personalized: beta=1" in markdown
    assert "algorithm=moon: personalized: mu=0.1" in markdown
    assert "None" not in markdown


def test_a_row_tuned_over_values_not_all_run_is_missing_and_its_cell_is_not_judged(tmp_path):
    """fedlog is tuned over beta in {0.01, 0.1, 1}; on mnist beta 0.01 lacks seeds 1 and 2, so
    its choice is provisional: the runs are listed as missing, and mnist gets no verdict."""
    records = _scored_records({"fedavg": (0.5, 0.7)}, datasets=DATASETS)
    for ds, beta in itertools.product(DATASETS, (0.01, 0.1, 1.0)):
        seeds = (0,) if (ds, beta) == ("mnist", 0.01) else SEEDS
        for record in _scored_records({"fedlog": (0.9, 0.3)}, datasets=(ds,), seeds=seeds):
            record["run_id"] += f"-{beta}"
            record["config"] = {"fedlog": {"beta": beta}}
            records.append(record)
    betas = {"config.fedlog.beta": (0.01, 0.1, 1.0)}
    layout = dict(verdict_for=("fedlog",), select_on=tuple(betas), select_values=betas)
    table = tables.build_table(records, _judged_spec(**layout))
    assert tables.absent_tuned_runs(table, ("mnist", "fedlog")) == [((0.01,), (1, 2))]
    assert tables.absent_tuned_runs(table, ("cifar10", "fedlog")) == []
    assert tables.absent_tuned_runs(table, ("mnist", "fedavg")) == []  # not tuned on beta
    assert list(tables.complete_groups(table)) == [("cifar10",)]
    markdown = render.to_markdown(table)
    assert "- dataset=mnist, algorithm=fedlog, beta=0.01: seed(s) 1, 2" in markdown
    assert "Not judged until every row of the cell has all its runs" in markdown
    verdicts = markdown.split("Verdict for fedlog")[1]
    assert "| cifar10 | fedlog |" in verdicts and "| mnist |" not in verdicts
    fig = plots.plot_verdict(table)
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["cifar10"]
    # Without the values to expect, the betas that ran are all there is to tune over.
    untold = tables.build_table(records, _judged_spec(**{**layout, "select_values": {}}))
    assert tables.absent_tuned_runs(untold, ("mnist", "fedlog")) == [((0.01,), (1, 2))]
    records = [r for r in records if r.get("config", {}).get("fedlog", {}).get("beta") != 0.01]
    untold = tables.build_table(records, _judged_spec(**{**layout, "select_values": {}}))
    assert set(tables.complete_groups(untold)) == {("mnist",), ("cifar10",)}


def test_select_values_come_from_json_or_the_grid_and_are_checked():
    from experiments.configs import comparison

    spec = specs.table_spec(comparison.get_config(), "comparison")
    assert spec.select_values == {
        "config.fedlog.beta": comparison.BETAS,
        "config.moon.mu": comparison.MOON_MUS,
    }
    obj = {"rows": ["dataset", "algorithm"], "settings": ["seen"]}
    tuned = {**obj, "select_on": ["config.fedlog.beta"]}
    parsed = specs.spec_from_dict({**tuned, "select_values": {"config.fedlog.beta": [0.1, 1]}})
    assert parsed.select_values == {"config.fedlog.beta": (0.1, 1)}
    with pytest.raises(UserError, match="must map each select_on path to its values"):
        specs.spec_from_dict({**tuned, "select_values": [0.1, 1]})
    with pytest.raises(UserError, match="select_values path of table 'table'"):
        specs.spec_from_dict({**obj, "select_values": {"config.fedlog.beta": [0.1]}})
