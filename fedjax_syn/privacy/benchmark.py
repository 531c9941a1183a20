"""The privacy benchmark: every algorithm of each benchmark config at every noise level, trained,
audited (`audit.py`) and appended to a ledger, then the table and the figure (`report.py`).

A privacy config holds `benchmarks` (name -> a run config whose grid lists its runs),
`clip` (name -> the `dp` bounds of that benchmark), `noise_multipliers` (0: the algorithm without
DP, its run unchanged) and `audit` (`AuditOptions`). A rerun skips the runs its ledger holds
audited with the same options.
"""

import dataclasses
import pathlib

import ml_collections

from fedjax_syn.core.errors import check
from fedjax_syn.privacy import audit, report
from fedjax_syn.runs import grid, validate
from fedjax_syn.runs.config import run_id
from fedjax_syn.runs.ledger import append_record, read_ledger


def runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """Every run of the benchmark, validated: each grid point at each noise level."""
    out = []
    for name, base in config.benchmarks.items():
        check(name in config.clip, f"privacy config: benchmark {name!r} has no clip entry")
        for point in grid.grid_configs(base):
            for sigma in config.noise_multipliers:
                cfg = point.copy_and_resolve_references()
                if sigma > 0:
                    for field, value in {**config.clip[name], "noise_multiplier": sigma}.items():
                        grid.set_field(cfg, f"dp.{field}", value)
                validate.validate_run(cfg)
                out.append(cfg)
    return out


def audit_options(config: ml_collections.ConfigDict) -> audit.AuditOptions:
    raw = config.get("audit") or {}
    return audit.AuditOptions(**(raw.to_dict() if hasattr(raw, "to_dict") else raw))


def run_benchmark(
    config: ml_collections.ConfigDict, ledger: str, out: str, log=print
) -> list[pathlib.Path]:
    """Audits every run not yet in `ledger`, then writes the table and figure under `out`."""
    options = audit_options(config)
    planned = runs(config)
    wanted = dataclasses.asdict(options)
    held = {}
    if pathlib.Path(ledger).exists():
        for record in read_ledger(ledger):
            if record.get("privacy", {}).get("audit") == wanted:
                held[record["run_id"]] = record
    records = []
    for i, cfg in enumerate(planned):
        rid = run_id(cfg)
        if rid not in held:
            held[rid] = audit.audit(cfg, options)
            append_record(ledger, held[rid])
            p = held[rid]["privacy"]
            log(
                f"[{i + 1}/{len(planned)}] {cfg.dataset} {cfg.algorithm} "
                f"sigma={p['noise_multiplier']} ({held[rid]['wall_time_s']:.0f} s + audit "
                f"{p['audit_time_s']:.0f} s)"
            )
        records.append(held[rid])
    return report.write(records, pathlib.Path(out), source=ledger)
