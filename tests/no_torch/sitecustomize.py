"""Put on PYTHONPATH, this makes ``import torch`` (and torchvision, onnxscript) fail, as in an
environment where they are not installed: tests/test_deploy.py runs ``python -m fcis predict
--onnx`` under it."""

import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("torch", "torchvision", "onnxscript")


class _Blocked(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by tests/no_torch/sitecustomize.py)",
                                      name=fullname)
        return None


sys.meta_path.insert(0, _Blocked())
