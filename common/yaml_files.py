"""Reading a YAML file that must hold a mapping, with a one-line error naming the file (and line)."""

from __future__ import annotations

from pathlib import Path

import yaml


class YamlFileError(ValueError):
    """The file cannot be read, is not YAML, or is not a mapping; the message names it."""


def read_mapping(path: Path, what: str) -> dict:
    """The mapping in `path` (empty for an empty file); `what` names it in the error."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlFileError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML") from None
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: {what} is a mapping of fields")
    return data
