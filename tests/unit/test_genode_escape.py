"""genode_wire's own XML escape: saxutils' results without importing xml.sax.

The fake Genode dom0 runs in the guest, whose image ships exactly the stdlib modules its
sources import: ``xml.sax.saxutils`` pulled in urllib.request, email and http (0.4 MB of
initrd the kernel unpacks at every boot).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape as sax_escape

import pytest

from farm.session import genode_wire


@pytest.mark.parametrize(
    "text", ["", "plain", "a<b>&c", "&amp;", '"quoted" & <tag attr="x">', "<<>>&&", "ünï<code>"]
)
def test_escape_matches_saxutils(text: str) -> None:
    assert genode_wire.escape(text) == sax_escape(text)


def test_attribute_values_escape_quotes_like_saxutils() -> None:
    value = 'say "hi" & <bye>'
    assert genode_wire._attr(value) == '"' + sax_escape(value, {'"': "&quot;"}) + '"'
    doc = genode_wire.render_xml({"config": {"@name": 'a"b<c', "#text": "x&y"}})
    assert 'name="a&quot;b&lt;c"' in doc and ">x&amp;y<" in doc


def test_genode_wire_imports_no_xml_sax() -> None:
    code = (
        "import sys, farm.session.genode_wire; print(sorted(m for m in sys.modules"
        " if m.startswith(('xml.sax', 'urllib.request', 'email', 'http'))))"
    )
    root = Path(genode_wire.__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"
