"""`meddx.memory`: with the tuned allocator, freed film-sized buffers go back to the system (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import ctypes, sys
from meddx.memory import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096
libc.free(libc.malloc(20 << 20))  # glibc's default raises its mmap threshold to 20 MB here
before = rss()
blocks = [libc.malloc(16 << 20) for _ in range(9)]
for block in blocks:
    ctypes.memset(block, 1, 16 << 20)
for block in blocks[:-1]:  # the last one stays: a heap cannot shrink past a block in use
    libc.free(block)
print((rss() - before) >> 20)
"""


def _kept_mb(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_film_sized_buffers_are_returned_to_the_system_once_tuned():
    assert _kept_mb("default") >= 120  # 8 x 16 MB freed, still resident: what the server used to keep
    assert _kept_mb("tuned") <= 24  # the block still in use
