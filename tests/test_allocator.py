"""The allocator setting: freed large buffers stay mapped, so allocating one again touches no new
pages. Counted in page faults (getrusage), in fresh processes with and without the setting."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

_CHILD = """
import resource, sys
import numpy as np
from fedjax_syn.runs.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
def touch():  # 64 MiB, every page written, then freed
    a = np.ones(8 << 20)
    del a
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, setting],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_buffers_are_reused_without_page_faults():
    huge_pages = (64 << 20) // (2 << 20)  # the fewest faults one fresh 64 MiB mapping can take
    applied, faults_on = _faults("on")
    assert applied == "True"
    assert faults_on < huge_pages, faults_on  # the heap already holds the pages
    _, faults_off = _faults("off")
    assert faults_off >= 5 * huge_pages, faults_off  # five fresh mappings, faulted in again
