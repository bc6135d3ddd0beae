"""Accurate mode (``adapt --tune``) and the shared adapt-time training path, on tiny random encoders."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_encoder, tiny_model_dir
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.data.intentset import name_example
from fewintent.encoder.lora import (
    LoraSettings,
    attach_lora,
    load_lora_state,
    lora_parameters,
    lora_state,
    merge_lora,
    merge_stack,
    save_adapter,
    stack_lora,
)
from fewintent.encoder.registry import MPNET, tune_defaults_for
from fewintent.model import tuning
from fewintent.model.calibration import calibrate_threshold, leave_one_out_scores
from fewintent.model.config import AdaptArguments
from fewintent.model.persistence import lora_settings
from fewintent.model.tuning import (
    DEFAULT_RECIPE,
    Objective,
    TrainingStatus,
    TuneRecipe,
    held_out_fold,
    supervised_contrastive,
    tune_encoder,
)

INTENTS = {
    "greet": ["hi there", "hello", "good morning", "hey how are you", "hiya friend"],
    "card_arrival": ["where is my card", "my card has not arrived", "card delivery time", "when does the card come"],
    "refund": ["i want my money back", "refund my purchase", "how do i get a refund", "can i be reimbursed", "refund"],
    "bye": ["bye", "see you later", "goodbye for now"],
}
UNREGISTERED = tune_defaults_for(None)
"""How --tune trains an unregistered base (the tiny test encoders): MiniLM's epochs and stopping rule."""
QUERIES = ["hello friend", "card still missing", "money back please", "see you", "what is the weather"]


def _data() -> IntentSet:
    return IntentSet.from_pairs([(t, i) for i, texts in INTENTS.items() for t in texts])


def _tuned(**overrides) -> IntentClassifier:
    args = {"base": str(tiny_model_dir()), "adapter": "none", "device": "cpu", "tune": True, "seed": 0, **overrides}
    return IntentClassifier.adapt(_data(), **args)


def _tiny_adapter(tmp_path, seed: int = 1):
    """A LoRA adapter for the tiny base with non-zero weights (as a meta-learned one would have)."""
    enc = make_tiny_encoder()
    settings = attach_lora(enc)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(enc).values():
            p.copy_(torch.randn_like(p) * 0.3)
    save_adapter(enc, tmp_path / "adapter", settings, {"algorithm": "protonet"})
    return tmp_path / "adapter"


def test_tune_records_how_it_tuned_and_which_intents_it_saw():
    statuses: list[TrainingStatus] = []
    clf = _tuned(training=statuses.append)
    tune = clf.meta["tune"]
    # the tiny base is unregistered: MiniLM's epochs and stopping rule; its 2 layers, all tuned
    assert tune["recipe"] == {**DEFAULT_RECIPE.to_dict(), **UNREGISTERED, "layers": 0}
    assert tune["epochs_run"] == UNREGISTERED["epochs"] and tune["stopped_by"] == "epochs"
    assert len(tune["held_out_accuracy"]) == tune["epochs_run"] + 1  # epoch 0 = before training
    assert tune["held_out_examples"] == 4 and tune["trained_examples"] == len(_data()) - 4  # one per intent
    assert clf.tuned_intents == list(INTENTS)
    assert lora_settings(clf) is not None and lora_settings(clf).r == DEFAULT_RECIPE.rank
    ends = [s for s in statuses if s.epoch_end]
    assert [s.epoch for s in ends] == list(range(1, UNREGISTERED["epochs"] + 1))
    assert statuses[-1].step == statuses[-1].total and "held-out acc" in ends[-1].info()


def test_tuned_model_saves_and_loads_with_identical_predictions(tmp_path):
    clf = _tuned()
    clf.save(tmp_path / "m")
    loaded = IntentClassifier.load(tmp_path / "m", device="cpu")
    assert _same_predictions(loaded, clf)
    assert loaded.tuned_intents == clf.tuned_intents
    assert np.array_equal(loaded.table.tuned, clf.table.tuned)
    assert loaded.threshold == clf.threshold
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["tune"] is True and config["tuned_intents"] == list(INTENTS)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "tuning:" in card and "Intents seen in tuning: 4 of 4." in card


def _same_predictions(a: IntentClassifier, b: IntentClassifier) -> bool:
    pa, pb = a.predict(QUERIES), b.predict(QUERIES)
    assert [p.intent.name for p in pa] == [p.intent.name for p in pb]
    assert [p.is_oos for p in pa] == [p.is_oos for p in pb]
    np.testing.assert_allclose([p.intent.confidence for p in pa], [p.intent.confidence for p in pb], atol=1e-5)
    return True


def test_tuned_on_top_of_an_adapter_saves_both_as_one_and_loads_the_same(tmp_path):
    clf = _tuned(adapter=str(_tiny_adapter(tmp_path)))
    assert lora_settings(clf) is not None and lora_settings(clf).r == 8 + DEFAULT_RECIPE.rank
    clf.save(tmp_path / "m")
    loaded = IntentClassifier.load(tmp_path / "m", device="cpu")
    assert _same_predictions(loaded, clf)
    emb = clf.encoder.encode(QUERIES)
    torch.testing.assert_close(loaded.encoder.encode(QUERIES), emb, atol=1e-5, rtol=0)


def test_stacked_lora_merges_to_the_same_encoder_as_its_two_layers(tmp_path):
    enc = make_tiny_encoder()
    attach_lora(enc)
    below = LoraSettings(target_modules=["query", "key", "value"])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lora_parameters(enc).values():
            p.copy_(torch.randn_like(p) * 0.3)
    stack = stack_lora(enc, LoraSettings(r=4, alpha=12), below)
    with torch.no_grad():
        for p in lora_parameters(enc).values():
            p.copy_(torch.randn_like(p) * 0.3)
    live = enc.encode(QUERIES)
    combined = merge_stack(enc, stack)
    assert combined.r == 12 and combined.alpha == 12
    torch.testing.assert_close(enc.encode(QUERIES), live, atol=1e-5, rtol=0)
    fresh = make_tiny_encoder()  # what loading a model directory does with the one adapter
    attach_lora(fresh, combined)
    load_lora_state(fresh, lora_state(enc))
    merge_lora(fresh)
    torch.testing.assert_close(fresh.encode(QUERIES), live, atol=1e-5, rtol=0)


def test_threshold_comes_from_the_held_out_examples_only():
    clf = _tuned()
    t = clf.table
    assert t.tuned is not None and int((~t.tuned).sum()) == 4
    names = t.names()
    held = leave_one_out_scores(t.support, t.support_labels, len(t.labels), names, rows=~t.tuned)
    assert held.size == 4
    assert clf.threshold == pytest.approx(calibrate_threshold(held, None, in_scope_recall=clf.config.in_scope_recall))
    in_sample = leave_one_out_scores(t.support, t.support_labels, len(t.labels), names)
    assert in_sample.size == len(_data())  # what an untuned model calibrates on, here refused


def test_held_out_fold_keeps_every_intent_trained():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    held = held_out_fold(labels, 0.2, torch.Generator().manual_seed(0))
    assert [int(held[labels == c].sum()) for c in range(4)] == [2, 1, 1, 0]
    assert not held_out_fold(labels, 0.0, torch.Generator()).any()


def test_tune_time_stops_cleanly_mid_epoch_with_the_best_state(monkeypatch):
    clock = iter(float(i) for i in range(10_000))
    monkeypatch.setattr(tuning, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    recipe = TuneRecipe(batch_size=4, epochs=3)
    enc = make_tiny_encoder()
    result = tune_encoder(enc, _data(), recipe, seed=0, time_budget=14.5)  # each clock read is a second
    assert result.stopped_by == "time"
    assert 0 < result.steps < 3 * 5  # five batches an epoch: stopped inside the first
    assert result.epochs_run == 1 and len(result.held_out_accuracy) == 2  # the partial epoch was scored
    assert result.kept_epoch in (0, 1)
    clf = IntentClassifier(enc).fit(_data(), tuned=[not h for h in result.held_out])
    assert len(clf.predict(QUERIES)) == len(QUERIES)


def test_tune_time_through_adapt_records_the_stop():
    clf = _tuned(tune_time=1e-6)
    tune = clf.meta["tune"]
    assert tune["stopped_by"] == "time" and tune["steps"] == 0 and tune["kept_epoch"] == 0
    untuned = IntentClassifier.adapt(_data(), base=str(tiny_model_dir()), adapter="none", device="cpu")
    # nothing trained: the tuned layers are zero, so the encoder is the untuned one
    torch.testing.assert_close(clf.encoder.encode(QUERIES), untuned.encoder.encode(QUERIES), atol=1e-6, rtol=0)


def test_tuning_is_deterministic_by_seed():
    a, b, c = _tuned(seed=3), _tuned(seed=3), _tuned(seed=4)
    assert np.array_equal(a.predict_proba(QUERIES), b.predict_proba(QUERIES))
    assert a.threshold == b.threshold
    assert not torch.equal(a.encoder.encode(QUERIES), c.encoder.encode(QUERIES))


@pytest.mark.parametrize(
    "recipe",
    [
        TuneRecipe(objective=Objective.CE),
        TuneRecipe(objective=Objective.CE, label_smoothing=0.1),
        TuneRecipe(objective=Objective.SUPCON),
        TuneRecipe(objective=Objective.CE_SUPCON),
        TuneRecipe(objective=Objective.RDROP),
        TuneRecipe(objective=Objective.PROTO),
    ],
    ids=["ce", "ce-ls", "supcon", "ce+supcon", "rdrop", "proto"],
)
def test_every_objective_trains_the_lora_layers(recipe):
    enc = make_tiny_encoder()
    before = enc.encode(QUERIES)
    result = tune_encoder(enc, _data(), replace(recipe, lr=1e-2, stopping="last"), seed=0)
    assert result.steps > 0 and result.kept_epoch == result.epochs_run == UNREGISTERED["epochs"]
    assert not torch.allclose(enc.encode(QUERIES), before, atol=1e-4)


def test_a_recipe_without_epochs_or_stopping_rule_takes_the_bases_and_an_explicit_one_wins():
    enc = make_tiny_encoder()
    enc.name = MPNET.name  # the tiny weights under a registered name: that base's --tune settings apply
    result = tune_encoder(enc, _data(), TuneRecipe(lr=1e-2), seed=0)
    assert (result.recipe.epochs, result.recipe.stopping) == (MPNET.tune_epochs, MPNET.tune_stopping)
    assert result.epochs_run == MPNET.tune_epochs
    assert MPNET.tune_stopping != "last" or result.kept_epoch == MPNET.tune_epochs
    enc = make_tiny_encoder()
    enc.name = MPNET.name
    result = tune_encoder(enc, _data(), TuneRecipe(lr=1e-2, epochs=1, stopping="best"), seed=0)
    assert (result.recipe.epochs, result.recipe.stopping, result.epochs_run) == (1, "best", 1)


def test_supervised_contrastive_prefers_clustered_intents():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-0.1, 1.0], [0.1, 1.0]]), dim=-1)
    mixed = clustered[[0, 2, 1, 3]]
    assert supervised_contrastive(clustered, labels, 0.1) < supervised_contrastive(mixed, labels, 0.1)
    assert float(supervised_contrastive(clustered, torch.tensor([0, 1, 2, 3]), 0.1)) == 0.0  # no positives


def test_live_edits_refit_on_the_tuned_encoder_without_retuning(tmp_path):
    clf = _tuned()
    lora = {k: v.clone() for k, v in clf.encoder.merged_lora.items()}
    emb = clf.encoder.encode(QUERIES)
    clf.add_intent("weather", ["what is the weather", "will it rain today", "forecast for tomorrow"])
    assert clf.tuned_intents == list(INTENTS)  # the new intent was not seen in tuning
    assert "weather" in clf.labels and int((~clf.table.tuned).sum()) == 4 + 3
    torch.testing.assert_close(clf.encoder.encode(QUERIES), emb, atol=0, rtol=0)
    assert all(torch.equal(v, lora[k]) for k, v in clf.encoder.merged_lora.items())
    clf.add_intent("greet", ["hello again", "hi hi"])  # replaced examples: not seen in tuning any more
    assert "greet" not in clf.tuned_intents
    clf.remove_intent("refund")
    assert len(clf.table.tuned) == len(clf.table.support_labels)
    assert clf.tuned_intents == ["card_arrival", "bye"]
    clf.save(tmp_path / "m")
    assert IntentClassifier.load(tmp_path / "m", device="cpu").tuned_intents == ["card_arrival", "bye"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Intents seen in tuning: 2 of 4; added later (head refitted, encoder not re-tuned): weather, greet." in card


def test_fit_refuses_flags_that_do_not_fit_the_examples():
    clf = IntentClassifier(make_tiny_encoder())
    with pytest.raises(FewIntentError, match="4 flags for 17 examples"):
        clf.fit(_data(), tuned=[True] * 4)


def test_tune_settings_are_checked():
    with pytest.raises(FewIntentError, match="choose one"):
        AdaptArguments(tune=True, steps=3)
    with pytest.raises(FewIntentError, match="tune_time must be a positive number"):
        AdaptArguments(tune=True, tune_time=0)
    with pytest.raises(FewIntentError, match="use adapt"):
        IntentClassifier.unfitted(base=str(tiny_model_dir()), adapter="none", tune=True)


def test_steps_reports_progress_through_the_same_status():
    statuses: list[TrainingStatus] = []
    IntentClassifier.adapt(
        _data(), base=str(tiny_model_dir()), adapter="none", device="cpu", steps=3, training=statuses.append
    )
    assert [s.step for s in statuses] == [1, 2, 3] and all(s.total == 3 and s.loss is not None for s in statuses)


def test_cli_adapt_tune_writes_a_tuned_model(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for i, ts in INTENTS.items() for t in ts))
    out = tmp_path / "model"
    args = ["adapt", str(train), "-o", str(out), "--base", str(tiny_model_dir()), "--adapter", "none"]
    result = CliRunner().invoke(app, [*args, "--tune", "--tune-time", "600", "--seed", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "tuned 4 epochs" in result.output and "held-out accuracy" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["tune_time"] == 600 and config["meta"]["tune"]["kept_epoch"] >= 0
    bad = CliRunner().invoke(app, [*args, "--tune", "--steps", "2"])
    assert bad.exit_code == 1 and "choose one" in bad.output


def test_get_intents_says_which_intents_tuning_saw(tmp_path):
    testclient = pytest.importorskip("fastapi.testclient")
    from fewintent.serve.app import ServeSettings, create_app

    clf = _tuned()
    clf.add_intent("weather", ["what is the weather", "will it rain"])
    clf.save(tmp_path / "m")
    with testclient.TestClient(create_app(ServeSettings(model_dir=str(tmp_path / "m")), clf)) as c:
        intents = {i["name"]: i["tuned"] for i in c.get("/intents").json()["intents"]}
    assert intents == {**{name: True for name in INTENTS}, "weather": False}


def test_trainer_reuses_a_loaded_encoder_and_records_how_it_trained(tmp_path):
    """The benchmark's and cross-validation's path: an encoder loaded once, trained on by the trainer, LoRA left
    live (unmerged) for its owner to put back; the classifier keeps settings and provenance apart."""
    from fewintent.encoder.lora import attach_lora, has_lora
    from fewintent.model.adapting import LoadedEncoder, Trainer

    encoder = make_tiny_encoder()
    attach_lora(encoder)
    before = {k: v.clone() for k, v in lora_state(encoder).items()}
    args = AdaptArguments(base=str(tiny_model_dir()), adapter="none", steps=3, inner_lr=1e-2, device="cpu")
    clf = Trainer(args, encoder=LoadedEncoder(encoder)).train(_data())
    assert clf.encoder is encoder and has_lora(encoder)  # not merged: the owner restores it
    assert any(not torch.equal(before[k], v) for k, v in lora_state(encoder).items())  # the steps trained it
    assert clf.training == args.training() and clf.meta["steps"] == 3 and clf.meta["inner_lr"] == 1e-2
    assert "steps" not in clf.config.to_dict() and clf.labels == list(INTENTS)
    load_lora_state(encoder, before)
    again = Trainer(replace(args, steps=0), encoder=LoadedEncoder(encoder)).unfitted().fit(_data())
    assert again.labels == clf.labels and again.training is not None and again.training.steps == 0
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["training"]["steps"] == 3 and "steps" not in saved["classifier"]


# --------------------------------------------------------------------------- top layers, token cap, multi-label
def test_a_layer_cut_reproduces_the_full_forward_pass_on_bert_and_mpnet():
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from fewintent.encoder.cut import layer_cut
    from fewintent.encoder.encoder import SentenceEncoder

    texts = ["hi", "where is my card and when will it arrive", "refund my purchase please"]
    bert = make_tiny_encoder(layers=3)
    attach_lora(bert)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir()), local_files_only=True)
    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=37,
    )
    mpnet = SentenceEncoder("tiny-mpnet", model=MPNetModel(config), tokenizer=tokenizer, device="cpu")
    for enc in (bert, mpnet):
        for layers, start in ((1, 2), (2, 1), (0, 0), (9, 0)):
            cut = layer_cut(enc, layers, texts)
            assert cut is not None and cut.start == start
            with torch.no_grad():
                assert torch.allclose(cut.upper(cut.lower(texts)), enc(texts), atol=1e-5)


def test_only_the_top_layers_train_and_the_cut_is_recorded():
    enc = make_tiny_encoder(layers=3)
    recipe = TuneRecipe(layers=1, epochs=2, lr=1e-2, stopping="last")
    result = tune_encoder(enc, _data(), recipe, seed=0)
    assert result.recipe.layers == 1 and result.steps > 0
    state = lora_state(enc)  # merged: the tensors as saved
    moved = {int(n.split(".layer.")[1].split(".")[0]) for n, t in state.items() if "lora_B" in n and t.abs().sum() > 0}
    assert moved == {2}  # layers 0 and 1 run once, cached; their fresh LoRA stays zero


def test_batches_never_exceed_the_token_cap_and_come_length_sorted():
    # 12 examples near 2,000 characters at --max-length 512: one batch of 12 x 512 tokens before the cap
    labels = torch.tensor([i % 3 for i in range(12)])
    lengths = [512] * 12
    for cap in (4096, 1024, 300):
        batches = tuning._batches(labels, lengths, DEFAULT_RECIPE, torch.Generator().manual_seed(0), cap)
        assert sorted(i for b in batches for i in b) == list(range(12))
        assert all(len(b) * max(lengths[i] for i in b) <= max(cap, 512) for b in batches)
    # short and long mixed: padding follows the batch's own longest, and the cap holds for any mix
    lengths = [8 if i % 2 else 400 for i in range(64)]
    labels = torch.arange(64) % 8
    batches = tuning._batches(labels, lengths, DEFAULT_RECIPE, torch.Generator().manual_seed(1), 2048)
    assert all(len(b) * max(lengths[i] for i in b) <= 2048 for b in batches)
    assert sum(len(b) * max(lengths[i] for i in b) for b in batches) < 64 * 400  # sorting saved padding


def test_tuning_on_long_texts_runs_no_forward_pass_past_the_cap(monkeypatch):
    from fewintent.encoder import cut as cut_module

    seen: list[int] = []
    upper = cut_module.LayerCut.upper

    def spy(self, states):
        seen.append(len(states) * max(len(s) for s in states))
        return upper(self, states)

    monkeypatch.setattr(cut_module.LayerCut, "upper", spy)
    long = " ".join(["my card has not arrived and i need it for my trip abroad next week"] * 30)
    data = IntentSet.from_pairs([(f"{i} {long}", f"intent{i % 3}") for i in range(12)])
    enc = make_tiny_encoder()  # 128 positions: every text is cut at 128 tokens
    result = tune_encoder(enc, data, TuneRecipe(epochs=1), seed=0, max_tokens=300)
    assert result.steps >= 4 and seen and max(seen) <= 300


def _multi() -> IntentSet:
    rows = [
        ("block my card", ("card", "block")),
        ("freeze the card now", ("card", "block")),
        ("i lost my card", ("card", "lost")),
        ("my card is gone, lost it", ("card", "lost")),
        ("send me a new card", ("card", "new")),
        ("i need a replacement card", ("card", "new")),
        ("lost my card, block it and send a new one", ("card", "lost", "block", "new")),
        ("open a new account", ("account", "new")),
        ("new savings account please", ("account", "new")),
        ("close my account", ("account", "block")),
        ("shut down the account", ("account", "block")),
        ("my account was lost after the merge", ("account", "lost")),
    ]
    return IntentSet.from_pairs([(t, list(s)) for t, s in rows])


def test_multi_label_tune_trains_a_sigmoid_per_intent_and_scores_micro_f1():
    statuses: list[TrainingStatus] = []
    data = _multi()
    clf = IntentClassifier.adapt(
        data, base=str(tiny_model_dir()), adapter="none", device="cpu", tune=True, seed=0, training=statuses.append
    )
    tune = clf.meta["tune"]
    assert tune["recipe"]["objective"] == "bce" and tune["epochs_run"] == UNREGISTERED["epochs"]
    assert all(0.0 <= a <= 1.0 for a in tune["held_out_accuracy"])
    assert tune["held_out_examples"] > 0
    ends = [s for s in statuses if s.epoch_end]
    assert ends and all(s.metric == "micro-F1" for s in ends)
    assert clf.config.head == "onevsrest"
    pred = clf.predict(["lost my card, please block it"])[0]
    assert isinstance(pred.intents, (list, tuple))


def test_bce_loss_learns_the_sets_on_fixed_embeddings():
    emb = torch.nn.functional.normalize(torch.randn(12, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    y = (torch.rand(12, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    y[:, 0] = 1.0
    head = tuning._start_head(emb, y, 3, DEFAULT_RECIPE)
    first = torch.nn.functional.binary_cross_entropy_with_logits(head(emb), y)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(emb), y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * float(first.detach())


def test_progress_says_time_per_epoch_time_left_and_the_held_out_score():
    statuses: list[TrainingStatus] = []
    _tuned(training=statuses.append)
    ends = [s for s in statuses if s.epoch_end]
    assert len(ends) == UNREGISTERED["epochs"]
    assert all(s.epoch_seconds is not None and s.epoch_seconds > 0 and s.remaining is not None for s in ends)
    assert ends[-1].remaining is not None and ends[-1].remaining < ends[0].remaining + 1e-9
    info = ends[0].info()
    assert "s/epoch" in info and "s left" in info and "held-out acc" in info


def test_each_tuning_state_is_encoded_once_for_the_held_out_score(monkeypatch):
    """The untuned state's pass both starts the head and scores epoch 0; each epoch then encodes once."""
    from fewintent.encoder import cut as cut_module

    passes: list[int] = []
    upper = cut_module.LayerCut.upper

    def spy(self, states):
        if not torch.is_grad_enabled():
            passes.append(len(states))
        return upper(self, states)

    monkeypatch.setattr(cut_module.LayerCut, "upper", spy)
    recipe = TuneRecipe(epochs=2)
    tune_encoder(make_tiny_encoder(), _data(), recipe, seed=0)
    every = len(_data()) + len(INTENTS)  # the examples and the intents' names, in one batch each pass
    assert passes.count(every) == recipe.epochs + 1


def test_the_tuned_classifier_takes_the_kept_epochs_embeddings_instead_of_encoding_again(monkeypatch):
    from fewintent.encoder.encoder import SentenceEncoder

    encoded: list[str] = []
    encode = SentenceEncoder.encode

    def spy(self, texts, **kw):
        encoded.extend(texts)
        return encode(self, texts, **kw)

    monkeypatch.setattr(SentenceEncoder, "encode", spy)
    clf = _tuned()
    texts = _data().texts
    assert not set(texts) & set(encoded)  # tuning's last scoring pass embedded every example and name
    fresh = clf.encoder.encode(texts).numpy()  # the merged encoder: the same to float rounding
    np.testing.assert_allclose(clf.table.support, fresh, atol=1e-5, rtol=0)
    names = clf.encoder.encode([name_example(label) for label in clf.labels]).numpy()
    np.testing.assert_allclose(clf.table.name_support, names, atol=1e-5, rtol=0)


def test_fit_encodes_only_the_texts_it_was_not_given():
    enc = make_tiny_encoder()
    data = _data()
    given = np.full(enc.dim, 0.5, dtype=np.float32)
    clf = IntentClassifier(enc).fit(data, embedded={data.texts[0]: given})
    assert np.array_equal(clf.table.support[0], given)
    np.testing.assert_allclose(clf.table.support[1:], enc.encode(data.texts[1:]).numpy(), atol=1e-6, rtol=0)


def test_low_padding_runs_cover_every_row_once_and_split_only_where_padding_costs_more():
    from fewintent.encoder.cut import low_padding_runs

    lengths = [12, 60, 13, 58, 11, 61, 14, 12]
    runs = low_padding_runs(lengths, overhead=32)
    assert sorted(i for r in runs for i in r) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in r) for r in runs] == [[11, 12, 12, 13, 14], [58, 60, 61]]
    assert low_padding_runs(lengths, overhead=10**6) == [sorted(range(8), key=lambda i: lengths[i])]  # one pass
    assert low_padding_runs([], overhead=32) == []


def test_a_batch_run_in_several_passes_embeds_as_one_padded_pass_in_the_batchs_order():
    from fewintent.encoder.cut import layer_cut, token_lengths

    enc = make_tiny_encoder()
    texts = ["hi", "where is my card and when will it arrive at my home address", "refund", "bye now", "a b c d e f g"]
    cut = layer_cut(enc, 1, texts)
    assert cut is not None
    states, lengths = cut.lower(texts), token_lengths(enc, texts)
    rows = [3, 1, 0, 4, 2, 1]  # any order, a row twice (R-Drop runs a batch twice)
    with torch.no_grad():
        one = cut.upper([states[i] for i in rows])
        runs = tuning._in_runs(rows, lengths, lambda part: cut.upper([states[i] for i in part]), overhead=0)
    torch.testing.assert_close(runs, one, atol=1e-5, rtol=0)


def test_training_passes_pad_little_on_texts_of_mixed_lengths(monkeypatch):
    from fewintent.encoder import cut as cut_module

    padded, real = [], []
    upper = cut_module.LayerCut.upper

    def spy(self, states):
        if torch.is_grad_enabled():
            padded.append(len(states) * max(len(s) for s in states))
            real.append(sum(len(s) for s in states))
        return upper(self, states)

    monkeypatch.setattr(cut_module.LayerCut, "upper", spy)
    long = "my card has not arrived yet and i need it for my trip abroad next week, please send it today " * 2
    rows = [(f"{long} {i}" if i % 2 else f"short {i}", f"intent{i % 3}") for i in range(24)]
    tune_encoder(make_tiny_encoder(), IntentSet.from_pairs(rows), TuneRecipe(epochs=1, holdout=0.0), seed=0)
    assert sum(padded) < 1.2 * sum(real)  # one padded pass per batch: about twice the real tokens


def test_passes_without_gradients_on_a_cpu_hold_at_most_pass_tokens(monkeypatch):
    from fewintent.encoder import cut as cut_module

    sizes: list[int] = []
    upper = cut_module.LayerCut.upper

    def spy(self, states):
        if not torch.is_grad_enabled():
            sizes.append(len(states) * max(len(s) for s in states))
        return upper(self, states)

    monkeypatch.setattr(cut_module.LayerCut, "upper", spy)
    # the caching and scoring passes; training passes keep max_tokens
    monkeypatch.setattr(tuning, "PASS_TOKENS", 48, raising=False)
    result = tune_encoder(make_tiny_encoder(), _data(), TuneRecipe(epochs=1), seed=0)
    assert result.steps > 0 and len(sizes) > 2 and max(sizes) <= 48
