"""``python -m lever_plugins.wrap.run SPEC``: the upstream entry point as ``__main__``, patches active.

The script runs through :func:`runpy.run_path` with ``sys.argv`` and ``sys.path[0]`` set as if it had
been started directly, so its ``if __name__ == "__main__"`` block runs and multiprocessing's spawn
re-imports it (as ``__mp_main__``) in children, where the generated sitecustomize re-applies the patches.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from lever_plugins.wrap import boot


def main(argv: list[str]) -> None:
    spec_path = argv[0]
    spec = boot.load_spec(spec_path)
    boot.activate(spec_path)
    script = Path(spec["upstream"]) / spec["script"]
    sys.argv = [str(script), *spec.get("argv", [])]
    # As for `python script.py`: the script's folder first, and not the current directory (`-m` added it).
    cwd = os.getcwd()
    sys.path[:] = [str(script.parent)] + [p for p in sys.path if p not in ("", cwd) and p != str(script.parent)]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
