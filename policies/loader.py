"""Reading policy and job files, with errors that name the file, the line and the field.

The only module in `policies` that touches the file system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from policies.document import JobRequest, PolicyDocument


class PolicyFileError(ValueError):
    """`file:line: field: cause`, one line."""

    def __init__(self, path: Path, line: int | None, field: str, cause: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field}: {cause}" if field else f"{where}: {cause}")
        self.path, self.line, self.field = path, line, field


def _to_python(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    """Compose-tree to plain data, remembering the line (1-based) of every key and item."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise PolicyFileError(Path("?"), key_node.start_mark.line + 1, key, "duplicate key")
            out[key] = _to_python(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return yaml.SafeLoader.construct_object(yaml.SafeLoader(""), node)


def _read(path: Path) -> tuple[Any, dict[tuple, int]]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyFileError(path, None, "", exc.strerror or str(exc)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyFileError(path, mark.line + 1 if mark else None, "", f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if node is None:
        raise PolicyFileError(path, None, "", "the file is empty")
    lines: dict[tuple, int] = {}
    try:
        return _to_python(node, (), lines), lines
    except PolicyFileError as exc:
        raise PolicyFileError(path, exc.line, exc.field, "duplicate key") from None


def _validate(path: Path, schema: type[BaseModel], data: Any, lines: dict[tuple, int]) -> BaseModel:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("function-after", "function-before")))
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        field = ".".join(str(p) for p in loc)
        raise PolicyFileError(path, line, field, err["msg"]) from None


def load_policy(path: Path) -> PolicyDocument:
    data, lines = _read(path)
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = {**data, "rules": [
            {**r, "line": lines.get(("rules", i))} if isinstance(r, dict) else r for i, r in enumerate(data["rules"])
        ]}
    if isinstance(data, dict):
        tables = data.get("tables") if isinstance(data.get("tables"), dict) else {}
        data = {**data, "source": str(path), "table_lines": {t: lines[("tables", t)] for t in tables if ("tables", t) in lines}}
    return _validate(path, PolicyDocument, data, lines)


def load_job_request(path: Path) -> JobRequest:
    data, lines = _read(path)
    return _validate(path, JobRequest, data, lines)
