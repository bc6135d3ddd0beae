"""Model directory: safetensors tensors + JSON config + README model card, written atomically. Never pickle.

The classifier's tensors are read and written as numpy arrays (``safetensors.numpy``): a model on an ONNX encoder
loads, edits and saves without torch; only a torch encoder's LoRA weights go through torch.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fewintent.data.intentset import DEFAULT_OOS_LABEL
from fewintent.encoder.base import Encoder
from fewintent.encoder.lora import LoraSettings, has_lora
from fewintent.encoder.onnx_runtime import OnnxEncoder, read_spec
from fewintent.errors import CorruptModelError, FewIntentError, training_parts
from fewintent.heads.registry import HEADS
from fewintent.model.calibration import check_threshold
from fewintent.model.config import TRAINING_FIELDS, ClassifierConfig, TrainingArguments
from fewintent.model.oos import oos_score_class
from fewintent.model.storage import (
    _SAVE_LOCK,
    CONFIG,
    FORMAT,
    atomic_directory,
    check_model_path,
    model_dir_lock,
    real_path,
    recover,
)
from fewintent.model.storage import is_model_dir as is_model_dir  # re-exported, as is model_dir_lock

if TYPE_CHECKING:
    from fewintent.model.protocols import Classifier

    _C = TypeVar("_C", bound=Classifier)

FORMAT_VERSION = 2
"""2: the classifier's settings are one ``classifier`` object (:class:`ClassifierConfig`); 1 had them at the top.
How it was trained is the ``training`` object (:class:`TrainingArguments`, provenance); releases before it kept
those fields inside ``classifier``, and they are read from there."""
TENSORS = "model.safetensors"
LORA = "lora.safetensors"
CARD = "README.md"


def _versions(encoder: Encoder) -> dict[str, str]:
    """fewintent's version and the inference libraries' the encoder runs on (torch is never loaded for this)."""
    from fewintent.version import __version__

    libraries = ("onnxruntime",) if isinstance(encoder, OnnxEncoder) else ("torch", "transformers")
    return {"fewintent": __version__, **{name: importlib.import_module(name).__version__ for name in libraries}}


def save_model(clf: Classifier, path: Path, *, card_extra: dict[str, Any] | None = None) -> Path:
    """Write into a temporary sibling, then swap it in with renames: a crash leaves the old model loadable."""
    path = check_model_path(path)
    with model_dir_lock(path, exclusive=True), _SAVE_LOCK:  # this order: a transaction holding the first saves
        return _save_model(clf, path, card_extra or {})


def _save_model(clf: Classifier, path: Path, card_extra: dict[str, Any]) -> Path:
    table = clf.table
    settings = lora_settings(clf)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(clf.encoder),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classifier": clf.config.to_dict(),
        "training": clf.training.to_dict() if clf.training is not None else None,
        "base_model": clf.encoder.name,
        "base_sha256": clf.encoder.sha256,
        "tokenizer_sha256": clf.encoder.tokenizer_sha256,
        "max_length": clf.encoder.max_length,
        "lora": settings.to_dict() if settings else None,
        "labels": list(table.labels),
        # From the one table read above, not clf.counts(): a concurrent add_intent must not split labels/counts.
        "counts": table.counts(),
        "threshold": table.threshold,
        "threshold_manual": clf.threshold_manual,
        "oos_temperature": table.oos_temperature,
        "meta": _jsonable(clf.meta),
    }
    if table.tuned is not None:  # derived from the table on every save (live edits change it); never read back
        config["tuned_intents"] = table.tuned_intents()
    onnx_files: dict[str, Path] = clf.encoder.files() if isinstance(clf.encoder, OnnxEncoder) else {}
    if isinstance(clf.encoder, OnnxEncoder):
        config["encoder"] = clf.encoder.spec
    with atomic_directory(path) as tmp:
        save_file(table.to_tensors(), str(tmp / TENSORS))
        if settings is not None and not isinstance(clf.encoder, OnnxEncoder):  # a torch encoder's adapter
            from safetensors.torch import save_file as save_torch

            from fewintent.encoder.encoder import SentenceEncoder
            from fewintent.encoder.lora import lora_state

            assert isinstance(clf.encoder, SentenceEncoder)
            save_torch({k: v.contiguous() for k, v in lora_state(clf.encoder).items()}, str(tmp / LORA))
        for name, source in onnx_files.items():  # the graph travels with the model (a hard link when it can)
            try:
                os.link(source, tmp / name)
            except OSError:
                shutil.copyfile(source, tmp / name)
        (tmp / CONFIG).write_text(strict_json(config) + "\n")
        (tmp / CARD).write_text(model_card(config, card_extra))
    return path


def lora_settings(clf: Classifier) -> LoraSettings | None:
    """The adapter the encoder carries: the tuned one (the base's adapter and the tuned layers as one) after
    ``tune``, else the base's; None without LoRA."""
    if not has_lora(clf.encoder):
        return None
    tuned = (clf.meta.get("tune") or {}).get("lora")
    if tuned:
        return LoraSettings.from_dict(tuned)
    return LoraSettings.from_dict((clf.meta.get("adapter") or {}).get("lora", {}))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def strict_json(obj: Any) -> str:
    """JSON that strict parsers accept: NaN or infinity is an error here, not a silent ``NaN`` in the file."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False)
    except ValueError as e:
        raise FewIntentError(f"refusing to write a model config with a non-finite number ({e})") from e


def load_model(path: Path, cls: Callable[..., _C], *, device: str = "auto") -> _C:
    """Read a model directory into a new ``cls`` (IntentClassifier: passed in, so this module never imports it),
    under its shared lock."""
    path = path.expanduser().absolute()
    with model_dir_lock(path, exclusive=False):
        return _load_model(recover(path), cls, device)


def _load_model(path: Path, cls: Callable[..., _C], device: str) -> _C:
    if not path.exists():
        raise CorruptModelError(f"{path}: no such model directory (create one with `fewintent adapt`)")
    if not path.is_dir():
        raise CorruptModelError(f"{path}: not a directory; a model is a directory written by `fewintent adapt`")
    try:
        config = json.loads((path / CONFIG).read_text())
    except FileNotFoundError as e:
        raise CorruptModelError(f"{path}: not a fewintent model (no {CONFIG})") from e
    except ValueError as e:
        raise CorruptModelError(f"{path}: {CONFIG} is corrupt ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CorruptModelError(f'{path}: not a fewintent model ({CONFIG} has no "format": "{FORMAT}")')
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptModelError(
            f'{path}: {CONFIG} has an invalid "format_version" ({version!r:.20}); the file is corrupt'
        )
    if version > FORMAT_VERSION:
        raise CorruptModelError(f"{path}: written by a newer fewintent (format {version}); upgrade")
    _check_config_types(path, config)
    settings, training = _read_settings(path, config, version)
    try:
        t = load_file(str(path / TENSORS))
        labels = tuple(config["labels"])
    except (FileNotFoundError, SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise CorruptModelError(f"{path}: model files are missing or corrupt ({type(e).__name__}: {e})") from e
    if "prototypes" not in t or t["prototypes"].ndim != 2:
        raise CorruptModelError(f"{path}: {TENSORS} lacks its prototypes")
    base = config.get("base_model")
    onnx_spec = read_spec(config)
    if onnx_spec is not None:  # the adapter is merged into the graph; the graph's sha256 is checked instead
        encoder: Encoder = OnnxEncoder(path, onnx_spec, name=str(base))
        if t["prototypes"].shape[1] != encoder.dim:
            raise CorruptModelError(f"{path}: prototypes and the ONNX encoder have different dimensions")
        return _restore(path, config, (settings, training), t, labels, encoder, cls)
    with training_parts(f"the model {path} (a torch encoder; `fewintent export` makes an ONNX copy that does not)"):
        from safetensors.torch import load_file as load_torch

        from fewintent.encoder.encoder import SentenceEncoder
        from fewintent.encoder.lora import LoraSettings, attach_lora, load_lora_state, merge_lora
    encoder = SentenceEncoder(base, device=device, max_length=int(config.get("max_length", 128)))
    if t["prototypes"].shape[1] != encoder.dim:
        raise FewIntentError(
            f"{path}: prototypes have {t['prototypes'].shape[1]} dimensions but {base} gives {encoder.dim}: "
            "wrong base model"
        )
    if config.get("base_sha256") and encoder.sha256 and config["base_sha256"] != encoder.sha256:
        raise FewIntentError(
            f"{path}: adapted on {base} with sha256 {config['base_sha256'][:12]}..., but the encoder found has "
            f"{encoder.sha256[:12]}...; install the same base model"
        )
    if config.get("tokenizer_sha256") and encoder.tokenizer_sha256 != config["tokenizer_sha256"]:
        raise FewIntentError(
            f"{path}: adapted with a tokenizer of sha256 {config['tokenizer_sha256'][:12]}..., but {base} now has "
            f"{(encoder.tokenizer_sha256 or 'none')[:12]}...; restore the base model's tokenizer files"
        )
    if config.get("lora"):
        try:
            lora = load_torch(str(path / LORA))
        except (FileNotFoundError, SafetensorError, OSError) as e:
            raise CorruptModelError(f"{path}: {LORA} is missing or corrupt ({e})") from e
        attach_lora(encoder, LoraSettings.from_dict(config["lora"]))
        load_lora_state(encoder, lora)
        merge_lora(encoder)
    return _restore(path, config, (settings, training), t, labels, encoder, cls)


def _restore(
    path: Path,
    config: dict[str, Any],
    read: tuple[ClassifierConfig, TrainingArguments | None],
    t: dict[str, np.ndarray],
    labels: tuple[str, ...],
    encoder: Encoder,
    cls: Callable[..., _C],
) -> _C:
    settings, training = read
    try:
        score = oos_score_class(settings.oos_score)
        threshold = check_threshold(config["threshold"], cosine=score.cosine, highest=score.highest)
        clf = cls(encoder, settings, meta=config.get("meta") or {}, training=training)
    except (KeyError, ValueError, TypeError, FewIntentError) as e:
        raise CorruptModelError(f"{path}: {CONFIG} is corrupt ({e})") from e
    temperature = config.get("oos_temperature")
    try:
        return clf.restore(
            labels,
            t,
            threshold=threshold,
            threshold_manual=bool(config.get("threshold_manual", False)),
            oos_temperature=None if temperature is None else float(temperature),
        )
    except (ValueError, TypeError) as e:
        raise CorruptModelError(f"{path}: {TENSORS} {e}") from e


def _read_settings(
    path: Path, config: dict[str, Any], version: int
) -> tuple[ClassifierConfig, TrainingArguments | None]:
    """The classifier's settings and how it was trained: format 2 stores the settings as one object (and, before
    the ``training`` object, the training arguments inside it); format 1 had them at the top level."""
    try:
        raw = dict(config.get("classifier") or {}) if version >= 2 else _format_1_settings(config)
        if not isinstance(raw, dict):
            raise FewIntentError("classifier must be an object")
        older = {k: raw.pop(k) for k in list(raw) if k in TRAINING_FIELDS}
        recorded = config.get("training")
        training = (
            TrainingArguments.from_dict(recorded if isinstance(recorded, dict) else older)
            if (recorded or older)
            else None
        )
        return ClassifierConfig.from_dict(raw), training
    except (ValueError, TypeError, FewIntentError) as e:
        raise CorruptModelError(f"{path}: {CONFIG} has invalid settings ({e})") from e


def _format_1_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config's settings, with the defaults of the release that wrote it where a key is missing (a
    directory from before the linear head has no "head"; from before intent names, no "intent_names")."""
    meta = config.get("meta") or {}
    adapter = (meta.get("adapter") or {}).get("source") if isinstance(meta, dict) else None
    return {
        "base": config.get("base_model"),
        "adapter": adapter or "none",
        "steps": meta.get("steps", 0) if isinstance(meta, dict) else 0,
        "seed": meta.get("seed", 0) if isinstance(meta, dict) else 0,
        "oos_label": config.get("oos_label", DEFAULT_OOS_LABEL),
        "in_scope_recall": config.get("in_scope_recall", 0.95),
        "scale": config.get("scale", 20.0),
        "head": config.get("head", "prototype"),
        "head_c": config.get("head_c", 30.0),
        "oos_score": config.get("oos_score", "prototype"),
        "intent_names": config.get("intent_names", False),
    }


def _check_config_types(path: Path, config: dict[str, Any]) -> None:
    """Fields a hand-edited or damaged config.json could get wrong without breaking its JSON, or leave out: a
    missing field must not load as a default that answers differently (no adapter, default settings)."""
    missing = [key for key in _required_fields(path, config) if config.get(key) is None]
    if missing:
        raise CorruptModelError(
            f"{path}: {CONFIG} lacks {', '.join(map(repr, missing))}, which a format-{config['format_version']} "
            "model needs (loading without would answer differently); restore the file or adapt the model again"
        )
    if config["format_version"] >= 2 and not isinstance(config["classifier"], dict):
        raise CorruptModelError(f'{path}: {CONFIG} "classifier" must be an object of settings')
    labels = config.get("labels")
    if (
        not isinstance(labels, list)
        or not all(isinstance(x, str) and x.strip() for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise CorruptModelError(f'{path}: {CONFIG} "labels" must be a list of distinct intent names')
    checks = {
        "max_length": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "threshold_manual": lambda v: isinstance(v, bool),
    }
    for key, ok in checks.items():
        if key in config and not ok(config[key]):
            raise CorruptModelError(f'{path}: {CONFIG} has an invalid "{key}" ({config[key]!r:.30})')


def _required_fields(path: Path, config: dict[str, Any]) -> list[str]:
    """What a model of this format always wrote: ``classifier`` (format 2), ``lora`` for a torch model that has
    an adapter (its weights file, or the meta naming one), and everything a torch encoder is rebuilt from."""
    required = ["labels", "threshold", "base_model"]
    if config["format_version"] >= 2:
        required += ["classifier", "oos_temperature"]
    if config.get("encoder") is None:  # a torch encoder: an ONNX graph has its adapter merged and its length inside
        meta = config.get("meta")
        adapter = meta.get("adapter") if isinstance(meta, dict) else None
        if (path / LORA).exists() or (isinstance(adapter, dict) and adapter.get("lora")):
            required.append("lora")
        if config["format_version"] >= 2:
            required.append("max_length")
    return required


def export_model(model_dir: Path, output: Path, cls: Callable[..., _C], *, quantize: str | None = None) -> _C:
    """Write ``model_dir`` again with its encoder as an ONNX graph (LoRA merged; int8 with ``quantize``):
    same intents, head, threshold and config; every loader accepts the result."""
    output = check_model_path(output)
    if real_path(output) == real_path(model_dir):
        raise FewIntentError("export writes a new model directory: give an -o other than the model itself")
    with training_parts("`fewintent export`"):
        from fewintent.encoder.encoder import SentenceEncoder
        from fewintent.encoder.onnx import export_encoder
    clf = load_model(model_dir, cls, device="cpu")
    if isinstance(clf.encoder, OnnxEncoder):
        raise FewIntentError(f"{model_dir} is already an ONNX model; export from the torch model directory")
    assert isinstance(clf.encoder, SentenceEncoder)
    with tempfile.TemporaryDirectory() as scratch:
        spec = export_encoder(clf.encoder, Path(scratch), quantize=quantize)
        clf.encoder = OnnxEncoder(Path(scratch), spec, name=clf.encoder.name)
        clf.meta = {**clf.meta, "exported_from": str(model_dir), "onnx": {"quantize": quantize}}
        save_model(clf, output)
    clf.encoder = OnnxEncoder(output, spec, name=clf.encoder.name)  # the scratch copy is gone: read the saved one
    return clf


def _tuning_front(config: dict[str, Any]) -> dict[str, Any]:
    """The card's front-matter entry for a tuned model (``adapt --tune``): how, and which intents tuning saw."""
    tune = (config.get("meta") or {}).get("tune")
    if not tune:
        return {}
    return {"tuning": {**tune, "tuned_intents": config.get("tuned_intents", [])}}


def _tuning_lines(config: dict[str, Any]) -> list[str]:
    tune = (config.get("meta") or {}).get("tune")
    if not tune:
        return []
    recipe = tune["recipe"]
    seen = config.get("tuned_intents", [])
    added = [label for label in config["labels"] if label not in set(seen)]
    held = tune["held_out_accuracy"][tune["kept_epoch"]] if tune["held_out_accuracy"] else None
    saved = (tune.get("lora") or {}).get("r")
    stacked = ""
    if (config.get("meta") or {}).get("adapter"):  # the adapter and the tuned layers are saved joined as one
        stacked = " on top of the adapter" + (
            f" (saved joined with it as one rank-{saved} adapter: `tuning.lora.r` above)"
            if saved and saved != recipe["rank"]
            else ""
        )
    lines = [
        f"The encoder was tuned on these examples (`fewintent adapt --tune`): rank-{recipe['rank']} LoRA layers"
        f"{stacked} trained with the head "
        f"({recipe['objective']}, learning rate {recipe['lr']:g}) for {tune['epochs_run']} epoch(s)"
        + (" until the time budget ran out" if tune["stopped_by"] == "time" else "")
        + f"; epoch {tune['kept_epoch']} was kept"
        + (
            f" (held-out {'micro-F1' if _multi_label_front(config['classifier']) else 'accuracy'} {100 * held:.1f}%)"
            if held is not None
            else ""
        )
        + f". {tune['held_out_examples']} examples were held out of training; the out-of-scope threshold "
        "comes from them.",
        f"Intents seen in tuning: {len(seen)} of {len(config['labels'])}"
        + (f"; added later (head refitted, encoder not re-tuned): {', '.join(added)}." if added else "."),
        "",
    ]
    return lines


def _share_record(config: dict[str, Any]) -> dict[str, Any] | None:
    """How ``calibrate --logs`` set the threshold (``meta.calibration``), while it still describes the saved one."""
    record = (config.get("meta") or {}).get("calibration")
    if not isinstance(record, dict) or record.get("threshold") != config["threshold"]:
        return None
    return record


def _share_lines(config: dict[str, Any]) -> list[str]:
    record = _share_record(config)
    if record is None:
        return []
    how = "estimated from them" if record.get("share_estimated") else "stated"
    return [
        f"The threshold was chosen on {record['messages']} unlabelled logged messages for an out-of-scope share of "
        f"{100 * record['oos_share']:.1f}% ({how}), for the best expected {record['objective'].upper()} "
        "(`fewintent calibrate --logs`).",
        "",
    ]


def _onnx_front(config: dict[str, Any]) -> dict[str, Any]:
    """The card's front-matter entries for an exported model (``fewintent export``): ONNX, and int8 when quantized."""
    spec = config.get("encoder")
    if not isinstance(spec, dict) or spec.get("format") != "onnx":
        return {}
    return {"encoder_format": "onnx", "quantize": spec.get("quantize")}


def _onnx_lines(config: dict[str, Any]) -> list[str]:
    front = _onnx_front(config)
    if not front:
        return []
    source = (config.get("meta") or {}).get("exported_from")
    return [
        "The encoder is an ONNX graph"
        + (" with int8-quantized weights" if front["quantize"] == "int8" else " (float32)")
        + " written by `fewintent export`"
        + (f" from `{source}`" if source else "")
        + ": it runs on onnxruntime without torch, its adapter merged into the graph"
        + (
            "; int8 answers can differ slightly from the torch model's, check them with `fewintent evaluate`."
            if front["quantize"] == "int8"
            else "."
        ),
        "",
    ]


def _multi_label_front(settings: dict[str, Any]) -> dict[str, Any]:
    """The card's front-matter entry for a multi-label model (empty for a single-label one)."""
    head = HEADS.get(settings["head"])
    if head is None or not head.multi_label:
        return {}
    return {
        "multi_label": True,
        "multi_label_decision": {
            "head": settings["head"],
            "thresholds": "one probability cut shared by every intent, from cross-validation folds of the examples",
            "out_of_scope": "no intent passes its threshold",
        },
    }


def _multi_label_lines(config: dict[str, Any]) -> list[str]:
    settings = config["classifier"]
    return [
        'This model is **multi-label**: a message can carry several intents at once ("I lost my card, block it" '
        f"asks for two things). The `{settings['head']}` head makes one decision per intent, over one "
        "threshold chosen by cross-validation on the examples"
        + (", with each intent's name as one more example" if settings["intent_names"] else "")
        + ". Every intent that passes is returned, most confident first (`intents` in `predict --json` and "
        f"`/predict`); when none passes, the message is out of scope (`{settings['oos_label']}`). Confidences are "
        "each intent's own probability and need not sum to 1."
    ]


def _shown(obj: Any) -> Any:
    """Floats at 6 significant digits for people to read (0.9999999999999999 reads 1.0); config.json keeps them
    whole."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _shown(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shown(v) for v in obj]
    return obj


def model_card(config: dict[str, Any], extra: dict[str, Any]) -> str:
    """README with YAML front matter, in the style of Hugging Face model cards."""
    import yaml

    adapter = (config.get("meta") or {}).get("adapter") or {}
    settings = config["classifier"]
    multi = _multi_label_front(settings)
    onnx = _onnx_front(config)
    exported = ["onnx", *([onnx["quantize"]] if onnx.get("quantize") else [])] if onnx else []
    front = {
        "library_name": "fewintent",
        "pipeline_tag": "text-classification",
        "base_model": config["base_model"],
        "tags": ["intent-classification", "few-shot", "fewintent", *(["multi-label"] if multi else []), *exported],
        "labels": config["labels"],
        "examples_per_intent": config["counts"],
        "oos_label": settings["oos_label"],
        "oos_threshold": round(config["threshold"], 4),
        **({"oos_share": (_share_record(config) or {}).get("oos_share")} if _share_record(config) else {}),
        "adapter": adapter.get("source"),
        **onnx,
        **multi,
        "settings": settings,
        "training": config.get("training"),
        **_tuning_front(config),
        **extra,
    }
    lines = [
        "---",
        yaml.safe_dump(_shown(front), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        "# fewintent intent classifier",
        "",
        f"Adapted from {sum(config['counts'].values())} {'intent labels on examples' if multi else 'examples'} "
        f"over {len(config['labels'])} intents on "
        f"`{config['base_model']}`"
        + (f" with the meta-learned adapter `{adapter.get('source')}`." if adapter else "."),
        *(
            _multi_label_lines(config)
            if multi
            else [
                f"Intents are ranked by the `{settings['head']}` head"
                + (", with each intent's name as one more example. " if settings["intent_names"] else ". ")
                + f"Messages whose out-of-scope score (`{settings['oos_score']}`) is below "
                f"{config['threshold']:.3f} are answered `{settings['oos_label']}` (out of scope)."
            ]
        ),
        "",
        *_onnx_lines(config),
        *_tuning_lines(config),
        *_share_lines(config),
        "```bash",
        'fewintent predict THIS_DIR "your message here" --json',
        "```",
        "",
    ]
    return "\n".join(lines)
