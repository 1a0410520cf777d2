"""Write the HTTP app's OpenAPI spec to openapi/openapi.json (run by `make openapi`)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from app.api.app import create_app
from app.config import Settings
from app.storage.store import Storage


def spec() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Storage(Settings(data_dir=Path(tmp))))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi/openapi.json")
    target.write_text(spec())
    print(f"wrote {target}")
