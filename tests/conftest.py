"""Shared fixtures. Real-data tests fail (never skip) when the data directory is missing."""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

# One compilation cache for the whole session, made by the first process that loads this file
# (pytest-xdist's controller) and inherited through the environment by its workers and by the
# processes tests start: a program one of them compiled, another loads instead of compiling it
# again (about a fifth of the suite's CPU time on the 2-core machine). Set before anything
# imports JAX; a JAX_COMPILATION_CACHE_DIR already set is used as it is, and kept.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedjax_syn_tests_jax_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the suite's are all small

from fedjax_syn.runs.allocator import keep_freed_memory  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

# The suite compiles hundreds of small XLA programs and runs each a few times, which such short
# runs never pay back. Two XLA:CPU settings make compiling cheaper and compute the same functions
# (no fast-math either way):
# - LLVM optimisation level 0: the programs compile 2-3x faster;
# - XLA's older elemental emitter for fusions instead of its MLIR fusion emitters, which run a
#   pass pipeline per fusion (about 15 ms each; FedLoG's setup program has about 600 fusions):
#   the tiny FedLoG setup program compiles in 7 s instead of 18, tests/test_fedlog.py takes 116 s
#   of CPU instead of 170. At the optimisation level runs use it changes neither their compile
#   time nor their speed (Cora FedLoG, 10 rounds), so the run pipeline keeps XLA's default.
# Set here, before anything starts a JAX backend, and inherited by the subprocesses tests start.
# A setting XLA_FLAGS already makes is left alone.
for _flag, _value in (
    ("xla_backend_optimization_level", "0"),
    ("xla_cpu_use_fusion_emitters", "false"),
):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()


# As every entry point does (experiments/cli.py): large XLA buffers reuse mapped memory.
keep_freed_memory()


def pytest_sessionfinish(session):
    """The process that made the session's compilation cache removes it."""
    if _OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The staged datasets folder, from FEDJAX_SYN_DATA_DIR."""
    value = os.environ.get("FEDJAX_SYN_DATA_DIR")
    if not value:
        pytest.fail("FEDJAX_SYN_DATA_DIR is not set; point it at the staged datasets folder")
    path = pathlib.Path(value)
    if not path.is_dir():
        pytest.fail(f"FEDJAX_SYN_DATA_DIR={value} is not a directory")
    return path


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def multi_device(tmp_path_factory) -> dict:
    """The results of tests/multi_device.py, every check that needs several (8 emulated CPU)
    devices, computed in one subprocess for the whole session: under pytest-xdist the workers
    share one run through a file in their common temporary folder."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by every worker of this session
    out = root / "multi_device.json"
    with _locked(root / "multi_device.lock"):
        if not out.exists():
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8",
            }
            done = subprocess.run(
                [sys.executable, "-m", "tests.multi_device", str(out)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0 or not out.exists():
                pytest.fail(f"tests/multi_device.py failed:\n{done.stderr[-3000:]}")
        results = _Sections(json.loads(out.read_text()))
    assert results["device_count"] == 8, results["device_count"]
    return results


class _Sections(dict):
    """Check name -> its results; a check that raised fails the test that reads it."""

    def __getitem__(self, name):
        section = super().__getitem__(name)
        if isinstance(section, dict) and "error" in section:
            pytest.fail(f"multi-device check {name!r} raised:\n{section['error']}")
        return section
