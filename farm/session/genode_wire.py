"""Wire format of the Genode dom0 Taskloader (shared by GenodeSession and FakeDom0Server).

Byte order: **little-endian**, every integer a uint32. taskgen (the reference
client) packed its words with struct's *native* order (``'I'``, ``'II'``,
``'15scI'``) and decoded the target's words with ``int.from_bytes(b, 'little')``;
its hosts (x86) and Genode's targets (ARM realview-pbx-a9, x86) are all
little-endian, so native meant little-endian in practice. farm spells it out
(``'<'``) so that the bytes do not depend on the host. The binary header
``'<15scI'`` is the 15-byte name, a NUL, and the size: 20 bytes, identical to
taskgen's native layout (the uint32 is already 4-aligned at offset 16).

Client -> target::

    CLEAR                                   stop and forget all tasks
    OPTIMIZE      len  <xml>                admission-control goal
    SEND_DESCS    len  <taskset>...         task descriptions
    SEND_BINARIES count                     then per binary: target sends GO_SEND,
                  name[15] NUL size bytes   client sends header and the file
    START / STOP                            start or stop the queued tasks
    AVAILABLE                               target echoes AVAILABLE
    REBOOT                                  the target reboots (drops the connection)

Target -> client, any time after START: ``len`` + ``<profile><events><event
task-id=".." type=".." time-stamp=".."/>...</events></profile>`` (ASCII, maybe
NUL-padded; time stamps in ms).
"""

from __future__ import annotations

import re
import socket
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

from farm.errors import ConfigError, ProtocolError

WORD = struct.Struct("<I")
BINARY_HEADER = struct.Struct("<15scI")
NAME_FIELD = 15
#: Largest profile or XML document accepted from a peer.
MAX_MESSAGE = 16 * 1024 * 1024


class Command(IntEnum):
    """Magic numbers of the Taskloader protocol."""

    SEND_DESCS = 0xDE5
    CLEAR = 0xDE6
    SEND_BINARIES = 0xDE5F11E
    GO_SEND = 0x90
    START = 0x514DE5
    STOP = 0x514DE6
    OPTIMIZE = 0x6F7074
    AVAILABLE = 0xAAAAA
    REBOOT = 0x159D3


def word(value: int) -> bytes:
    """One little-endian uint32."""
    return WORD.pack(value)


def binary_header(name: str, size: int) -> bytes:
    """The 20-byte header before a binary: 15-byte name (NUL padded), NUL, uint32 size."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"binary name {name!r} is not ASCII") from exc
    if not raw or len(raw) > NAME_FIELD or b"\0" in raw:
        raise ConfigError(f"binary name {name!r} must be 1..{NAME_FIELD} ASCII characters")
    return BINARY_HEADER.pack(raw, b"\0", size)


def parse_binary_header(data: bytes) -> tuple[str, int]:
    """Inverse of binary_header(); ProtocolError unless ``data`` is exactly 20 bytes."""
    if len(data) != BINARY_HEADER.size:
        raise ProtocolError(f"binary header of {len(data)} bytes, expected {BINARY_HEADER.size}")
    raw, _nul, size = BINARY_HEADER.unpack(data)
    return raw.rstrip(b"\0").decode("ascii", "replace"), size


# -- XML -----------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


#: An XML name farm writes: ASCII letter or _, then letters, digits, _ . - (no ':', no "xml...").
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def xml_name(name: object) -> str:
    """``name`` if it is safe as an XML tag or attribute name; ConfigError otherwise.

    Task keys and config keys become element names: one like ``a><b`` or
    ``x y`` would change the document's structure, so it is refused.
    """
    text = str(name)
    if not _XML_NAME.fullmatch(text) or text[:3].lower() == "xml":
        raise ConfigError(
            f"{text!r} cannot be a Genode XML element or attribute name "
            "(use ASCII letters, digits, '_', '.', '-', starting with a letter or '_')"
        )
    return text


def escape(text: str) -> str:
    """``&``, ``<``, ``>`` as entities, as ``xml.sax.saxutils.escape`` does (which would pull
    urllib, email and http into the guest image, where the fake dom0 runs)."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


def _attr(value: Any) -> str:
    """A double-quoted attribute value (Genode's parser knows no single quotes)."""
    return '"' + escape(_text(value)).replace('"', "&quot;") + '"'


def _element(tag: str, value: Any, out: list[str]) -> None:
    if isinstance(value, list | tuple):
        for item in value:
            _element(tag, item, out)
        return
    if isinstance(value, Mapping):
        tag = xml_name(tag)
        attrs = "".join(
            f" {xml_name(k[1:])}={_attr(v)}" for k, v in value.items() if str(k).startswith("@")
        )
        out.append(f"<{tag}{attrs}>")
        for key, child in value.items():
            if key == "#text":
                out.append(escape(_text(child)))
            elif not str(key).startswith("@"):
                _element(str(key), child, out)
        out.append(f"</{tag}>")
        return
    tag = xml_name(tag)
    out.append(f"<{tag}>{escape(_text(value))}</{tag}>")


def render_xml(document: Mapping[str, Any]) -> str:
    """A dict as XML without declaration (Genode rejects ``<?xml ...?>``).

    Like taskgen's xmltodict.unparse(full_document=False), but compact: keys
    become elements, nested dicts nested elements, lists repeated elements,
    ``@key`` attributes and ``#text`` text.
    """
    out: list[str] = []
    for tag, value in document.items():
        _element(str(tag), value, out)
    return "".join(out)


def description_xml(tasks: Iterable[Mapping[str, Any]]) -> str:
    """``<taskset><periodictask>...</periodictask>...</taskset>`` for the task dicts."""
    return render_xml({"taskset": {"periodictask": list(tasks)}})


def _scalar(text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def element_to_dict(element: ET.Element) -> Any:
    """Inverse of render_xml() for one element (numbers become int/float)."""
    children = list(element)
    if not children and not element.attrib:
        return _scalar(element.text)
    out: dict[str, Any] = {f"@{k}": _scalar(v) for k, v in element.attrib.items()}
    for child in children:
        value = element_to_dict(child)
        if child.tag in out:
            previous = out[child.tag]
            out[child.tag] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[child.tag] = value
    return out


def parse_xml(data: bytes | str) -> ET.Element:
    """Parse an XML document sent over the wire (NULs dropped); ProtocolError if malformed."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    try:
        return ET.fromstring(text.replace("\0", ""))
    except ET.ParseError as exc:
        raise ProtocolError(f"malformed XML from Genode peer: {exc}: {text[:200]!r}") from exc


# -- profiles ------------------------------------------------------------------------

ProfileEvent = tuple[int, str, int]
"""(task id, event type, time stamp in ms) as carried by a profile."""


def profile_xml(events: Iterable[ProfileEvent]) -> str:
    """The target's profile document for some events."""
    body = "".join(
        f'<event task-id="{task_id}" type={_attr(kind)} time-stamp="{stamp}"/>'
        for task_id, kind, stamp in events
    )
    return f"<profile><events>{body}</events></profile>"


def parse_profile(payload: bytes) -> list[ProfileEvent]:
    """Events of one profile message: one ``<event>`` or many (or none)."""
    text = payload.decode("ascii", "replace").replace("\0", "")
    end = text.find("</profile>")
    if end >= 0:  # like taskgen: ignore anything the target wrote after the document
        text = text[: end + len("</profile>")]
    root = parse_xml(text)
    if root.tag != "profile":
        raise ProtocolError(f"expected <profile>, got <{root.tag}>")
    events: list[ProfileEvent] = []
    for node in root.iter("event"):
        try:
            events.append(
                (
                    int(node.attrib["task-id"]),
                    node.attrib["type"],
                    int(float(node.attrib["time-stamp"])),
                )
            )
        except (KeyError, ValueError, OverflowError) as exc:  # inf time stamp: OverflowError
            raise ProtocolError(f"malformed profile event {node.attrib!r}") from exc
    return events


class MessageDecoder:
    """Incremental decoder of ``uint32 length + payload`` messages (any recv boundaries)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete payload."""
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= WORD.size:
            (length,) = WORD.unpack_from(self._buf)
            if length > self._max:
                raise ProtocolError(f"Genode message of {length} bytes exceeds {self._max}")
            if len(self._buf) < WORD.size + length:
                break
            out.append(bytes(self._buf[WORD.size : WORD.size + length]))
            del self._buf[: WORD.size + length]
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete message."""
        return len(self._buf)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; ConnectionError if the peer closes first."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)
