"""Regenerate replicate_openapi_components.json from Replicate's published OpenAPI document.

    python tests/contract/vendor.py path/to/replicate-openapi.json

Keeps, verbatim, the operations the simulator implements and every component they
reference (transitively), plus a header naming the source. Not a test (pytest ignores it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = [
    ("/account", "get"),
    ("/predictions", "get"),
    ("/predictions", "post"),
    ("/predictions/{prediction_id}", "get"),
    ("/predictions/{prediction_id}/cancel", "post"),
    ("/models/{model_owner}/{model_name}", "get"),
    ("/models/{model_owner}/{model_name}/predictions", "post"),
    ("/models/{model_owner}/{model_name}/versions", "get"),
    ("/models/{model_owner}/{model_name}/versions/{version_id}", "get"),
    ("/deployments/{deployment_owner}/{deployment_name}", "get"),
    ("/deployments/{deployment_owner}/{deployment_name}/predictions", "post"),
    ("/webhooks/default/secret", "get"),
]
OUT = Path(__file__).with_name("replicate_openapi_components.json")


def refs(node: Any) -> set[str]:
    """Every ``$ref`` string under ``node``."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def main(source: str) -> None:
    doc = json.loads(Path(source).read_text())
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        paths.setdefault(path, {})[method] = doc["paths"][path][method]
    components: dict[str, dict[str, Any]] = {}
    todo = refs(paths)
    done: set[str] = set()
    while todo:
        ref = todo.pop()
        done.add(ref)
        _, _, section, name = ref.split("/")  # "#/components/<section>/<name>"
        value = doc["components"][section][name]
        components.setdefault(section, {})[name] = value
        todo |= refs(value) - done
    out = {
        "x-vendored": {
            "source": "https://api.replicate.com/openapi.json",
            "title": doc["info"]["title"],
            "version": doc["info"]["version"],
            "copied_from": "shared/reference/replicate-openapi.json (the published document, unchanged)",
            "regenerate": "python tests/contract/vendor.py path/to/replicate-openapi.json",
            "kept": "the operations the simulator implements and the components they reference",
        },
        "openapi": doc["openapi"],
        "paths": paths,
        "components": components,
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
