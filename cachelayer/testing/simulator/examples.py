"""Example models and history for trying a client against the simulator by hand
(``python -m cachelayer.testing.simulator``) and for the ``cachelayer demo``."""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from cachelayer.testing.simulator.catalogue import ITERATOR_OUTPUT_SCHEMA
from cachelayer.testing.simulator.files import DataURI, File
from cachelayer.testing.simulator.server import ReplicateSimulator

__all__ = ["ExampleCatalogue", "png", "seed_examples"]


def png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` pixels: a gradient that depends on ``seed``."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes(
                ((x * 255 // width + seed * 70) % 256, (y * 255 // height) % 256, (seed * 97 + x + y) % 256)
            )
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class ExampleCatalogue:
    """What :func:`seed_examples` registered: ``refs`` maps each runnable reference
    (``owner/name`` or ``owner/name:version``) to a one-line description; ``history`` holds
    the ids of the seeded past predictions, newest first."""

    refs: dict[str, str]
    history: list[str]


def _painter(inp: dict[str, Any]) -> list[File]:
    n = int(inp.get("num_outputs", 2))
    if not 1 <= n <= 8:
        raise ValueError(f"num_outputs must be between 1 and 8, got {n}")
    base = len(str(inp.get("prompt", "")))
    return [File(png(64, 64, base + i), content_type="image/png", filename=f"out-{i}.png") for i in range(n)]


def seed_examples(sim: ReplicateSimulator, history: int = 8) -> ExampleCatalogue:
    """Register the example models on ``sim`` and seed ``history`` past predictions of
    ``examples/painter`` (alternately created through the API and on the web, one hour
    apart, newest first: API ones older than the simulator's ``data_removal_after`` have
    their data removed, as on Replicate). Returns what was registered.

    * ``examples/painter:<version>``: a community model (create it with its version), PNG
      images, input ``num_outputs`` (1-8, default 2) and ``prompt``.
    * ``examples/official-painter``: an official model (run by name) whose predictions
      report ``version: "hidden"``, one PNG image.
    * ``examples/chat:<version>``: a text model whose output is an iterator of strings.
    * ``examples/thumbnail:<version>``: an object output with a file, a ``data:`` URI and
      plain values.
    * deployment ``examples/painter-prod`` running ``examples/painter``.
    """
    painter = sim.add_model(
        "examples/painter",
        outputs=_painter,
        official=False,
        description="PNG images (example model of the simulator)",
    )
    sim.add_model(
        "examples/official-painter",
        outputs=lambda inp: File(png(64, 64, 7), content_type="image/png", filename="output.png"),
        official=True,
        hidden_version=True,
        description="An official model: run by name; its predictions report version 'hidden'",
    )
    chat = sim.add_model(
        "examples/chat",
        outputs=lambda inp: ["Hello", ", ", str(inp.get("name", "world")), "!"],
        output_schema=ITERATOR_OUTPUT_SCHEMA,
        official=False,
    )
    thumb = sim.add_model(
        "examples/thumbnail",
        outputs={
            "image": File(png(32, 32, 3), content_type="image/png", filename="image.png"),
            "thumb": DataURI(png(8, 8, 3), "image/png"),
            "width": 32,
        },
        output_schema={"type": "object"},
        official=False,
    )
    sim.add_deployment("examples/painter-prod", model="examples/painter")
    now = sim.now()
    ids = []
    for i in range(history):
        created = now - dt.timedelta(hours=i, minutes=1)
        ids.append(
            sim.seed_prediction(
                f"examples/painter:{painter}",
                input={"prompt": f"example {i}", "num_outputs": 1 + i % 2},
                output=_painter({"prompt": f"example {i}", "num_outputs": 1 + i % 2}),
                source="web" if i % 2 else "api",
                created_at=created,
                completed_at=created + dt.timedelta(seconds=3),
            )
        )
    refs = {
        f"examples/painter:{painter}": "PNG images; input num_outputs (1-8), prompt",
        "examples/official-painter": 'official model, run by name, version "hidden"; one PNG',
        f"examples/chat:{chat}": "text, an iterator of strings; input name",
        f"examples/thumbnail:{thumb}": "object output: a file, a data: URI, a number",
    }
    return ExampleCatalogue(refs=refs, history=ids)
