"""Type-check resource bodies parsed from Bicep (pycep) against Microsoft's Bicep type
definitions (`bicep-types-az` / `msgraph-bicep-types` types.json) of their exact apiVersion.

What is checked where the template states it literally: an unknown property, a read-only
property set, a string outside a closed set of literals, an unknown discriminator value.
Expressions (parameters, variables, function calls, interpolations) are not evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_ONLY = 2
TEMPLATE_KEYWORDS = {"parent", "dependsOn", "scope"}  # Bicep's, not the resource body's
IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\??\.\w+|\[[^\]]*\])*$")


@dataclass(frozen=True)
class Resource:
    type_and_version: str  # "Microsoft.Web/sites@2024-04-01"
    body: dict[str, Any]


class BicepTypes:
    def __init__(self, folder: Path) -> None:
        self._files: dict[str, list[dict[str, Any]]] = {}
        self._resources: dict[str, tuple[str, int]] = {}  # lower-cased "type@version" → (file, body index)
        for path in sorted(folder.glob("*.json")):
            entries = json.loads(path.read_text())
            self._files[path.name] = entries
            for entry in entries:
                if entry.get("$type") == "ResourceType":
                    self._resources[entry["name"].lower()] = (path.name, _index(entry["body"]))

    def knows(self, type_and_version: str) -> bool:
        return type_and_version.lower() in self._resources

    def problems(self, resource: Resource, identifiers: set[str]) -> list[str]:
        file, index = self._resources[resource.type_and_version.lower()]
        body = {key: value for key, value in resource.body.items() if key not in TEMPLATE_KEYWORDS}
        checker = _Checker(self._files[file], identifiers)
        checker.walk(index, body, resource.type_and_version)
        return checker.found


class _Checker:
    def __init__(self, entries: list[dict[str, Any]], identifiers: set[str]) -> None:
        self.entries = entries
        self.identifiers = identifiers
        self.found: list[str] = []

    def walk(self, index: int, value: Any, path: str) -> None:
        if self.is_expression(value):
            return
        node = self.entries[index]
        kind = node.get("$type")
        if kind == "ObjectType":
            self.object(node.get("properties", {}), node.get("additionalProperties"), value, path)
        elif kind == "DiscriminatedObjectType":
            self.discriminated(node, value, path)
        elif kind == "ArrayType" and isinstance(value, list):
            for position, item in enumerate(value):
                self.walk(_index(node["itemType"]), item, f"{path}[{position}]")
        elif kind in {"UnionType", "StringLiteralType"} and self.is_literal(value):
            allowed = self.literals(index)
            if allowed is not None and value not in allowed:
                self.found.append(f"{path}: {value!r} is not one of {sorted(allowed)}")

    def object(self, properties: dict[str, Any], additional: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            declared = properties.get(key)
            if declared is None:
                if additional is None:
                    self.found.append(f"{path}.{key}: no such property")
                else:
                    self.walk(_index(additional), item, f"{path}.{key}")
                continue
            if declared.get("flags", 0) & READ_ONLY:
                self.found.append(f"{path}.{key}: read-only, set by Azure")
            self.walk(_index(declared["type"]), item, f"{path}.{key}")

    def discriminated(self, node: dict[str, Any], value: Any, path: str) -> None:
        if not isinstance(value, dict):
            return
        discriminator = node["discriminator"]
        chosen = value.get(discriminator)
        elements = node.get("elements", {})
        if not self.is_literal(chosen):
            return
        if chosen not in elements:
            self.found.append(f"{path}.{discriminator}: {chosen!r} is not one of {sorted(elements)}")
            return
        element = self.entries[_index(elements[chosen])]
        properties = {**node.get("baseProperties", {}), **element.get("properties", {})}
        self.object(properties, element.get("additionalProperties"), value, path)

    def literals(self, index: int) -> set[str] | None:
        """The closed set of strings a type allows, or None when it also allows any string."""
        node = self.entries[index]
        if node.get("$type") == "StringLiteralType":
            return {node["value"]}
        found: set[str] = set()
        for element in node.get("elements", []):
            inner = self.entries[_index(element)]
            if inner.get("$type") != "StringLiteralType":
                return None
            found.add(inner["value"])
        return found

    def is_expression(self, value: Any) -> bool:
        return isinstance(value, dict) and bool(value) and set(value) <= {"operator", "function"}

    def is_literal(self, value: Any) -> bool:
        if not isinstance(value, str) or "${" in value:
            return False
        head = re.split(r"[.?\[(]", value, maxsplit=1)[0]
        return not (IDENTIFIER_PATH.match(value) and head in self.identifiers)


def _index(reference: dict[str, str]) -> int:
    return int(reference["$ref"].removeprefix("#/"))


def resources_of(document: dict[str, Any]) -> list[Resource]:
    """Each resource body of a parsed template (loops and conditions unwrapped; `existing` skipped)."""
    found = []
    for resource in document.get("resources", {}).values():
        if resource.get("existing"):
            continue
        body = resource["config"]
        while isinstance(body, dict) and "config" in body and set(body) <= {"config", "condition", "loop_type"}:
            body = body["config"]
        found.append(Resource(f"{resource['type']}@{resource['api_version']}", body))
    return found


def identifiers_of(document: dict[str, Any], text: str) -> set[str]:
    """Names an expression can start with: parameters, variables, resources, modules, loop variables."""
    names = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        names |= set(document.get(section, {}))
    names |= set(re.findall(r"\bfor\s+(\w+)\s+in\b", text))
    for item, position in re.findall(r"\bfor\s+\((\w+),\s*(\w+)\)\s+in\b", text):
        names |= {item, position}
    return names
