"""Shared fixtures: tiny random encoders for fast unit tests, the real packaged MiniLM once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fewintent.data.locations import find_corpus

# Tests must never reach a hub: everything they load is on disk.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests run tiny tensors: torch's thread pool costs more than it gives there, and on a busy 2-core host its
# spinning made a 20-example L-BFGS fit take seconds instead of milliseconds. Speed is measured by the benchmark.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
# The product's search order (fewintent.data.locations): $FEWINTENT_DATASETS, the downloaded corpora, ../shared.
_FOUND = find_corpus("snips")
DATASETS = _FOUND.parent if _FOUND else Path(os.environ.get("FEWINTENT_DATASETS", ROOT.parent / "shared" / "datasets"))


# CI sets this so a missing corpus folder fails the run instead of skipping the tests that need it.
REQUIRE_DATASETS = os.environ.get("FEWINTENT_REQUIRE_DATASETS", "") not in ("", "0")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The benchmark corpora; tests that need them skip on a fresh clone (no ../shared) unless CI requires them."""
    if not (DATASETS / "snips").is_dir():
        message = (
            f"the benchmark corpora are not at {DATASETS}: `fewintent datasets download --all`, or put the shared "
            "datasets folder beside the repository as ../shared/datasets, or set FEWINTENT_DATASETS to it"
        )
        if REQUIRE_DATASETS:
            pytest.fail(message)
        pytest.skip(message)
    return DATASETS


_TINY_DIRS: dict[tuple[int, int, int], Path] = {}


def tiny_model_dir(seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random 2-layer BERT with MiniLM's tokenizer, saved once per process as a local HF model directory."""
    import tempfile

    from transformers import AutoTokenizer, BertConfig, BertModel

    from fewintent.encoder.encoder import packaged_model_path

    key = (seed, hidden, layers)
    if key not in _TINY_DIRS:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()), local_files_only=True)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=128,
        )
        path = Path(tempfile.mkdtemp(prefix="fewintent-tiny-bert-"))
        BertModel(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        _TINY_DIRS[key] = path
    return _TINY_DIRS[key]


def make_tiny_encoder(seed: int = 0, hidden: int = 32, layers: int = 2):
    """A tiny random encoder (milliseconds per batch, real code paths), loadable again by its path."""
    from fewintent.encoder.encoder import SentenceEncoder

    return SentenceEncoder(str(tiny_model_dir(seed, hidden, layers)), device="cpu")


def format_1(config: dict) -> dict:
    """A model config.json as the release before ClassifierConfig wrote it: the settings at the top level."""
    config = {**config, **config.pop("classifier"), **(config.pop("training") or {}), "format_version": 1}
    adapter = config.pop("adapter", "none")
    config["meta"] = {**config.get("meta", {}), "adapter": {"source": adapter} if adapter != "none" else None}
    for key in ("base", "steps", "seed", "inner_lr", "fallback_threshold", "device"):
        config.pop(key, None)
    return config


@pytest.fixture
def tiny_encoder():
    return make_tiny_encoder()


@pytest.fixture
def small_file(tmp_path) -> Path:
    """Four examples of two intents (card, balance) as a JSONL file."""
    from helpers import SMALL

    p = tmp_path / "small.jsonl"
    p.write_text(SMALL)
    return p


@pytest.fixture(scope="session")
def real_encoder():
    """The packaged all-MiniLM-L6-v2 (loaded once; tests must not attach LoRA to it)."""
    from fewintent.encoder import SentenceEncoder

    return SentenceEncoder(device="cpu")
