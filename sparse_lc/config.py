"""Run configuration: YAML files with ``_base_`` inheritance and ``--set key=value`` overrides.

A config is a nested dict. :data:`KEYS` (:mod:`.config_keys`) describes every known key (its
default and what it does; ``docs/configs.md`` is generated from it); a config file states only
what differs. A key that is not known is an error that names it and lists close matches, so a
typo never silently does nothing. (Free-form keys, such as ``model.backbone_args``, take any value.)

Loading a config also

* imports the modules listed in ``custom_imports`` (user code that registers a backbone, a
  dataset or a train mode; mmsegmentation's convention), before anything is built; never those
  a checkpoint's stored config names (:func:`config_from_dict`): code runs only when the user
  names it, in a config file of theirs or an override;
* fills ``model.pixel_mean`` / ``model.pixel_std`` left unset with the normalisation the
  backbone's pretrained weights expect (registered with the backbone), so that a config that
  only names a backbone normalises its images right.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import logging
import os
import re
import sys
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from .backbones import backbone_info
from .backbones.base import backbone_args_problem
from .config_keys import DEFAULTS, FREE_FORM, KEYS
from .errors import CheckpointError, ConfigError, ConfigWarning, SparseLCError, UnknownNameError
from .schema import Invalid

__all__ = ["DEFAULTS", "KEYS", "ConfigError", "apply_override", "config_from_dict", "dump_config",
           "import_custom_modules", "imported_modules", "check_training", "load_config", "merge", "resolve", "validate"]


class _Loader(yaml.SafeLoader):
    """YAML with 1.2's numbers: ``1e-3`` and ``2E4`` are floats (PyYAML's YAML 1.1 rules read them
    as text, and only ``1.0e-3`` as a number)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """A YAML document or value, numbers read as YAML 1.2 reads them."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


Sources = Dict[str, str]  # dotted key -> the file or "--set" that gave its value


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then the file at ``path`` (and its ``_base_`` files), then ``key=value``
    overrides; then every value is checked (:data:`KEYS`) and :func:`resolve` runs (custom
    imports, the backbone's normalisation). Raises ConfigError naming the file or ``--set``,
    the key, the value and what it takes."""
    cfg, sources = copy.deepcopy(DEFAULTS), {}
    if path is not None:
        data, file_sources = _read_with_bases(path, seen=())
        merge(cfg, data, source=path, sources=sources)
        sources.update(file_sources)
    for item in overrides:
        apply_override(cfg, item, sources)
    return resolve(validate(cfg, sources), search=[os.path.dirname(os.path.abspath(path))] if path else [],
                   sources=sources)


def config_from_dict(data: Dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then ``data`` (the config stored in a checkpoint: ``source`` names the file),
    then overrides; then the checks and :func:`resolve`.

    Code is never imported because ``data`` says so: ``custom_imports`` that only ``data``
    names, and that this process has not imported already, stop the load with a
    CheckpointError naming them and how to allow them (a config file of the user's, or an
    override ``custom_imports=[...]``: the user names the code)."""
    cfg, sources = copy.deepcopy(DEFAULTS), {}
    merge(cfg, data, source=source, sources=sources)
    for item in overrides:
        apply_override(cfg, item, sources)
    validate(cfg, sources)
    named = cfg["custom_imports"]
    if sources.get("custom_imports") == source and any(name not in sys.modules for name in named):
        listed = ", ".join(named)
        raise CheckpointError(f"{source}: its config names custom_imports [{listed}], code that sparse_lc does not "
                              f"import because a checkpoint says so (a file of that name could run anything): "
                              f"to allow it, pass --config with your own config that lists it, or --set "
                              f"custom_imports=[{listed}] (in Python: load_model(..., overrides="
                              f"['custom_imports=[{listed}]']))")
    return resolve(cfg, sources=sources)


def validate(cfg: Dict[str, Any], sources: Optional[Sources] = None) -> Dict[str, Any]:
    """Check every value against its key's type and range, then the combinations of keys;
    returns ``cfg`` (whole numbers written as ``2e4`` become ints). Training's own combinations
    are checked by :func:`check_training`."""
    sources = sources or {}
    for key in KEYS:
        *path, leaf = key.name.split(".")
        section = cfg
        for part in path:
            section = section[part]
        try:
            section[leaf] = key.check(section[leaf])
        except Invalid as e:
            raise ConfigError(f"{_name(sources, key.name)}: {e}") from None
    _check_combinations(cfg, sources)
    return cfg


def _name(sources: Sources, key: str) -> str:
    """``key``, prefixed with where its value came from: ``--set key`` or ``file.yaml: key``."""
    source = sources.get(key)
    if source is None:
        return key
    return source if source.startswith("--set") else f"{source}: {key}"


def _check_combinations(cfg: Dict[str, Any], sources: Sources) -> None:
    model, data = cfg["model"], cfg["data"]
    if data["classes"] is not None and len(data["classes"]) != model["num_classes"]:
        raise ConfigError(f"{_name(sources, 'data.classes')}: names {len(data['classes'])} classes but "
                          f"model.num_classes is {model['num_classes']}: give one name per class")


def check_training(cfg: Dict[str, Any]) -> None:
    """The combinations only training cares about (a config loaded to evaluate or segment may
    have been trained under other rules): ConfigError for what cannot train as meant,
    ConfigWarning for what trains but is probably not meant."""
    t, data = cfg["train"], cfg["data"]
    if t["mode"] == "lc" and t["warmup_iters"] > t["iters"]:
        raise ConfigError(f"train.warmup_iters ({t['warmup_iters']}) exceeds train.iters ({t['iters']}): mode lc "
                          f"would never train the cascade; lower train.warmup_iters or use train.mode dense")
    if sum(t["stage_loss_weights"]) == 0:
        raise ConfigError("train.stage_loss_weights: all zero, nothing would be learned")
    if t["eval_interval"] > t["iters"]:
        warnings.warn(f"train.eval_interval ({t['eval_interval']}) exceeds train.iters ({t['iters']}): no "
                      f"evaluation during training", ConfigWarning, stacklevel=2)
    if data["type"] == "synthetic":
        largest = [side * t["scale_range"][1] for side in data["synthetic"]["size"]]
        if any(crop > side for crop, side in zip(t["crop_size"], largest)):
            warnings.warn(f"train.crop_size {t['crop_size']} is larger than the largest rescaled synthetic scene "
                          f"({data['synthetic']['size']} x {t['scale_range'][1]:g}): crops are padded with ignored "
                          f"pixels", ConfigWarning, stacklevel=2)


def resolve(cfg: Dict[str, Any], search: Sequence[str] = (), sources: Optional[Sources] = None) -> Dict[str, Any]:
    """Import ``custom_imports`` (``search``: more folders to look in), check that the backbone
    takes ``model.backbone_args``, then fill an unset ``model.pixel_mean`` / ``pixel_std`` from
    the backbone's registration. Returns ``cfg``. ``sources``: where each value came from, for
    the errors."""
    import_custom_modules(cfg["custom_imports"], search)
    model = cfg["model"]
    try:
        info = backbone_info(model["backbone"])
    except UnknownNameError as e:
        raise ConfigError(f"{_name(sources or {}, 'model.backbone')}: {e}") from None
    problem = backbone_args_problem(model["backbone"], model["backbone_args"])
    if problem:
        sources = sources or {}
        source = sources.get(f"model.backbone_args.{problem[0]}", sources.get("model.backbone_args"))
        raise ConfigError(f"{_name({'model.backbone_args': source} if source else {}, 'model.backbone_args')}: "
                          f"{problem[1]}")
    for key, value in (("pixel_mean", info.pixel_mean), ("pixel_std", info.pixel_std)):
        if model[key] is None:
            model[key] = list(value)
    return cfg


_IMPORTED: Dict[str, str] = {}  # module -> its file: what custom_imports imported in this process
_log = logging.getLogger(__name__)  # the command line prints its records on stderr


def imported_modules() -> Dict[str, str]:
    """The modules ``custom_imports`` imported in this process, with their files (a run
    records them in its outputs: ``config.yaml``, ``eval.json``)."""
    return dict(_IMPORTED)


def import_custom_modules(names: Any, search: Sequence[str] = ()) -> None:
    """Import each module of ``names`` (``custom_imports``). Modules are looked up on sys.path,
    then in the current folder and in ``search``; a module that cannot be imported is a
    ConfigError naming it. Each one imported is logged (``sparse_lc.config``, INFO) with its
    file, and kept in :func:`imported_modules`."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"custom_imports: expected a list of module names, got {names!r}")
    for folder in [os.getcwd(), *search]:
        if folder not in sys.path:
            sys.path.append(folder)
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(f"custom_imports: no module named {name!r} (put it on PYTHONPATH, in the "
                                  f"current folder or beside the config file)") from None
            raise ConfigError(f"custom_imports: importing {name!r} failed: {e}") from None
        except SparseLCError:  # already one line naming what is wrong (e.g. a backbone refused when registered)
            raise
        except Exception as e:  # user code: any error there stops the run before it starts
            raise ConfigError(f"custom_imports: importing {name!r} failed: {type(e).__name__}: {e}") from None
        if name not in _IMPORTED:
            _IMPORTED[name] = getattr(module, "__file__", None) or "(no file)"
            _log.info("custom_imports: imported %s from %s", name, _IMPORTED[name])


def _read_with_bases(path: str, seen: tuple) -> Tuple[Dict[str, Any], Sources]:
    """The file's mapping merged over its ``_base_`` files, and which file gave each value."""
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: _base_ files include each other in a loop")
    try:
        with open(path, encoding="utf-8") as f:
            data = parse_yaml(f) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML text)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of them, got {bases!r}")
    merged: Dict[str, Any] = {}
    sources: Sources = {}
    for base in bases:
        base_data, base_sources = _read_with_bases(os.path.join(os.path.dirname(path), base), seen + (path,))
        _inherit(merged, sources, base_data, base_sources)
    _inherit(merged, sources, data, {key: path for key in _leaves(data)})
    return merged, sources


def _inherit(merged: Dict[str, Any], sources: Sources, data: Dict[str, Any], data_sources: Sources) -> None:
    """Merge a later file's ``data`` over ``merged`` (key by key), with the backbone rule of
    :func:`_drop_args_of_another_backbone`."""
    if isinstance(merged.get("model"), dict) and isinstance(data.get("model"), dict):
        _drop_args_of_another_backbone(merged["model"], data["model"], sources)
    _deep_update(merged, data)
    sources.update(data_sources)


def _drop_args_of_another_backbone(model: Dict[str, Any], update: Dict[str, Any], sources: Sources,
                                   keep_from: str = "") -> None:
    """``model.backbone_args`` belong to ``model.backbone``: when ``update`` (a ``model``
    section: a file over its bases, or a ``--set``) names another backbone than ``model``'s, the
    arguments ``model`` holds are dropped (those given in ``update`` then apply alone), unless
    they came from a source starting with ``keep_from`` (an earlier ``--set``)."""
    current = model.get("backbone", DEFAULTS["model"]["backbone"])
    if "backbone" not in update or update["backbone"] == current:
        return
    source = sources.get("model.backbone_args", "")
    if keep_from and source.startswith(keep_from):
        return
    if "backbone_args" in model:
        model["backbone_args"] = {}
    _forget(sources, "model.backbone_args")


def _forget(sources: Sources, key: str) -> None:
    """Drop the recorded sources of ``key`` and of its entries."""
    for name in [n for n in sources if n == key or n.startswith(key + ".")]:
        del sources[name]


def _leaves(data: Dict[str, Any], prefix: str = "") -> List[str]:
    """The dotted names of ``data``'s values (a free-form mapping counts as one value)."""
    names = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREE_FORM:
            names += _leaves(value, f"{dotted}.")
        else:
            names.append(dotted)
            if isinstance(value, dict):  # a free-form mapping: where each of its entries came from, too
                names += [f"{dotted}.{entry}" for entry in value]
    return names


def _deep_update(target: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def merge(cfg: Dict[str, Any], update: Dict[str, Any], source: str, prefix: str = "",
          sources: Optional[Sources] = None) -> None:
    """Merge ``update`` into ``cfg`` in place, refusing keys ``cfg`` does not have; ``sources``
    (if given) records ``source`` for each value set. A ``model.backbone`` other than ``cfg``'s
    drops the backbone arguments ``cfg`` holds (:func:`_drop_args_of_another_backbone`; those
    of an earlier ``--set`` stay)."""
    if prefix == "model." and sources is not None:
        _drop_args_of_another_backbone(cfg, update, sources, keep_from="--set")
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in cfg:
            raise ConfigError(f"{source}: unknown key {dotted!r}{_close_matches(cfg, key, prefix)}")
        if isinstance(cfg[key], dict) and dotted not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} must be a mapping of keys, got {value!r}")
            merge(cfg[key], value, source, prefix=f"{dotted}.", sources=sources)
        else:
            cfg[key] = copy.deepcopy(value)
            if sources is not None:
                _forget(sources, dotted)  # a free-form value is replaced whole
                sources[dotted] = source


def apply_override(cfg: Dict[str, Any], item: str, sources: Optional[Sources] = None) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (``0.9``, ``1e-3``, ``[2, 4]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.strip()
    try:
        value = parse_yaml(raw)
    except yaml.YAMLError:
        value = raw
    update: Dict[str, Any] = value
    for part in reversed(dotted.split(".")):
        update = {part: update}
    merge(cfg, update, source=f"--set {dotted}", sources=sources)


def _close_matches(section: Dict[str, Any], key: str, prefix: str) -> str:
    close = difflib.get_close_matches(key, list(section), n=3)
    if close:
        return f" (did you mean {', '.join(prefix + c for c in close)}?)"
    return f" (known keys here: {', '.join(prefix + k for k in section)})"


def dump_config(cfg: Dict[str, Any]) -> str:
    """The config as YAML, e.g. to store beside a run's checkpoints; a comment line first names
    each module ``custom_imports`` imported in this process, with its file."""
    header = "".join(f"# custom_imports imported {name} from {path}\n" for name, path in _IMPORTED.items())
    return header + yaml.safe_dump(cfg, sort_keys=False)
