"""Rewrites the generated tables of BENCHMARKS.md from benchmarks/results/*.json.

A generated table sits between `<!-- generated:NAME -->` and `<!-- /generated -->`, NAME being a
results file's name; only those sections are rewritten, so the prose around them stays. A marker
with no results file is left as it is and reported, as is a results file with no marker.

    python -m benchmarks.report
"""

import pathlib
import re

from absl import flags

from benchmarks import harness, tables
from experiments import cli
from fedjax_syn.runs.ledger import write_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]

_DOC = flags.DEFINE_string("doc", str(REPO / "BENCHMARKS.md"), "The file to rewrite.")
_RESULTS = flags.DEFINE_string("results", str(harness.RESULTS_DIR), "Folder of results files.")

SECTION = re.compile(
    r"(?P<open><!-- generated:(?P<name>[\w.-]+) -->\n).*?(?P<close><!-- /generated -->)", re.S
)


def markers(text: str) -> list[str]:
    """The names of the generated sections of `text`, in order."""
    return [m["name"] for m in SECTION.finditer(text)]


def rewrite(text: str, generated: dict[str, str]) -> str:
    """`text` with the body of each section named in `generated` replaced; all else unchanged."""

    def body(m: re.Match) -> str:
        if m["name"] not in generated:
            return m[0]
        return f"{m['open']}{generated[m['name']].rstrip()}\n{m['close']}"

    return SECTION.sub(body, text)


def load_tables(directory: pathlib.Path) -> dict[str, str]:
    """Every results file of `directory` rendered, by name."""
    return {
        path.stem: tables.render(harness.read_result(path))
        for path in sorted(directory.glob("*.json"))
    }


def main(argv: list[str]) -> None:
    del argv
    doc = pathlib.Path(_DOC.value)
    if not doc.is_file():
        cli.fail(f"no such file: {doc}")
    text = doc.read_text(encoding="utf-8")
    generated = load_tables(pathlib.Path(_RESULTS.value))
    names = markers(text)
    new = rewrite(text, generated)
    if new != text:
        write_atomic(doc, new)
    print(f"{doc}: {len([n for n in names if n in generated])} generated sections rewritten")
    for name in names:
        if name not in generated:
            print(f"  no results file for the section {name!r}; left as it is")
    for name in generated:
        if name not in names:
            print(f"  results file {name!r} has no section (add <!-- generated:{name} -->)")


if __name__ == "__main__":
    cli.run(main)
