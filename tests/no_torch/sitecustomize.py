"""On PYTHONPATH, this makes ``import torch`` (and torchvision, onnxscript) fail as in an
environment where they are not installed; tests/test_onnx.py runs ``python -m fcis predict --onnx``
under it. With ``FCIS_IMPORTED_MODULES=FILE`` set, the top-level modules imported by the end of the
run are written to FILE, one per line."""

import atexit
import os
import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("torch", "torchvision", "onnxscript")


class _Blocked(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by tests/no_torch/sitecustomize.py)",
                                      name=fullname)
        return None


def _write_modules(path: str) -> None:
    with open(path, "w") as f:
        f.write("\n".join(sorted({name.split(".")[0] for name in list(sys.modules)})) + "\n")


sys.meta_path.insert(0, _Blocked())
if os.environ.get("FCIS_IMPORTED_MODULES"):
    atexit.register(_write_modules, os.environ["FCIS_IMPORTED_MODULES"])
