"""`read_json`: a JSON file of a checkpoint, its read and parse failures as one-line InputErrors naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wgrpo.engine.errors import InputError


def read_json(path: Path) -> Any:
    """The parsed content of the JSON file `path`; InputError naming it when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
