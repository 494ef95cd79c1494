"""bench/tcg_origin.py: the blocks of a QEMU ``in_asm`` log, split by where their code lives."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "tcg_origin.py"

#: QEMU 7.2's ``log in_asm`` format: a separator, ``IN:`` and a symbol (empty when the
#: kernel is stripped), then each instruction of the block
LOG = """----------------
IN:
0xffffffff810a199b:  eb 25                    jmp      0xffffffff810a19c2

----------------
IN:
0x00000000004f1a20:  48 89 df                 movq     %rbx, %rdi
0x00000000004f1a23:  e8 91 c1 ff ff           callq    0x4edbb9

----------------
IN: some_symbol
0x00007f0acf012340:  c3                       retq

----------------
IN:
0x0000000000401000:  90                       nop
""".replace("IN:\n", "IN: \n")  # QEMU writes "IN: " with its space


@pytest.fixture(scope="module")
def origin() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_tcg_origin", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_tcg_origin"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_block_starts_are_each_blocks_first_address(origin: ModuleType) -> None:
    starts = origin.block_starts(LOG)
    assert starts == [0xFFFFFFFF810A199B, 0x4F1A20, 0x7F0ACF012340, 0x401000]


def test_origins_split_kernel_programs_and_libraries(origin: ModuleType) -> None:
    assert origin.origins(origin.block_starts(LOG)) == {
        "kernel": 1,
        "user_low": 2,
        "user_high": 1,
    }
    assert origin.origins([]) == {"kernel": 0, "user_low": 0, "user_high": 0}
