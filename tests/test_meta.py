"""Meta-training on tiny random encoders: LoRA-only updates, the FOMAML first-order step, checkpoint/resume,
arguments, the CLI, deployment steps, 2-process DDP, and a few episodes on the real MiniLM."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, make_tiny_encoder, tiny_model_dir
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from fewintent.data.corpus import load_corpora
from fewintent.data.episodes import EpisodeSampler
from fewintent.data.intentset import IntentSet
from fewintent.encoder.lora import (
    LoraSettings,
    attach_lora,
    has_lora,
    lora_parameters,
    lora_state,
    merge_lora,
    read_adapter,
)
from fewintent.errors import FewIntentError
from fewintent.heads.linear import PrototypeLinearHead
from fewintent.heads.proto import PrototypicalHead
from fewintent.meta import FOMAML, Algorithm, InnerLoopSettings, MetaTrainer, MetaTrainingArguments, ProtoNet
from fewintent.meta.checkpoint import has_checkpoint
from fewintent.model import IntentClassifier
from fewintent.model.tuning import adapt_on_support

WORDS = "card transfer refund alarm music light weather cancel order pizza flight hotel balance pin play".split()


def write_datasets(root: Path) -> Path:
    """Two small corpora in the --data-dir layout: 'alpha' (domains d1, d2) and 'beta' (one domain)."""
    layout = {"alpha": {"d1": 4, "d2": 3}, "beta": {"beta": 3}}
    for name, domains in layout.items():
        (root / name).mkdir(parents=True)
        for split, n in (("train", 10), ("valid", 6)):
            rows = []
            for dom, n_intents in domains.items():
                for i in range(n_intents):
                    intent = f"{name}_{dom}_{i}"
                    for j in range(n):
                        w = WORDS[(i * 3 + j + len(dom)) % len(WORDS)]
                        rows.append({"text": f"{WORDS[i]} {dom} {w} {split} {j}", "intent": intent, "domain": dom})
            (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_datasets(tmp_path / "data")


def tiny_args(data_dir: Path, **kw) -> MetaTrainingArguments:
    base = dict(
        datasets=["alpha", "beta"],
        data_dir=str(data_dir),
        base=str(tiny_model_dir()),
        episodes=8,
        ways=3,
        shots=2,
        queries=2,
        lr=1e-2,
        eval_every=4,
        valid_episodes=3,
        checkpoint_every=4,
        log_every=1,
        patience=0,
        device="cpu",
        seed=3,
    )
    base.update(kw)
    return MetaTrainingArguments(**base)


def episode(data_dir: Path, index: int = 0, ways: int = 3):
    corpora = load_corpora(["alpha", "beta"], data_dir=data_dir)
    return EpisodeSampler(corpora, ways=ways, shots=2, queries=2, seed=0).episode(index)


def lora_encoder(seed: int = 0, dropout: float = 0.0):
    enc = make_tiny_encoder()
    torch.manual_seed(seed)
    attach_lora(enc, LoraSettings(r=4, alpha=8, dropout=dropout))
    with torch.no_grad():  # B starts at 0; make every LoRA path carry signal
        for p in lora_parameters(enc).values():
            p.normal_(0, 0.05)
    enc.model.eval()
    return enc


# ---------------------------------------------------------------------------------------------- heads / algos
def test_prototype_linear_head_scores_like_the_prototypical_head() -> None:
    torch.manual_seed(0)
    support = nn.functional.normalize(torch.randn(12, 8), dim=-1)
    labels = torch.arange(4).repeat(3)
    query = nn.functional.normalize(torch.randn(5, 8), dim=-1)
    for distance in ("cosine", "euclidean"):
        proto = PrototypicalHead(distance, temperature=7.0).fit(support, labels)
        linear = PrototypeLinearHead.from_support(support, labels, 4, distance, temperature=7.0)
        torch.testing.assert_close(proto(query).softmax(-1), linear(query).softmax(-1), atol=1e-5, rtol=1e-5)


def test_protonet_gradients_reach_lora_and_temperature_only(data_dir: Path) -> None:
    enc = lora_encoder()
    algo = ProtoNet(enc, learn_temperature=True)
    metrics = algo.accumulate(episode(data_dir))
    assert 0.0 <= metrics["acc"] <= 1.0 and metrics["loss"] > 0
    trainable = {id(p) for p in algo.parameters()}
    assert len(trainable) == len(lora_parameters(enc)) + 1
    for name, p in enc.model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and not p.requires_grad, name
    assert algo.head.log_temperature.grad is not None


def test_protonet_with_unknown_intents_learns_a_rejection_similarity(data_dir: Path) -> None:
    enc = lora_encoder()
    ep = episode(data_dir, ways=3)
    algo = ProtoNet(enc, learn_temperature=True, unknown_fraction=0.34)  # 1 of 3 intents held out
    loss, _ = algo.loss(ep)
    loss.backward()
    assert algo.reject_at.grad is not None and algo.reject_at.grad.abs() > 0
    assert any(p is algo.reject_at for p in algo.parameters()) and algo.learned_reject_at == pytest.approx(0.5)
    # by hand: 2 known prototypes + the rejection logit; the held-out intent's queries target the extra class
    with torch.no_grad():
        emb = enc(ep.support + ep.query).float()
        s, q = emb[: len(ep.support)], emb[len(ep.support) :]
        s_y, q_y = torch.tensor(ep.support_labels), torch.tensor(ep.query_labels)
        logits = algo.head.fit(s[s_y < 2], s_y[s_y < 2], 2)(q)
        logits = torch.cat([logits, (algo.head.temperature * algo.reject_at).expand(len(q), 1)], 1)
        expected = nn.functional.cross_entropy(logits, torch.where(q_y < 2, q_y, torch.full_like(q_y, 2)))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert ProtoNet(enc).learned_reject_at is None and not any(p is algo.reject_at for p in ProtoNet(enc).parameters())
    with pytest.raises(ValueError, match="unknown_fraction"):
        ProtoNet(enc, unknown_fraction=1.0)


def test_protonet_rank_loss_puts_unknown_queries_below_known_ones(data_dir: Path) -> None:
    enc = lora_encoder()
    ep = episode(data_dir, ways=3)
    algo = ProtoNet(enc, learn_temperature=False, unknown_fraction=0.34, unknown_loss="rank", rank_weight=0.5)
    assert algo.learned_reject_at is None and not any(p is algo.reject_at for p in algo.parameters())
    loss, acc = algo.loss(ep)
    loss.backward()
    assert all(p.grad is not None for p in lora_parameters(enc).values())
    # by hand: cross-entropy of the 2 known intents' queries, plus the pairwise logistic loss of every unknown
    # query's best logit against every known query's own-prototype logit
    with torch.no_grad():
        emb = enc(ep.support + ep.query).float()
        s, q = emb[: len(ep.support)], emb[len(ep.support) :]
        s_y, q_y = torch.tensor(ep.support_labels), torch.tensor(ep.query_labels)
        logits = algo.head.fit(s[s_y < 2], s_y[s_y < 2], 2)(q)
        k = q_y < 2
        ce = nn.functional.cross_entropy(logits[k], q_y[k])
        own = [float(logits[i, q_y[i]]) for i in range(len(q)) if k[i]]
        best = [float(logits[i].max()) for i in range(len(q)) if not k[i]]
        pairs = [math.log1p(math.exp(b - o)) for b in best for o in own]
        expected = float(ce) + 0.5 * sum(pairs) / len(pairs)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert acc == pytest.approx(float((logits[k].argmax(-1) == q_y[k]).float().mean()))
    with pytest.raises(ValueError, match="unknown_loss"):
        ProtoNet(enc, unknown_fraction=0.3, unknown_loss="push")
    with pytest.raises(FewIntentError, match="unknown_fraction"):
        MetaTrainingArguments(unknown_loss="rank")


def test_fomaml_update_is_the_query_gradient_at_the_adapted_weights(data_dir: Path) -> None:
    enc = lora_encoder()
    ep = episode(data_dir, ways=3)
    inner = InnerLoopSettings(steps=2, lr=0.05, head_lr=0.1, optimizer="sgd", temperature=10.0)
    algo = FOMAML(enc, inner)
    initial = lora_state(enc)
    grads, metrics = algo.task_gradient(ep)
    after = lora_state(enc)
    assert all(torch.equal(initial[k], after[k]) for k in initial)  # the initialisation is restored

    # The same thing by hand: adapt a copy of the weights with SGD, then differentiate the query loss there.
    params = list(lora_parameters(enc).values())
    y_s = torch.tensor(ep.support_labels)
    head = PrototypeLinearHead.from_support(enc(ep.support), y_s, ep.ways, "cosine", 10.0)
    for _ in range(2):
        loss = nn.functional.cross_entropy(head(enc(ep.support)), y_s)
        g = torch.autograd.grad(loss, [*params, head.weight, head.bias])
        with torch.no_grad():
            for p, gi, lr in zip([*params, head.weight, head.bias], g, [0.05] * len(params) + [0.1, 0.1]):
                p.sub_(lr * gi)
    q_loss = nn.functional.cross_entropy(head(enc(ep.query)), torch.tensor(ep.query_labels))
    expected = torch.autograd.grad(q_loss, params)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert metrics["loss"] == pytest.approx(float(q_loss), rel=1e-5)

    # ... and it is not just the gradient at the initial weights: the inner loop mattered.
    with torch.no_grad():
        for p, k in zip(params, initial):
            p.copy_(initial[k])
    head0 = PrototypeLinearHead.from_support(enc(ep.support), y_s, ep.ways, "cosine", 10.0)
    plain = torch.autograd.grad(
        nn.functional.cross_entropy(head0(enc(ep.query)), torch.tensor(ep.query_labels)), params
    )
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, plain))

    # The outer step applies exactly that gradient to the initialisation.
    for p in params:
        p.grad = None
    algo.accumulate(ep)
    sgd = torch.optim.SGD(params, lr=0.5)
    sgd.step()
    for p, k, g in zip(params, initial, grads):
        torch.testing.assert_close(p.detach(), initial[k] - 0.5 * g, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- trainer
def test_meta_training_changes_only_lora_weights_and_writes_an_adapter(data_dir: Path, tmp_path: Path) -> None:
    for algo in ("protonet", "fomaml"):
        args = tiny_args(data_dir, algorithm=algo, inner_steps=1, meta_batch=2, episodes=6, eval_every=0)
        trainer = MetaTrainer(args, tmp_path / algo, progress=False)
        before = {n: p.detach().clone() for n, p in trainer.encoder.model.named_parameters()}
        summary = trainer.train()
        assert summary["episodes_trained"] == 6
        changed = {n for n, p in trainer.encoder.model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all("lora_" in n for n in changed), algo
        assert any("lora_B" in n for n in changed)
        config, state = read_adapter(tmp_path / algo)
        assert config["algorithm"] == algo and config["training"]["algorithm"] == algo
        assert config["inner_lr"] == args.inner_lr and config["excluded_datasets"] == []
        assert [d["name"] for d in config["data"]] == ["alpha", "beta"]
        assert set(state) == set(lora_parameters(trainer.encoder))
        assert not has_checkpoint(tmp_path / algo)  # cleaned up after a finished run


def test_validation_keeps_the_best_weights_and_early_stops(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, episodes=40, lr=0.5, eval_every=2, patience=2)
    trainer = MetaTrainer(args, tmp_path / "run", progress=False)
    summary = trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "valid_acc" in x and not x.get("final")]
    assert evals[0]["episode"] == 0  # the untrained encoder is a candidate too
    best = max(evals, key=lambda x: (x["valid_acc"], -x["valid_loss"]))
    assert summary["best_episode"] == best["episode"]
    assert summary["valid_best"]["valid_acc"] == pytest.approx(best["valid_acc"])
    if summary["stopped_early"]:
        assert summary["episodes_trained"] < 40


@pytest.mark.parametrize("algo", ["protonet", "fomaml"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(data_dir: Path, tmp_path: Path, algo: str) -> None:
    args = tiny_args(data_dir, algorithm=algo, episodes=12, inner_steps=1, dropout=True)
    MetaTrainer(args, tmp_path / "straight", progress=False).train()

    def kill(episodes: int) -> None:
        if episodes == 10:  # after the checkpoint at 8: episodes 9-10 are lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MetaTrainer(args, tmp_path / "killed", progress=False, on_step=kill).train()
    assert has_checkpoint(tmp_path / "killed")
    with pytest.raises(FewIntentError, match="--resume"):
        MetaTrainer(args, tmp_path / "killed", progress=False).train()
    with pytest.raises(FewIntentError, match="different arguments"):
        MetaTrainer(tiny_args(data_dir, algorithm=algo, lr=0.3), tmp_path / "killed", resume=True).train()
    MetaTrainer(args, tmp_path / "killed", resume=True, progress=False).train()

    a = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def strip(path: Path) -> list[dict]:
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert strip(tmp_path / "straight" / "metrics.jsonl") == strip(tmp_path / "killed" / "metrics.jsonl")


def test_same_seed_same_adapter(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, episodes=4, eval_every=0)
    MetaTrainer(args, tmp_path / "a", progress=False).train()
    MetaTrainer(args, tmp_path / "b", progress=False).train()
    a = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- arguments
def test_arguments_round_trip_and_yaml(tmp_path: Path) -> None:
    args = MetaTrainingArguments(algorithm="fomaml", ways=[5, 10], exclude_domains=["clinc150:banking"])
    again = MetaTrainingArguments.from_dict(json.loads(json.dumps(args.to_dict())))
    assert again == args and again.algorithm is Algorithm.FOMAML
    assert again.lora == LoraSettings()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"algorithm": "protonet", "episodes": 50, "exclude": "banking77", "lora": {"r": 4}}))
    loaded = MetaTrainingArguments.from_yaml(cfg, episodes=7, lr=None)
    assert loaded.episodes == 7 and loaded.exclude == ["banking77"] and loaded.lora.r == 4
    assert loaded.held_out_domains == []
    with pytest.raises(FewIntentError, match="unknown meta-training argument"):
        MetaTrainingArguments.from_dict({"episodez": 3})
    with pytest.raises(FewIntentError, match="never use test"):
        MetaTrainingArguments(valid_split="test")
    with pytest.raises(FewIntentError, match="unknown algorithm 'reptile': use protonet, fomaml, ridge"):
        MetaTrainingArguments.from_dict({"algorithm": "reptile"})


# ---------------------------------------------------------------------------------------------- deployment
def test_adapt_on_support_moves_only_lora_and_lowers_the_support_loss() -> None:
    enc = make_tiny_encoder()
    attach_lora(enc)
    data = IntentSet.from_pairs([(f"{w} please {i}", w) for w in ("card", "music", "pizza") for i in range(4)])
    base_before = {n: p.detach().clone() for n, p in enc.model.named_parameters() if "lora_" not in n}
    lora_before = lora_state(enc)
    losses = adapt_on_support(enc, data, steps=8, lr=5e-3, seed=0)
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert all(torch.equal(p, base_before[n]) for n, p in enc.model.named_parameters() if "lora_" not in n)
    assert any(not torch.equal(v, lora_before[k]) for k, v in lora_state(enc).items())
    with pytest.raises(FewIntentError, match="LoRA"):
        adapt_on_support(make_tiny_encoder(), data, steps=1, lr=1e-3)


def test_merged_lora_embeds_the_same_without_lora_layers_and_keeps_its_weights() -> None:
    enc = make_tiny_encoder()
    attach_lora(enc)
    with torch.no_grad():
        for p in lora_parameters(enc).values():
            p.normal_(0, 0.2)  # B starts at 0: make the delta real
    texts = ["where is my card", "play some jazz", "a pizza please"]
    before, state = enc.encode(texts), lora_state(enc)
    merge_lora(enc)
    assert torch.allclose(enc.encode(texts), before, atol=1e-5)
    assert not any("lora_" in n for n, _ in enc.model.named_parameters()) and has_lora(enc)
    assert all(torch.equal(v, state[k]) for k, v in lora_state(enc).items()) and set(lora_state(enc)) == set(state)
    with pytest.raises(FewIntentError, match="merged"):
        lora_parameters(enc)
    with pytest.raises(FewIntentError, match="already"):
        attach_lora(enc)


def test_adapt_on_support_batches_large_sets_deterministically() -> None:
    data = IntentSet.from_pairs([(f"{w} number {i}", w) for w in ("card", "music", "pizza") for i in range(30)])
    states = []
    for _ in range(2):
        enc = make_tiny_encoder()
        torch.manual_seed(0)
        attach_lora(enc)
        adapt_on_support(enc, data, steps=3, lr=1e-3, seed=5, settings=InnerLoopSettings(batch_size=16))
        states.append(lora_state(enc))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_cli_meta_train_output_is_usable_as_adapter(data_dir: Path, tmp_path: Path) -> None:
    from fewintent.cli.main import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"datasets": ["alpha", "beta"], "base": str(tiny_model_dir()), "eval_every": 2, "valid_episodes": 2}
        )
    )
    out = tmp_path / "adapter"
    argv = ["meta-train", "--config", str(cfg), "--data-dir", str(data_dir), "--exclude-domains", "alpha:d2"]
    argv += ["--episodes", "4", "--ways", "2-3", "--shots", "2", "--queries", "1", "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(app, [*argv, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["episodes_trained"] == 4
    config, _ = read_adapter(out)
    assert config["excluded_domains"] == ["alpha:d2"] and config["training"]["ways"] == [2, 3]
    assert {d["name"]: d["intents"] for d in config["data"]} == {"alpha": 4, "beta": 3}

    examples = {"card": ["my card", "card lost", "new card"], "music": ["play music", "music on", "songs please"]}
    clf = IntentClassifier.adapt(examples, base=str(tiny_model_dir()), adapter=str(out), steps=2, device="cpu")
    assert clf.meta["adapter"]["algorithm"] == "protonet" and clf.meta["steps"] == 2
    assert clf.meta["inner_lr"] == config["inner_lr"]
    clf.save(tmp_path / "model")
    again = IntentClassifier.load(tmp_path / "model", device="cpu")
    assert clf.encoder.merged_lora is not None and again.encoder.merged_lora is not None  # inference form
    texts = ["card please", "some music"]
    assert [p.to_dict() for p in clf.predict(texts)] == [p.to_dict() for p in again.predict(texts)]

    bad = CliRunner().invoke(app, ["meta-train", "--config", str(cfg), "--algo", "reptile", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "reptile" in bad.output


# ---------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_process_gloo_run_ends_with_identical_lora_weights(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, episodes=8, dropout=False, eval_every=4, valid_episodes=4).to_dict()
    (tmp_path / "args.json").write_text(json.dumps(args))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += [str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "args.json"), str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "out" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "out" / "rank1.safetensors"))
    assert json.loads((tmp_path / "out" / "rank1.json").read_text())["world_size"] == 2
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(r0[k].abs().sum() > 0 for k in r0 if "lora_B" in k)  # it did train
    # Two ranks x 1 task average the same episodes as one process with a meta-batch of 2.
    single = MetaTrainingArguments.from_dict({**args, "meta_batch": 2})
    trainer = MetaTrainer(single, tmp_path / "single", progress=False)
    trainer.train()
    for k, v in lora_state(trainer.encoder).items():
        torch.testing.assert_close(v, r0[k], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- real MiniLM
def test_a_few_episodes_on_the_real_minilm(datasets_dir: Path, tmp_path: Path) -> None:
    args = MetaTrainingArguments(
        datasets=["snips", "hwu64"],
        data_dir=str(datasets_dir),
        exclude_domains=["hwu64:alarm"],
        episodes=3,
        ways=3,
        shots=2,
        queries=2,
        eval_every=3,
        valid_episodes=2,
        checkpoint_every=0,
        device="cpu",
    )
    summary = MetaTrainer(args, tmp_path / "adapter", progress=False).train()
    assert summary["episodes_trained"] == 3 and summary["valid_initial"]["valid_acc"] > 0.5
    config, state = read_adapter(tmp_path / "adapter")
    assert config["base_sha256"] and config["excluded_domains"] == ["hwu64:alarm"]
    assert (tmp_path / "adapter" / "adapter.safetensors").stat().st_size < 2 * 2**20
    examples = {
        "wake_me": ["set an alarm for 7am", "wake me up at six", "alarm at 8 tomorrow"],
        "weather": ["will it rain today", "what's the weather like", "is it cold outside"],
    }
    clf = IntentClassifier.adapt(examples, adapter=str(tmp_path / "adapter"), steps=1, device="cpu")
    assert [p.intent.name for p in clf.predict(["wake me at 5 am", "is it sunny"])] == ["wake_me", "weather"]


def test_a_users_own_file_trains_without_a_validation_split(data_dir: Path, tmp_path: Path) -> None:
    mine = data_dir / "alpha" / "train.jsonl"
    args = tiny_args(data_dir, datasets=[str(mine)], episodes=2, eval_every=1)
    trainer = MetaTrainer(args, tmp_path / "mine", progress=False)
    assert trainer.valid == [] and list(trainer.train_corpora) == ["train"]
    assert trainer.train()["valid_best"] is None


def test_ridge_head_is_the_closed_form_ridge_solution_and_trains_lora(data_dir: Path) -> None:
    from fewintent.meta.ridge import RidgeNet, ridge_weights

    torch.manual_seed(0)
    s, y = torch.randn(9, 16, dtype=torch.float64), torch.tensor([0, 1, 2] * 3)
    w = ridge_weights(s, y, 3, torch.tensor(0.7, dtype=torch.float64))
    primal = torch.linalg.solve(
        s.T @ s + 0.7 * torch.eye(16, dtype=torch.float64), s.T @ nn.functional.one_hot(y, 3).double()
    )
    assert torch.allclose(w, primal, atol=1e-10)  # the n x n form equals the d x d normal equations

    enc = lora_encoder()
    algo = RidgeNet(enc, lam=1.0, scale=10.0)
    metrics = algo.accumulate(episode(data_dir))
    assert metrics["loss"] > 0 and 0.0 <= metrics["acc"] <= 1.0
    assert len(algo.parameters()) == len(lora_parameters(enc)) + 2
    assert algo.log_lambda.grad is not None and algo.log_scale.grad is not None
    assert all(p.grad is not None for p in lora_parameters(enc).values())
    assert algo.learned_temperature == pytest.approx(10.0) and algo.learned_lambda == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        RidgeNet(enc, lam=0.0)
    fixed = RidgeNet(enc, learn_scale=False)  # learn_temperature: false
    assert (
        all(p is not fixed.log_scale for p in fixed.parameters())
        and len(fixed.parameters()) == len(algo.parameters()) - 1
    )


def test_ridge_meta_training_and_a_time_budget_write_an_adapter(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, algorithm="ridge", episodes=1000, max_time_s=0.01, eval_every=500)
    summary = MetaTrainer(args, tmp_path / "ridge", progress=False).train()
    assert summary["stopped_for_time"] and summary["episodes_trained"] < 1000
    config, _ = read_adapter(tmp_path / "ridge")
    assert config["algorithm"] == "ridge" and config["ridge_lambda"] > 0
    lines = [json.loads(x) for x in (tmp_path / "ridge" / "metrics.jsonl").read_text().splitlines()]
    assert [x["episode"] for x in lines if "valid_acc" in x and not x.get("final")] == [0, summary["episodes_trained"]]
    with pytest.raises(FewIntentError, match="max_time_s"):
        tiny_args(data_dir, max_time_s=0)


def test_episodes_can_carry_the_intent_names_as_support(data_dir: Path) -> None:
    corpora = load_corpora(["alpha", "beta"], data_dir=data_dir)
    plain = EpisodeSampler(corpora, ways=3, shots=2, queries=2, seed=0).episode(4)
    named = EpisodeSampler(corpora, ways=3, shots=2, queries=2, seed=0, intent_names=True).episode(4)
    assert named.query == plain.query and named.intents == plain.intents  # the same draw, plus the names
    extra = [t for t in named.support if t not in plain.support]
    assert extra == [i.replace("_", " ") for i in named.intents]
    assert [named.support_labels.count(i) for i in range(3)] == [3, 3, 3]
    args = tiny_args(data_dir, intent_names=True, episodes=2, eval_every=0)
    assert MetaTrainer(args, data_dir / "run", progress=False).sampler.episode(0).support[-1].count(" ") == 2
