"""Markdown tables from results files (benchmarks/results/*.json), one renderer per kind.

Every table comes with a caption naming the machine, its load and the command that produced the
figures, so a table never travels without what it was measured on.
"""

from collections.abc import Callable
from typing import Any

Record = dict[str, Any]


def seconds(x: float | None) -> str:
    """Seconds with a precision that suits their size."""
    if x is None:
        return "-"
    return f"{x:.1f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def caption(record: Record) -> str:
    m = record.get("machine", {})
    load = (
        f"load average {record['load_start']:.1f} at the start, " if "load_start" in record else ""
    )
    load += f"{m.get('load_average', float('nan')):.1f} at the end"
    used = m.get("cores_usable")
    cores = f"{m.get('cores')} cores" + (f" ({used} usable)" if used != m.get("cores") else "")
    versions = ", ".join(
        f"{lib} {m[lib]}" for lib in ("jax", "jaxlib", "flax", "optax") if lib in m
    )
    quick = " Quick variant." if record.get("quick") else ""
    return (
        f"*Generated from `benchmarks/results/{record['name']}.json` ({record.get('date', '?')}):"
        f" `{record.get('command', '?')}`. {m.get('cpu', '?')}, {cores}, {load}; {versions}; "
        f"{m.get('backend', '?')} backend, {m.get('devices', '?')}.{quick}*"
    )


def rounds_table(record: Record) -> str:
    """One line per (setup, layout): time, ratio to the loop, share of the matmul peak."""
    sources = sorted({config["flops"]["source"] for config in record["configs"]})
    lines = [
        f"Matmul peak in this run: {record['peak_gflops']:.1f} GFLOP/s "
        f"({record['peak_size']}² f32 matmul, median); round FLOPs by {' and '.join(sources)}. "
        "`vs loop` = the faster loop's median / this layout's; `diff` = max |server − loop's server| / "
        "max |loop's server| after the same rounds.",
        "",
        "| setup | clients | layout | median ms | min ms | max ms | first call s | vs loop "
        "| GFLOP/s | % of peak | diff |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in record["configs"]:
        setup = config["setup"]
        for mode, r in config["modes"].items():
            lines.append(
                f"| {setup['description']} | {setup['clients']} | {mode} "
                f"| {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} | {r['max_s'] * 1e3:.1f} "
                f"| {r['first_s']:.2f} | {r['vs_loop']:.2f}x | {r['gflops']:.2f} "
                f"| {100 * r['peak_frac']:.1f} | {r['diff_vs_loop']:.0e} |"
            )
    for config in record["configs"]:
        fastest = config.get("fastest_layout")
        if fastest:
            ratio = config["modes"][fastest]["vs_loop"]
            lines.append(
                f"\nFastest engine layout, {config['setup']['description']}: {fastest}, "
                f"{ratio:.2f}x the loop (what a run with `client_chunk=-1` measures and picks)."
            )
    return "\n".join(lines)


def _run_rows(record: Record) -> list[tuple[str, str]]:
    ev = record["evaluation"]
    round0 = "setup round, all clients" if record["setup_round"] else "initial states"
    per_round = record["rounds_s"] / max(record["rounds"], 1)
    return [
        ("data preparation", seconds(record["data_s"])),
        ("compilation (start and round programs)", seconds(record["compile_s"])),
        (f"round 0 ({round0})", seconds(record["round0_s"])),
        (
            f"{plural(record['rounds'], 'round')} incl. evaluation (per round)",
            f"{seconds(record['rounds_s'])} ({seconds(per_round)})",
        ),
        (
            f"evaluation alone, own program: median of {ev['repeats']} "
            f"(x {record['evaluated_rounds']} evaluated rounds)",
            f"{seconds(ev['median_s'])} ({seconds(ev['median_s'] * record['evaluated_rounds'])})",
        ),
        ("**run, compilation included**", f"**{seconds(record['run_s'])}**"),
        *_versus_rows(record),
    ]


def _versus_rows(record: Record) -> list[tuple[str, str]]:
    """The round without evaluation, in the run's layout and as the per-client loop."""
    versus = record.get("round_vs_loop")
    if versus is None:
        return []
    repeats = versus["engine"]["repeats"]
    return [
        (
            f"one round without evaluation, run's layout: median of {repeats}",
            seconds(versus["engine"]["median_s"]),
        ),
        (
            f"the same round as the per-client loop: median of {repeats} "
            f"(run's layout {versus['vs_loop']:.2f}x the loop; servers {versus['diff_vs_loop']:.0e} apart)",
            seconds(versus["loop"]["median_s"]),
        ),
    ]


def _part_table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| part | seconds |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)]


def _run_lines(record: Record) -> list[str]:
    c = record["config"]
    last = ", ".join(
        f"{k} {v:.4f}"
        for k, v in record["last"].items()
        if v is not None and not k.startswith("train_")
    )
    return [
        f"{c['algorithm']} on {c['dataset']}, K = {c['num_clients']}, {plural(c['rounds'], 'round')} "
        f"(client_chunk {c['client_chunk']}). Peak RSS {record['peak_rss_mib']:.0f} MiB "
        f"({record['data_rss_mib']:.0f} MiB after the data). Last round: {last}.",
        "",
    ]


def run_table(record: Record) -> str:
    """One run part by part."""
    return "\n".join([*_run_lines(record), *_part_table(_run_rows(record))])


def fedlog_table(record: Record) -> str:
    """A FedLoG run part by part, with round 0's parts re-timed as their own programs."""
    rows = _run_rows(record)
    for i, (name, part) in enumerate(record.get("round0_parts", {}).items()):
        rows.insert(3 + i, (f"of which {name} (own program)", seconds(part["run_s"])))
    if "experiment_run_s" in record:
        rows.append(("`runs.program.run` of the same config", seconds(record["experiment_run_s"])))
    lines = [*_run_lines(record), *_part_table(rows)]
    if record.get("encoder_epochs"):
        lines += ["", f"Encoder pretraining epochs per client: {record['encoder_epochs']}."]
    flops = record.get("generator_flops")
    if flops:
        epochs = record["config"]["fedlog"]["gen_epochs"]
        total = flops["bank"] + epochs * flops["epoch"]
        run_s = record["round0_parts"]["generator pretraining"]["run_s"]
        lines.append(
            f"Generator pretraining: {flops['epoch'] / 1e9:.1f} GFLOP per epoch (all clients) + "
            f"{flops['bank'] / 1e9:.1f} GFLOP of real-graph gradients = "
            f"{total / run_s / 1e9:.1f} GFLOP/s against a matmul peak of "
            f"{record['matmul_peak_gflops']:.1f} GFLOP/s."
        )
    return "\n".join(lines)


def graph_table(record: Record) -> str:
    """One line per (dataset, K, layout), each measured in its own process."""
    lines = [
        "| dataset | K | nodes / edges per client (pad) | steps (scan / busiest / sum) | mode "
        "| round s (median, min) | round CPU s | eval s (median, min) | eval CPU s "
        "| first round s | peak RSS MiB (data) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['K']} | {r['nodes_pad']} / {r['edges_pad']} "
            f"| {r['scan_steps']} / {r['active_steps']} / {r['client_steps']} | {r['mode']} "
            f"| {seconds(r['round']['median_s'])}, {seconds(r['round']['min_s'])} "
            f"| {seconds(r['round']['cpu_median_s'])} "
            f"| {seconds(r['eval']['median_s'])}, {seconds(r['eval']['min_s'])} "
            f"| {seconds(r['eval']['cpu_median_s'])} | {seconds(r['round']['first_s'])} "
            f"| {r['peak_rss_mib']:.0f} ({r['data_rss_mib']:.0f}) |"
        )
    return "\n".join(lines)


def _giga(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e9:.1f}"


def _rate(flops: float | None, median_s: float, peak_gflops: float | None) -> tuple[str, str]:
    """GFLOP/s and % of the matmul peak ('-' where a figure is missing)."""
    if flops is None:
        return "-", "-"
    rate = flops / median_s / 1e9
    return f"{rate:.1f}", "-" if not peak_gflops else f"{100 * rate / peak_gflops:.0f}"


def condense_table(record: Record) -> str:
    """One line per (ipc, convolution, program), each in its own process."""
    lines = [
        f"ConvNet width {record['width']}, `batch_real` {record['batch_real']}; data: "
        f"{record['data']}.",
        "",
        "| ipc | conv | program | compile + 1st call s | median s | XLA GFLOP | GFLOP/s "
        "| % of peak | peak RSS MiB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    peaks = {}
    for r in record["rows"]:
        rate, share = _rate(r.get("flops"), r["median_s"], r.get("peak_gflops"))
        peaks[r["ipc"], r["conv"]] = r.get("peak_gflops")
        lines.append(
            f"| {r['ipc']} | {r['conv']} | {r['variant']} | {seconds(r['first_s'])} "
            f"| {seconds(r['median_s'])} | {_giga(r.get('flops'))} | {rate} | {share} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    composed = [
        f"ipc {c['ipc']}, {c['conv']}, classes {c['batching']}: {seconds(c['seconds'])} s"
        + (
            " ({} GFLOP by XLA's count, {} GFLOP/s, {}% of peak)".format(
                _giga(c["flops"]),
                *_rate(c["flops"], c["seconds"], peaks.get((c["ipc"], c["conv"]))),
            )
            if c.get("flops")
            else ""
        )
        for c in record["composed"]
    ]
    if composed:
        lines += ["", "Iteration composed from the parts: " + "; ".join(composed) + "."]
    if any(r.get("flops_from_parts") for r in record["rows"]):
        lines += [
            "",
            "The `iteration` row is the whole `gm_iteration` timed as one program, classes "
            "batched as a run batches them; its GFLOP are the composition's (XLA counts a loop "
            "body once).",
        ]
    mapped = [r for r in record["rows"] if r["variant"].endswith("_map")]
    if any(r.get("flops_from_twin") for r in mapped):
        lines += [
            "",
            "XLA's cost analysis counts a loop body once, so the `_map` rows carry the GFLOP of "
            "the same program with classes vmapped or looped.",
        ]
    if any(not r.get("flops_from_twin") for r in mapped):
        lines += [
            "",
            "XLA's cost analysis counts a `lax.map` body once, so the `_map` rows' GFLOP (and "
            "GFLOP/s, % of peak) without a vmapped or looped twin are one class's.",
        ]
    return "\n".join(lines)


def batched_table(record: Record) -> str:
    """The same runs one after another and batched into one program."""
    lines = [
        f"{record['runs']} {record['dataset']} runs, {record['algorithm']}, "
        f"{record['rounds']} rounds, client_chunk {record['client_chunk']}.",
        "",
        "| mode | wall s | compile s |",
        "|---|---:|---:|",
    ]
    for mode, label in (("sequential", "one run after another"), ("batched", "one program")):
        lines.append(
            f"| {label} | {seconds(record[f'{mode}_s'])} | {seconds(record[f'{mode}_compile_s'])} |"
        )
    lines += [
        "",
        f"Speed-up {record['speedup']:.1f}x; largest difference between the modes' metric "
        f"curves {record['max_curve_difference']:.1e}.",
    ]
    return "\n".join(lines)


def allocator_table(record: Record) -> str:
    """Each layout's median with freed memory returned to the system (off) and kept (on)."""
    lines = [
        "Each setting in its own process, one after the other; `vs loop` with the setting on.",
        "",
        "| workload | setup | layout | off: median ms | on: median ms | speed-up | on: vs loop "
        "| on: % of peak |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        off, on = row["off"], row["on"]
        for layout, m in on["modes"].items():
            before = off["modes"][layout]["median_s"]
            lines.append(
                f"| {row['workload']} | {on['setup']['description']} | {layout} "
                f"| {before * 1e3:.1f} | {m['median_s'] * 1e3:.1f} | {before / m['median_s']:.2f}x "
                f"| {m['vs_loop']:.2f}x | {100 * m['peak_frac']:.1f} |"
            )
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Record], str]] = {
    "rounds": rounds_table,
    "run": run_table,
    "fedlog": fedlog_table,
    "graph": graph_table,
    "condense": condense_table,
    "batched": batched_table,
    "allocator": allocator_table,
}


def render(record: Record) -> str:
    """The caption and table of one results record."""
    return f"{caption(record)}\n\n{RENDERERS[record['kind']](record)}"
