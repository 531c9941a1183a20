"""The privacy table and figure, from audited ledger records alone: accuracy in every setting
beside what the shared uploads give away, per dataset, algorithm and noise level."""

import math
import pathlib
from collections.abc import Sequence

from fedjax_syn.runs.ledger import write_atomic
from fedjax_syn.runs.records import SETTING_LABELS

# (record key under "privacy", column title); missing: the measure does not apply.
MEASURES = (
    ("loss_auc", "MIA loss"),
    ("lira_auc", "MIA LiRA"),
    ("distance_auc", "MIA dist."),
    ("dcr_median", "DCR ratio"),
    ("dcr_closer", "closer"),
    ("dcr_train_share", "train share"),
    ("global_distance_auc", "MIA global dist."),
    ("global_dcr_median", "global DCR ratio"),
    ("global_dcr_train_share", "global train share"),
    ("inversion_ssim", "inv. SSIM"),
    ("inversion_ssim_max", "inv. SSIM max"),
    ("inversion_train_share", "inv. train share"),
    ("shared_ssim", "syn. SSIM"),
    ("real_ssim", "real SSIM"),
)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _epsilon(value: float | None) -> str:
    if value is None:
        return "inf"
    return f"{value:.3g}" if value < 1e4 else f"{value:.1e}"


def _noise(record: dict) -> float:
    return record["privacy"]["noise_multiplier"] or 0.0


def ordered(records: Sequence[dict]) -> list[dict]:
    """Records by dataset (first seen), algorithm (first seen), then noise level."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    algorithms = list(dict.fromkeys(r["algorithm"] for r in records))
    return sorted(
        records,
        key=lambda r: (
            datasets.index(r["dataset"]),
            algorithms.index(r["algorithm"]),
            _noise(r),
        ),
    )


def max_membership_auc(privacy: dict) -> float | None:
    """The strongest membership attack's AUC (the best of loss, LiRA and the two distance
    attacks)."""
    attacks = ("loss_auc", "lira_auc", "distance_auc", "global_distance_auc")
    values = [privacy.get(k) for k in attacks]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _accuracy(record: dict, setting: str) -> str:
    """Best-validation / last-round accuracy. Both matter under DP: the best round can be an
    early one (graph FedLoG's round 0 is local training, before any noised upload is read)."""
    return f"{_number(record['best'].get(setting))} / {_number(record['last'].get(setting))}"


def to_markdown(records: Sequence[dict]) -> str:
    """One table per dataset: accuracy of the personalised models (best-validation / last
    round) and the privacy measures of the audited upload."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in ordered(records) if r["dataset"] == dataset]
        settings = rows[0]["settings"]
        measures = [m for m in MEASURES if any(r["privacy"].get(m[0]) is not None for r in rows)]
        header = [
            "algorithm",
            "sigma",
            "epsilon",
            *(SETTING_LABELS.get(s, s) for s in settings),
            *(title for _, title in measures),
        ]
        lines = [
            f"### {dataset} (K = {rows[0]['protocol']['num_clients']}, "
            f"{rows[0]['config']['rounds']} rounds, seed {rows[0]['seed']})",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
        ]
        for r in rows:
            p = r["privacy"]
            cells = [
                r["algorithm"],
                _number(_noise(r), 1) if p["noise_multiplier"] is not None else "none",
                _epsilon(p["epsilon"]),
                *(_accuracy(r, s) for s in settings),
                *(_number(p.get(key)) for key, _ in measures),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def plot(records: Sequence[dict], path: pathlib.Path) -> None:
    """Last-round accuracy in each setting (columns) against the strongest membership attack's
    AUC, one row per dataset; a line per algorithm through its noise levels, each point labelled
    by sigma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    algorithms = list(dict.fromkeys(r["algorithm"] for r in records))
    width = max(len(r["settings"]) for r in records)
    fig, axes = plt.subplots(
        len(datasets), width, figsize=(3.2 * width, 3.0 * len(datasets)), squeeze=False
    )
    colours = {a: f"C{i}" for i, a in enumerate(algorithms)}
    for row, dataset in enumerate(datasets):
        rows = [r for r in ordered(records) if r["dataset"] == dataset]
        for col, setting in enumerate(rows[0]["settings"]):
            ax = axes[row, col]
            for algorithm in algorithms:
                points = [
                    (max_membership_auc(r["privacy"]), r["last"].get(setting), _noise(r))
                    for r in rows
                    if r["algorithm"] == algorithm
                ]
                points = [p for p in points if p[0] is not None and p[1] is not None]
                if not points:
                    continue
                xs, ys, _ = zip(*points)
                ax.plot(xs, ys, "o-", color=colours[algorithm], label=algorithm, alpha=0.8)
                for x, y, s in points:
                    ax.annotate(
                        f"{s:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            ax.axvline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{dataset}: {SETTING_LABELS.get(setting, setting)}", fontsize=9)
            ax.set_xlabel("best membership AUC", fontsize=8)
            if col == 0:
                ax.set_ylabel("accuracy (last round)", fontsize=8)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(records: Sequence[dict], out: pathlib.Path, source: str) -> list[pathlib.Path]:
    """privacy.md and privacy.png under `out`; returns their paths."""
    text = (
        "# What clients share: privacy audit\n\n"
        f"Generated from `{source}` by `python -m experiments.main --mode=privacy`.\n"
        "sigma: DP noise multiplier (none: the algorithm without DP); epsilon at the records' "
        "delta over every upload the attacker saw. Accuracies: personalised models, "
        "best-validation round / last round. MIA: membership AUC (0.5 = chance); DCR ratio: median "
        "distance of a shared synthetic example to its closest training record over the "
        "median real-to-real nearest distance; closer: share of synthetic examples nearer "
        "their closest record than any other real record is; train share: share of synthetic "
        "examples nearer the training than the held-out records (equal-size subsamples; 0.5: "
        "no memorisation); global: the distance attack, DCR ratio and train share of FedLoG's "
        "global synthetic set (the server's blend, sent to every client) against the union of "
        "all clients' records; SSIM: images' similarity to their most similar training image (inv.: "
        "gradient inversion of client 0's update, mean and best dummy, and the dummies' train "
        "share; syn.: the shared synthetic images; real: a held-out image's, the reference). "
        "A measure that applies to no run of a dataset is left out of its table.\n\n"
        + to_markdown(records)
    )
    md, png = out / "privacy.md", out / "privacy.png"
    write_atomic(md, text)
    plot(records, png)
    return [md, png]
