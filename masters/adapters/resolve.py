"""Pick and build the adapter of a checkpoint directory from its config.json alone.

Who claims a checkpoint, in order: an explicit ``adapter:`` in the model spec; a plugin's
``masters_claim_checkpoint`` hook (for claims that need more than the model_type); then every
registered adapter spec whose ``model_types`` holds the checkpoint's ``model_type`` (built-in or
plugin alike: setting ``model_types`` on a spec is all a family needs to be found).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masters.errors import MastersError

def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict, with errors that say which directory is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise MastersError("checkpoint directory not found", where=str(path),
                           fix="point the model path at a local directory saved with save_pretrained")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise MastersError("no config.json in the checkpoint directory", where=str(path),
                           fix="point at the directory that holds config.json (save_pretrained writes it)")
    from masters.files import guarded_load

    with guarded_load(config_file, "checkpoint config.json", fix="restore the checkpoint's config.json"):
        config = json.loads(config_file.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "model_type" not in config:
        raise MastersError("config.json has no model_type", where=str(config_file),
                           fix="save the model with save_pretrained so config.json names its model_type")
    return config


def load_tokenizer(path: str | Path, *, where: str = "model") -> Any:
    """The tokenizer of a local checkpoint directory, through the guarded load path: a missing
    directory never reaches ``AutoTokenizer.from_pretrained`` (which would call it a bad repo id)."""
    from masters.files import guarded_load, require_dir

    fix = f"point {where}'s path at a local directory saved with save_pretrained (tokenizer files included)"
    path = require_dir(path, f"{where} checkpoint directory", fix)
    from transformers import AutoTokenizer

    with guarded_load(path, f"{where} tokenizer", fix=fix):
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def adapter_spec_for(model_spec: Any):
    """The adapter spec of a model spec: its explicit ``adapter`` wins, else the claim hook decides.

    ``model_spec`` is a ``ModelSpec`` (``path`` and optional ``adapter``), a path, or a mapping.
    """
    from masters.plugins import get_components

    if isinstance(model_spec, (str, Path)):
        path, adapter = Path(model_spec), None
    elif isinstance(model_spec, dict):
        path, adapter = Path(model_spec["path"]), model_spec.get("adapter")
    else:
        path, adapter = Path(model_spec.path), getattr(model_spec, "adapter", None)
    components = get_components()
    registry = components.registry("adapter")
    if adapter is not None:
        if isinstance(adapter, str):
            return registry.get(adapter, where=str(path)).spec_cls()
        if isinstance(adapter, dict):
            return registry.get(adapter["name"], where=str(path)).spec_cls.model_validate(adapter)
        return adapter
    config = read_checkpoint_config(path)
    hooked = components.claim_checkpoint(config, where=str(path))
    name = claim_by_model_type(registry, config, where=str(path), chosen=hooked)
    if name is None:
        model_type = config["model_type"]
        supported = sorted({t for e in registry for t in getattr(e.spec_cls, "model_types", ())} - {model_type})
        raise MastersError(
            f"no adapter handles model_type {model_type!r}",
            where=str(path),
            fix=f"supported model types: {', '.join(supported) or 'none'}; set `adapter:` explicitly, or install "
            "the plugin for this family (`masters list adapters`)",
        )
    return registry.get(name, where=str(path)).spec_cls()


def claim_by_model_type(registry: Any, config: dict[str, Any], *, where: str | None = None,
                        chosen: str | None = None) -> str | None:
    """The registered adapter whose spec's ``model_types`` holds ``config["model_type"]``.

    ``chosen`` is what a claim hook already answered: it wins (a custom claim is more specific).
    Otherwise, when several specs claim the type, the first registered (built-ins before plugins)
    wins. Either way, when several specs claim the type, a warning names them and how to choose.
    """
    model_type = config.get("model_type")
    claims = [e.name for e in registry if model_type in getattr(e.spec_cls, "model_types", ())]
    winner = chosen if chosen is not None else (claims[0] if claims else None)
    if len(claims) > 1 and winner in claims:
        import warnings

        from masters.plugins import PluginWarning

        who = ", ".join(f"{n} ({registry.get(n).origin})" for n in claims)
        warnings.warn(f"{where or 'checkpoint'}: several adapters claim model_type {model_type!r} ({who}); "
                      f"using {winner!r}. Set `adapter:` in the spec to choose.", PluginWarning, stacklevel=3)
    return winner


def resolve_adapter(model_spec: Any, **context: Any):
    """Build the adapter for a model spec (see :func:`adapter_spec_for`) on its checkpoint."""
    path = model_spec if isinstance(model_spec, (str, Path)) else (
        model_spec["path"] if isinstance(model_spec, dict) else model_spec.path)
    return adapter_spec_for(model_spec).build(path=path, **context)
