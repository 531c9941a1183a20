"""Regenerates paper-style tables from the results ledger (Markdown and/or LaTeX).

Usage:
  python scripts/make_tables.py --ledger=runs/ledger.jsonl --spec=vision --format=both --out=tables/
  python scripts/make_tables.py --ledger=runs/ledger.jsonl --seeds=0,1,2 \
      --spec='{"name": "digits", "filters": {"dataset": "digits"},
               "rows": ["protocol.alpha", "algorithm"], "settings": ["seen", "global"],
               "expected_rows": {"protocol.alpha": [0.1, 1.0], "algorithm": ["fedavg", "local"]}}'

--spec is a named spec (vision, graph, condense), an inline JSON object or a JSON file
(fields: fedjax_syn.tables.spec_from_dict). Tables go to stdout; with --out they are also written,
atomically, to OUT/<name>.md and OUT/<name>.tex. Bad flags or input print one line
`error: ...` and exit with status 2.
"""

import dataclasses
import pathlib

from absl import flags

from fedjax_syn import cli, tables
from fedjax_syn.core.errors import UserError
from fedjax_syn.results import read_ledger, write_atomic

_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_SPEC = flags.DEFINE_string(
    "spec", "vision", f"Named spec ({', '.join(tables.NAMED_SPECS)}), inline JSON or a JSON file."
)
_FORMAT = flags.DEFINE_enum("format", "md", ["md", "latex", "both"], "Output format(s).")
_OUT = flags.DEFINE_string("out", None, "Folder to write <name>.md / <name>.tex into.")
_SEEDS = flags.DEFINE_list(
    "seeds", None, "Expected seeds (e.g. 0,1,2): restricts the query and reports missing runs."
)


def main(argv: list[str]) -> None:
    del argv
    try:
        spec = tables.resolve_spec(_SPEC.value)
        if _SEEDS.value is not None:
            try:
                seeds = tuple(int(s) for s in _SEEDS.value)
            except ValueError:
                raise UserError(f"--seeds must be integers, got {_SEEDS.value}") from None
            spec = dataclasses.replace(spec, seeds=seeds)
        table = tables.build_table(read_ledger(_LEDGER.value), spec, source=_LEDGER.value)
    except UserError as e:
        cli.fail(str(e))
    rendered = {}
    if _FORMAT.value in ("md", "both"):
        rendered["md"] = tables.to_markdown(table)
    if _FORMAT.value in ("latex", "both"):
        rendered["tex"] = tables.to_latex(table)
    for text in rendered.values():
        print(text)
    if _OUT.value:
        for suffix, text in rendered.items():
            path = pathlib.Path(_OUT.value) / f"{spec.name}.{suffix}"
            write_atomic(path, text)
            print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
