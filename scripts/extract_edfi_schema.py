"""Extract the compact Ed-Fi DS 5.2 schema the product ships from the full OpenAPI file (SPEC §4.2 `ds52`).

    uv run python scripts/extract_edfi_schema.py [OPENAPI_JSON] [--out PATH]

Writes `sg_orchestration/edfi/ds52_schema.json`: `{"source", "resource", "definitions"}` where
`definitions` holds the schemas of the resources the Ed-Fi sandbox serves and every schema they reach
through `$ref`, each `$ref` rewritten to `#/definitions/...`, so validation needs neither ../shared nor
the 2.8 MB file at run time. Deterministic (sorted keys), so a test can check the committed file is the
script's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "reference" / "edfi-ds52-resources-openapi.json"
DEFAULT_OUT = ROOT / "sg_orchestration" / "edfi" / "ds52_schema.json"
RESOURCE = "EdFi_StudentEducationOrganizationAssessmentAccommodation"
# the payload profile's resource first; the others are the reference records the sandbox serves
ROOTS = (RESOURCE, "EdFi_Student", "EdFi_School", "EdFi_Assessment")
OPENAPI_PREFIX = "#/components/schemas/"


def _refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(OPENAPI_PREFIX)} if "$ref" in node else set()
        return found.union(*(_refs(v) for k, v in node.items() if k != "$ref"))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _rewrite(node):
    if isinstance(node, dict):
        return {
            k: v.replace(OPENAPI_PREFIX, "#/definitions/") if k == "$ref" else _rewrite(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def extract(openapi: dict) -> dict:
    schemas = openapi["components"]["schemas"]
    reached: set[str] = set()
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending += sorted(_refs(schemas[name]) - reached)
    return {
        "source": "Ed-Fi Data Standard 5.2 resources OpenAPI (edfi-ds52-resources-openapi.json)",
        "resource": RESOURCE,
        "definitions": {name: _rewrite(schemas[name]) for name in sorted(reached)},
    }


def render(source: Path) -> str:
    return (
        json.dumps(extract(json.loads(source.read_text(encoding="utf-8"))), indent=1, sort_keys=True) + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.write_text(render(args.source), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
