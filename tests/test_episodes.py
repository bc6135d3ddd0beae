"""Corpus registry and episode sampler: shapes honoured, held-out domains never drawn, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewintent.data.corpus import CORPORA, Corpus, load_corpora, load_corpus, parse_domain_list
from fewintent.data.episodes import EpisodeSampler
from fewintent.errors import FewIntentError


def synthetic_corpora() -> dict[str, Corpus]:
    """Two datasets: 'shop' with domains of 6, 4 and 2 intents, 'tiny' with one domain of 3 intents."""
    by_intent: dict[str, list[str]] = {}
    domain_of: dict[str, str] = {}
    for dom, n in (("orders", 6), ("returns", 4), ("small", 2)):
        for i in range(n):
            intent = f"{dom}_{i}"
            by_intent[intent] = [f"{intent} example {j}" for j in range(12)]
            domain_of[intent] = dom
    tiny = {f"t{i}": [f"t{i} text {j}" for j in range(8)] for i in range(3)}
    return {
        "shop": Corpus("shop", "train", by_intent, domain_of),
        "tiny": Corpus("tiny", "train", tiny, dict.fromkeys(tiny, "tiny")),
    }


def test_fixed_ways_shots_queries_are_honoured() -> None:
    corpora = synthetic_corpora()
    sampler = EpisodeSampler(corpora, ways=3, shots=4, queries=2, domain_prob=0.5, seed=1)
    for i in range(200):
        ep = sampler.episode(i)
        assert ep.ways == 3 or (ep.domain == "small" and ep.ways == 2)
        for label in range(ep.ways):
            assert ep.support_labels.count(label) == 4
            assert ep.query_labels.count(label) == 2
        assert not set(ep.support) & set(ep.query)  # support and query never share an utterance
        corpus = corpora[ep.dataset]
        for label, intent in enumerate(ep.intents):
            texts = corpus.by_intent[intent]
            assert all(t in texts for t, y in zip(ep.support, ep.support_labels) if y == label)
            assert all(t in texts for t, y in zip(ep.query, ep.query_labels) if y == label)
            if ep.domain is not None:
                assert corpus.domain_of[intent] == ep.domain


def test_variable_ways_and_shots_stay_in_range_and_vary() -> None:
    sampler = EpisodeSampler(synthetic_corpora(), ways=(2, 5), shots=(1, 5), queries=3, seed=0)
    seen_ways, seen_shots = set(), set()
    for i in range(300):
        ep = sampler.episode(i)
        assert 2 <= ep.ways <= 5
        assert 1 <= ep.shots <= 5
        seen_ways.add(ep.ways)
        seen_shots.add(ep.shots)
    assert seen_ways == {2, 3, 4, 5}
    assert seen_shots == {1, 2, 3, 4, 5}


def test_domain_scope_and_whole_dataset_scope_both_occur() -> None:
    sampler = EpisodeSampler(synthetic_corpora(), ways=6, shots=2, queries=1, domain_prob=0.5, seed=3)
    scopes = {(ep.dataset, ep.domain) for ep in (sampler.episode(i) for i in range(200))}
    assert ("shop", None) in scopes  # whole dataset
    assert {("shop", "orders"), ("shop", "returns"), ("tiny", "tiny")} <= scopes


def test_sampler_is_deterministic_and_seed_dependent() -> None:
    a = EpisodeSampler(synthetic_corpora(), ways=3, shots=2, queries=2, seed=7)
    b = EpisodeSampler(synthetic_corpora(), ways=3, shots=2, queries=2, seed=7)
    c = EpisodeSampler(synthetic_corpora(), ways=3, shots=2, queries=2, seed=8)
    assert [a.episode(i) for i in range(20)] == [b.episode(i) for i in reversed(range(20))][::-1]
    assert [a.episode(i) for i in range(20)] != [c.episode(i) for i in range(20)]
    assert a.episode(5, rank=0) != a.episode(5, rank=1)  # each data-parallel rank has its own stream
    assert a.fixed(4) == [a.episode(i) for i in range(4)]


def test_excluded_domains_are_never_sampled() -> None:
    sampler = EpisodeSampler(
        synthetic_corpora(), ways=(2, 6), shots=2, queries=2, exclude_domains=[("shop", "orders")], seed=0
    )
    for i in range(300):
        ep = sampler.episode(i)
        assert not any(intent.startswith("orders_") for intent in ep.intents)


def test_too_few_examples_is_a_clear_error() -> None:
    with pytest.raises(FewIntentError, match="lower --shots"):
        EpisodeSampler(synthetic_corpora(), ways=3, shots=20, queries=2)
    with pytest.raises(FewIntentError, match="ways"):
        EpisodeSampler(synthetic_corpora(), ways=(5, 2))


def test_parse_domain_list() -> None:
    assert parse_domain_list("clinc150:banking, hwu64:alarm") == [("clinc150", "banking"), ("hwu64", "alarm")]
    assert parse_domain_list(["clinc150:travel"]) == [("clinc150", "travel")]
    assert parse_domain_list(None) == []
    with pytest.raises(FewIntentError, match="dataset:domain"):
        parse_domain_list("banking")


def test_user_file_is_a_corpus_with_its_domains(tmp_path: Path) -> None:
    rows = [
        {"text": f"{i} {j}", "intent": i, "domain": d}
        for i, d in (("a", "x"), ("b", "x"), ("c", "y"))
        for j in range(3)
    ]
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = load_corpus(f)
    assert c.name == "mine"
    assert c.domains() == {"x": ["a", "b"], "y": ["c"]}
    csv = tmp_path / "plain.csv"
    csv.write_text("text,intent\nhi,greet\nhello,greet\nbye,leave\nsee you,leave\n")
    assert load_corpus(csv).domains() == {"plain": ["greet", "leave"]}


def test_registry_reads_data_dir_with_domains_and_held_out_domains(datasets_dir: Path) -> None:
    assert set(CORPORA) == {"banking77", "clinc150", "hwu64", "snips"}
    corpora = load_corpora(
        ["clinc150", "hwu64", "banking77"],
        "valid",
        data_dir=datasets_dir,
        exclude=["banking77"],
        exclude_domains=parse_domain_list("clinc150:banking,clinc150:travel,hwu64:alarm"),
    )
    assert set(corpora) == {"clinc150", "hwu64"}
    assert len(corpora["clinc150"].domains()) == 8 and "banking" not in corpora["clinc150"].domains()
    assert "alarm" not in corpora["hwu64"].domains() and len(corpora["hwu64"].domains()) == 17
    held = {"banking", "travel"}
    full = load_corpus("clinc150", "valid", data_dir=datasets_dir)
    held_intents = {i for i, d in full.domain_of.items() if d in held}
    sampler = EpisodeSampler(corpora, ways=(2, 10), shots=5, queries=5, seed=0)
    for i in range(200):
        ep = sampler.episode(i)
        assert not held_intents & set(ep.intents)
        assert not any(i.startswith("alarm_") for i in ep.intents)


def test_registry_refuses_test_splits_typos_and_unknown_names(datasets_dir: Path) -> None:
    with pytest.raises(FewIntentError, match="never|refusing"):
        load_corpus("banking77", "test", data_dir=datasets_dir)
    with pytest.raises(FewIntentError, match="no domain"):
        load_corpora(["clinc150"], "valid", data_dir=datasets_dir, exclude_domains=[("clinc150", "bankin")])
    with pytest.raises(FewIntentError, match="no dataset 'nope'"):
        load_corpus("nope", data_dir=datasets_dir)
    with pytest.raises(FewIntentError, match="no dataset left"):
        load_corpora(["snips"], data_dir=datasets_dir, exclude=["snips"])


def test_missing_data_dir_is_an_error_not_a_silent_hub_download(tmp_path: Path, monkeypatch) -> None:
    import fewintent.data.corpus as corpus

    def no_hub(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the hub must not be reached when --data-dir is wrong")

    monkeypatch.setattr(corpus, "_load_from_hub", no_hub)
    with pytest.raises(FewIntentError, match="does not exist"):
        load_corpus("banking77", "train", data_dir=tmp_path / "no-such-dir")
