"""Model specs: `model.yaml` (our schema) or a Hugging Face `config.json`, parsed once.

Schema of model.yaml (see docs/model-yaml.md for the full reference)::

    name: nemotron-h-8b            # required
    source: https://…/config.json  # where the numbers come from (free text)
    d_model: 4096                  # required
    vocab_size: 131072             # default 32000
    dtype: bfloat16                # weights, activations, KV and conv state; default bfloat16
    state_dtype: float32           # recurrent (SSM/GDN/…) state; default float32
    conv_dtype: bfloat16           # conv state; default = dtype
    chunk_size: 256                # engine checkpoint grid in tokens; default none (any position)
    blocks:                        # named layer types
      M: {kind: mamba2, d_state: 128, head_dim: 64, n_heads: 128, n_groups: 8}
      "*": {kind: attention, n_heads: 32, n_kv_heads: 8, head_dim: 128}
      "-": {kind: mlp, d_ff: 21504}
    pattern: "M-M-M-M*-…"          # one character per layer, each a block name …
    # … or an explicit list:  layers: [M, "-", {kind: mlp, d_ff: 1024}, …]
    # optional: repeat: 4          # repeat the pattern / list this many times
    # optional per layer: parallel: true  (reads the same input as the previous layer, Falcon-H1)

`load_model(path)` returns a `ModelSpec` for YAML and an `HFConfig` for `config.json` (or a
folder holding one), which transformers' own loader reads and validates (the `hf` extra);
`passes/` turns either into a CostModel. Sizes past real models' are refused here
(`marconi.layers.MAX_DIM`), and past 1 TiB per checkpoint by `passes.analyze.check_sizes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from marconi.errors import MissingExtraError, SpecError, UnsupportedModelError
from marconi.layers import (MAX_TOKENS, MAX_VOCAB, PARAMS, LayerKind, LayerParams,
                            check_size, kind_names)
from marconi.units import DType, parse_dtype

MAX_LAYERS = 10_000        # real hybrids have < 200; more is a typo in `repeat`

_TOP_FIELDS = ("name", "source", "d_model", "vocab_size", "dtype", "state_dtype", "conv_dtype",
               "chunk_size", "blocks", "pattern", "layers", "repeat")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    index: int
    kind: LayerKind
    params: LayerParams
    block: str | None = None          # block name in `blocks`, if it came from one
    parallel: bool = False            # reads the same input as the previous layer


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    d_model: int
    layers: tuple[LayerSpec, ...]
    vocab_size: int = 32000
    dtype: DType = DType.BFLOAT16
    state_dtype: DType = DType.FLOAT32
    conv_dtype: DType | None = None   # None: same as dtype
    chunk_size: int | None = None
    source: str = ""
    path: str = ""                    # file it was loaded from ("" when built in code)

    def __post_init__(self):
        if self.conv_dtype is None:
            object.__setattr__(self, "conv_dtype", self.dtype)

    def count(self, kind: LayerKind) -> int:
        return sum(1 for layer in self.layers if layer.kind is kind)

    def with_dtypes(self, dtype: DType | None = None, state_dtype: DType | None = None,
                    conv_dtype: DType | None = None) -> ModelSpec:
        """A copy with other storage dtypes (conv follows dtype unless given)."""
        new_dtype = dtype or self.dtype
        conv = conv_dtype or (new_dtype if dtype else self.conv_dtype)
        return dataclasses.replace(self, dtype=new_dtype,
                                   state_dtype=state_dtype or self.state_dtype, conv_dtype=conv)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (used for fingerprints and JSON reports)."""
        return {
            "name": self.name, "d_model": self.d_model, "vocab_size": self.vocab_size,
            "dtype": self.dtype.value, "state_dtype": self.state_dtype.value,
            "conv_dtype": self.conv_dtype.value, "chunk_size": self.chunk_size,
            "layers": [{"kind": layer.kind.value, "parallel": layer.parallel,
                        **dataclasses.asdict(layer.params)} for layer in self.layers],
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class HFConfig:
    """A Hugging Face config, read and validated by transformers; `passes/` builds the real
    architecture from it.

    `config` is the decoded mapping: transformers' own `{"__float__": "Infinity"}` (what its
    `save_pretrained` writes) and a literal `Infinity` both read as `float("inf")`.
    `transformers_config` is the `PretrainedConfig` transformers built from it (None when
    an HFConfig is made in code: the passes build it from `config`).
    """

    path: str
    model_type: str
    config: dict[str, Any] = dataclasses.field(hash=False, compare=False)
    name: str = ""
    transformers_config: Any = dataclasses.field(default=None, hash=False, compare=False,
                                                 repr=False)

    def fingerprint(self) -> str:
        # of the decoded mapping: a config without special floats hashes as it always has,
        # and Infinity written either way hashes the same
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


ModelSource = ModelSpec | HFConfig


def load_model(path: str | Path) -> ModelSource:
    """Load `model.yaml`, a `config.json`, or a folder holding a `config.json`."""
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise SpecError(str(path), "folder holds no config.json; expected a folder with a "
                            "Hugging Face config.json, or a model.yaml")
        p = p / "config.json"
    if not p.exists():
        raise SpecError(str(path), "no such file; expected a model.yaml, a config.json "
                        "or a folder holding a config.json")
    if p.suffix == ".json":
        return load_hf_config(p)
    if p.suffix in (".yaml", ".yml"):
        return load_spec(p)
    raise SpecError(str(p), f"unknown file type {p.suffix!r}; expected .yaml, .yml or .json")


def load_hf_config(path: str | Path) -> HFConfig:
    """Read a config.json through transformers' own loader, which decodes the encodings
    its `save_pretrained` writes, and build transformers' config object from it."""
    p = Path(path)
    transformers = require_transformers(str(p))
    raw = _read_json(p)             # our own read first: its errors name the line
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise SpecError(f"{p}: model_type", "missing; expected a Hugging Face config.json "
                        "with a model_type string")
    try:
        config, _ = transformers.PretrainedConfig.get_config_dict(str(p), local_files_only=True)
    except OSError as e:
        raise SpecError(str(p), f"transformers cannot read it: {e}") from e
    name = config.get("_name_or_path") or p.parent.name or config["model_type"]
    return HFConfig(path=str(p), model_type=config["model_type"], config=config,
                    name=str(name), transformers_config=transformers_config(config, str(p)))


def transformers_config(config: dict[str, Any], where: str):
    """transformers' `PretrainedConfig` of a decoded config mapping, its validation errors
    as SpecError naming the field (UnsupportedModelError for a model_type it cannot build)."""
    transformers = require_transformers(where)
    from huggingface_hub.errors import (StrictDataclassClassValidationError,
                                        StrictDataclassFieldValidationError)
    _check_hf_layer_count(config, where)
    model_type = config.get("model_type")
    known = transformers.CONFIG_MAPPING[model_type].__name__ \
        if model_type in transformers.CONFIG_MAPPING else "config"
    refuses = f"transformers' {known} refuses it"
    try:
        return transformers.AutoConfig.for_model(**config)
    except StrictDataclassFieldValidationError as e:
        field = re.search(r"field '([^']+)'", str(e))
        raise SpecError(f"{where}: {field.group(1)}" if field else where,
                        f"{refuses}: {_one_line(e.__cause__ or e)}") from e
    except StrictDataclassClassValidationError as e:
        raise SpecError(where, f"{refuses}: {_one_line(e.__cause__ or e)}") from e
    except (ValueError, KeyError, TypeError) as e:
        first = _one_line(e).split(". ")[0]       # not the list of every known model_type
        raise UnsupportedModelError(where, f"model_type {model_type!r}: transformers cannot "
                                    f"build this config: {first}") from e


def require_transformers(where: str):
    """The transformers module, or MissingExtraError naming the extra that installs it."""
    try:
        import transformers
    except ImportError as e:
        raise MissingExtraError(where, "a Hugging Face config.json needs transformers, which "
                                "is not installed; install it with: "
                                "pip install 'marconi-plan[hf]'") from e
    return transformers


def load_spec(path: str | Path) -> ModelSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(p), f"cannot read: {e}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(where, f"YAML syntax error: {problem}") from e
    except ValueError as e:                 # e.g. an integer past Python's 4300-digit limit
        raise SpecError(str(p), f"unreadable value: {_one_line(e).split(';')[0]}; "
                        "expected a real model's sizes") from e
    return parse_spec(raw, where=p.name, path=str(p))


def parse_spec(raw: Any, where: str = "model.yaml", path: str = "") -> ModelSpec:
    """Validate a raw mapping (from YAML) into a `ModelSpec`."""
    if not isinstance(raw, dict):
        raise SpecError(where, f"expected a mapping at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TOP_FIELDS))
    if unknown:
        raise SpecError(f"{where}: {unknown[0]}",
                        f"unknown field; expected one of {', '.join(_TOP_FIELDS)}")
    name = _required(raw, "name", str, where)
    d_model = check_size(_required(raw, "d_model", int, where), f"{where}: d_model")
    vocab = check_size(raw.get("vocab_size", 32000), f"{where}: vocab_size", most=MAX_VOCAB)
    dtype = parse_dtype(raw.get("dtype", "bfloat16"), f"{where}: dtype")
    state_dtype = parse_dtype(raw.get("state_dtype", "float32"), f"{where}: state_dtype")
    conv_dtype = (parse_dtype(raw["conv_dtype"], f"{where}: conv_dtype")
                  if "conv_dtype" in raw else None)
    chunk = raw.get("chunk_size")
    if chunk is not None:
        chunk = check_size(chunk, f"{where}: chunk_size", most=MAX_TOKENS)
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise SpecError(f"{where}: source", f"expected a string, got {source!r}")

    blocks = _parse_blocks(raw.get("blocks", {}), d_model, where)
    entries = _layer_entries(raw, blocks, where)
    layers = []
    for i, (entry, entry_where) in enumerate(entries):
        layers.append(_parse_layer(i, entry, blocks, d_model, entry_where))
    if not layers:
        raise SpecError(f"{where}: layers", "empty; expected at least one layer")
    if layers[0].parallel:
        raise SpecError(f"{where}: layers[0].parallel", "the first layer has no previous layer")
    return ModelSpec(name=name, d_model=d_model, layers=tuple(layers), vocab_size=vocab,
                     dtype=dtype, state_dtype=state_dtype, conv_dtype=conv_dtype,
                     chunk_size=chunk, source=source, path=path)


# ---------------------------------------------------------------- private helpers

def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())    # accepts the literal Infinity / NaN of Hub configs
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(p), f"cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise SpecError(f"{p}:{e.lineno}", f"invalid JSON: {e.msg}") from e
    except ValueError as e:                 # an integer past Python's 4300-digit limit
        raise SpecError(str(p), f"unreadable value: {_one_line(e).split(';')[0]}; "
                        "expected a real model's sizes") from e


def _check_hf_layer_count(config: dict[str, Any], where: str) -> None:
    """Refuse before transformers expands per-layer lists: 10⁸ layers took it minutes."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    layers = text.get("num_hidden_layers")
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise SpecError(f"{where}: num_hidden_layers", f"{layers}; expected at most "
                        f"{MAX_LAYERS}")


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _required(raw, key, typ, where):
    if key not in raw:
        raise SpecError(f"{where}: {key}", "missing required field")
    value = raw[key]
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"{where}: {key}", f"expected an integer, got {value!r}")
    if typ is str and not isinstance(value, str):
        raise SpecError(f"{where}: {key}", f"expected a string, got {value!r}")
    return value


def _positive_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(where, f"expected an integer, got {value!r}")
    if value <= 0:
        raise SpecError(where, f"must be positive, got {value}")
    return value


def _parse_blocks(raw_blocks, d_model, where):
    if not isinstance(raw_blocks, dict):
        raise SpecError(f"{where}: blocks", "expected a mapping of block name to layer fields")
    blocks = {}
    for name, body in raw_blocks.items():
        blocks[str(name)] = _parse_kind_and_params(body, d_model, f"{where}: blocks.{name}")
    return blocks


def _parse_kind_and_params(body, d_model, where):
    if not isinstance(body, dict):
        raise SpecError(where, f"expected a mapping with a kind, got {body!r}")
    body = dict(body)
    parallel = body.pop("parallel", False)
    if not isinstance(parallel, bool):
        raise SpecError(f"{where}.parallel", f"expected true or false, got {parallel!r}")
    if "kind" not in body:
        raise SpecError(f"{where}.kind", f"missing; expected one of {kind_names()}")
    kind_name = body.pop("kind")
    try:
        kind = LayerKind(kind_name)
    except ValueError:
        raise SpecError(f"{where}.kind",
                        f"unknown {kind_name!r}; expected one of {kind_names()}") from None
    return kind, PARAMS[kind].parse(body, d_model, where), parallel


def _layer_entries(raw, blocks, where):
    has_pattern, has_layers = "pattern" in raw, "layers" in raw
    if has_pattern == has_layers:
        raise SpecError(f"{where}: layers",
                        "expected exactly one of 'pattern' (a string of block names) "
                        "or 'layers' (a list)")
    repeat = _positive_int(raw.get("repeat", 1), f"{where}: repeat")
    if has_pattern:
        pattern = raw["pattern"]
        if not isinstance(pattern, str) or not pattern:
            raise SpecError(f"{where}: pattern", f"expected a non-empty string, got {pattern!r}")
        _check_layer_count(len(pattern), repeat, where)
        items = [(ch, f"{where}: pattern[{i}]") for i, ch in enumerate(pattern * repeat)]
    else:
        listed = raw["layers"]
        if not isinstance(listed, list):
            raise SpecError(f"{where}: layers", f"expected a list, got {type(listed).__name__}")
        _check_layer_count(len(listed), repeat, where)
        items = [(item, f"{where}: layers[{i}]") for i, item in enumerate(listed * repeat)]
    return items


def _check_layer_count(n_listed: int, repeat: int, where: str) -> None:
    """Refuse before expanding: `repeat: 100000000` would otherwise fill memory."""
    if n_listed * repeat > MAX_LAYERS:
        raise SpecError(f"{where}: repeat", f"{n_listed} × {repeat} = {n_listed * repeat} "
                        f"layers; expected at most {MAX_LAYERS}")


def _parse_layer(index, entry, blocks, d_model, where):
    if isinstance(entry, str):
        if entry not in blocks:
            known = ", ".join(repr(b) for b in blocks) or "(no blocks defined)"
            raise SpecError(where, f"unknown block {entry!r}; expected one of {known}")
        kind, params, parallel = blocks[entry]
        return LayerSpec(index, kind, params, block=entry, parallel=parallel)
    kind, params, parallel = _parse_kind_and_params(entry, d_model, where)
    return LayerSpec(index, kind, params, parallel=parallel)
