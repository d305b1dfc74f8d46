"""HPA's official segmentation weights: load them into :class:`DPNUNet` (obtaining the files is
:mod:`~hpasc.segmentation.weight_files`).

The official files (Zenodo record 4665863) are whole ``pytorch_zoo`` models pickled with
``torch.save(model)``, sometimes inside ``nn.DataParallel``. Plain unpickling would import
pytorch_zoo and, worse, call whatever global a file names. So the files are read with an
allow-list unpickler: torch's tensor-rebuilding helpers and a few harmless builtins are allowed,
every pytorch_zoo or torch.nn module class becomes an inert :class:`PickledModule` that just keeps
its unpickled attributes (no module code runs), and anything else is refused by name. The tensors
are then collected from that tree under their state_dict names and checked against DPNUNet's.
"""

from __future__ import annotations

import collections
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hpasc.core.errors import InputError
from hpasc.core.weights_cache import one_line
from hpasc.segmentation.network import DPNUNet

# What a pickled nn.Module or state_dict needs besides module classes: a subset of torch's own
# weights_only allow-list, which builds tensors, dicts, sets and devices and runs nothing else.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,  # files from torch < 1.0
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "device"): torch.device,  # DataParallel.src_device_obj
    ("collections", "OrderedDict"): collections.OrderedDict,  # _parameters, _modules, hooks
    ("builtins", "set"): set,  # Module._non_persistent_buffers_set
}
# Packages whose classes become PickledModule stand-ins: the official files' model classes.
STAND_IN_PACKAGES = ("pytorch_zoo",)
_PREFIX = "module."  # what nn.DataParallel puts before every key


class PickledModule:
    """Inert stand-in for a pickled module class: unpickling only fills in its ``__dict__``."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; ``name`` is its dotted name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


_stand_ins: dict[str, type[PickledModule]] = {}


def _stand_in(dotted: str) -> type[PickledModule]:
    # One class per pickled name, so that memoised class references stay consistent.
    if dotted not in _stand_ins:
        _stand_ins[dotted] = type(dotted.rsplit(".", 1)[-1], (PickledModule,), {})
    return _stand_ins[dotted]


def _is_torch_module_class(module: str, name: str) -> bool:
    if not module.startswith("torch.nn."):
        return False
    candidate = getattr(nn, name, None)  # classes are re-exported as torch.nn.<name>
    return isinstance(candidate, type) and issubclass(candidate, nn.Module)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # pickle protocol 2 spelling
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        if module.split(".")[0] in STAND_IN_PACKAGES or _is_torch_module_class(module, name):
            return _stand_in(f"{module}.{name}")
        raise RefusedGlobal(f"{module}.{name}")


class _RestrictedPickle:
    """The ``pickle_module`` for torch.load, which uses its ``Unpickler`` and ``load``."""

    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def _unpickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # Old-format files carry their classes' source, to compare with the installed classes';
            # the stand-ins have none to compare.
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
            return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False)
    except RefusedGlobal as exc:
        raise InputError(f"{path}: refused to unpickle {exc.name}: weights files may only hold tensors, "
                         f"torch.nn modules and pytorch_zoo models") from None
    except Exception as exc:  # anything else an unreadable or hostile file can raise
        raise InputError(f"{path}: not a readable PyTorch weights file ({one_line(exc)})") from None


def _module_tensors(module: object, path: Path, prefix: str = "") -> dict[str, Tensor]:
    """A pickled module tree's parameters and persistent buffers, named as by state_dict()."""
    if not isinstance(module, PickledModule):
        raise InputError(f"{path}: {prefix or 'the file'} holds a {type(module).__name__}, not a module")
    state = vars(module)
    transient = state.get("_non_persistent_buffers_set", set())
    tensors = {**state.get("_parameters", {}),
               **{k: v for k, v in state.get("_buffers", {}).items() if k not in transient}}
    found = {prefix + name: value for name, value in tensors.items() if value is not None}
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            found.update(_module_tensors(child, path, f"{prefix}{name}."))
    return found


def _tensors_in(obj: object, path: Path) -> dict[str, Tensor]:
    """The named tensors of a whole pickled model, a state_dict, or a {'state_dict': ...} dict."""
    if isinstance(obj, PickledModule):
        tensors = _module_tensors(obj, path)
    elif isinstance(obj, dict):
        tensors = obj.get("state_dict", obj)
    else:
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a model or a state_dict")
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise InputError(f"{path}: neither a model nor a state_dict (it holds more than tensors)")
    if tensors and all(isinstance(k, str) and k.startswith(_PREFIX) for k in tensors):
        tensors = {k[len(_PREFIX):]: v for k, v in tensors.items()}
    return tensors


def _expected_tensors() -> dict[str, Tensor]:
    with torch.device("meta"):  # shapes and dtypes only, no memory and no initialisation
        return DPNUNet().state_dict()


def load_hpa_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read an HPA segmentation weights file into a DPNUNet state_dict (CPU tensors).

    Raises InputError if the file is missing, unreadable, refers to a global outside the
    allow-list, or its tensors do not fit DPNUNet exactly (naming the first mismatched keys).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file does not exist")
    try:
        tensors = _tensors_in(_unpickle(path), path)
    except (AttributeError, TypeError, RecursionError) as exc:  # a module tree of an odd shape
        raise InputError(f"{path}: not a model or a state_dict ({one_line(exc)})") from None
    expected = _expected_tensors()
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [f"{k} has shape {list(v.shape)}, expected {list(expected[k].shape)}"
                 for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(f"{path}: not HPA DPN-UNet weights: {'; '.join(problems[:3])}{more}")
    # Plain, contiguous tensors of the model's dtypes: load_state_dict(assign=True) keeps them as they are.
    return {k: tensors[k].detach().to(expected[k].dtype).contiguous() for k in expected}


def load_hpa_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DPNUNet:
    """HPA's nuclei or cell segmentation network with the weights in ``path``, in eval mode."""
    state = load_hpa_state_dict(path)
    with torch.device("meta"):  # the loaded tensors replace the parameters, so skip initialising them
        model = DPNUNet()
    model.load_state_dict(state, assign=True)
    return model.to(device).eval()
