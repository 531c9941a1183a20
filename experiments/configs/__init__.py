"""Experiment configs: one module per table or sweep, each with `get_config()`."""

import importlib
import importlib.util
import pathlib
import pkgutil

import ml_collections

from fedjax_syn.core.errors import check
from fedjax_syn.report import specs


def available() -> list[str]:
    """Config names in this folder (each a module with `get_config`)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def load(table: str) -> tuple[str, ml_collections.ConfigDict]:
    """(name, config) of a table: a config name in this folder, or a config file path."""
    path = pathlib.Path(table)
    if path.suffix == ".py":
        check(path.is_file(), f"config file {table} does not exist")
        spec = importlib.util.spec_from_file_location(f"table_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return path.stem, module.get_config()
    names = available()
    check(table in names, f"unknown table {table!r}; choose one of {', '.join(names)}")
    return table, importlib.import_module(f"{__name__}.{table}").get_config()


def table_spec(text: str) -> specs.TableSpec:
    """The table `--spec` names: a config file's (`.py`, its `table` field, so a sweep and its
    table are defined once), else a named spec, inline JSON or a JSON file."""
    if text.endswith(".py"):
        name, config = load(text)
        return specs.table_spec(config, name)
    return specs.resolve_spec(text)
