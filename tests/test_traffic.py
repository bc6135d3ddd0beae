"""Thresholds from unlabelled logs (fewintent.model.traffic): the share estimate, the refusals, what is saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fewintent import FewIntentError, IntentClassifier, IntentSet
from fewintent.cli.main import app
from fewintent.model.traffic import MIN_LOG_MESSAGES, HeldOut, check_logs, fit_oos_share, share_threshold

runner = CliRunner()
WORDS = ("alpha", "beta", "gamma", "delta")
SUPPORT = IntentSet.from_pairs([(f"{w} case {i}", w) for w in WORDS for i in range(5)])
# in scope: the support's words in new sentences; out of scope: words the model never saw
LOGS = [f"{w} case number {i} please" for w in WORDS for i in range(30)] + [
    f"zeta {x} thing {i}" for x in ("kappa", "omicron") for i in range(40)
]


def _mixture(share: float, seed: int, shift: float = 0.0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Held-out in-scope scores and logs with ``share`` out of scope; the logs' in-scope part moved by ``shift``."""
    g = np.random.default_rng(seed)
    held = np.clip(g.normal(0.72, 0.08, 1000), -1, 1)
    n_oos = round(share * n)
    logs = np.r_[np.clip(g.normal(0.72 + shift, 0.08, n - n_oos), -1, 1), g.normal(0.42, 0.09, n_oos)]
    return held, logs


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("shift", [0.0, 0.02, -0.02])
def test_estimated_share_of_synthetic_mixtures(share, shift):
    held, logs = _mixture(share, seed=int(share * 10) + 1, shift=shift)
    fit = fit_oos_share(held, logs)
    assert fit.share == pytest.approx(share, abs=0.03)
    if share >= 0.1:
        assert fit.oos_mean == pytest.approx(0.42, abs=0.03) and fit.shift == pytest.approx(shift, abs=0.015)


def test_threshold_rises_with_the_share_and_a_stated_share_is_kept():
    held, logs = _mixture(0.3, seed=3)
    ref = HeldOut(held, np.ones(held.size, dtype=bool), 20)
    cuts = [share_threshold(ref, fit_oos_share(held, logs, share)) for share in (0.05, 0.3, 0.7)]
    assert cuts[0] < cuts[1] < cuts[2]
    assert fit_oos_share(held, logs, 0.7).share == 0.7
    # in scope and OOS apart at 0.57: the expected-MCC cut lands between them, not at the support's 5% quantile
    assert 0.5 < cuts[1] < 0.64


def test_logs_too_small_or_too_alike_are_refused_in_one_line(tiny_encoder):
    with pytest.raises(FewIntentError, match=f"too few .*at least {MIN_LOG_MESSAGES}"):
        check_logs(LOGS[: MIN_LOG_MESSAGES - 1], "m.txt")
    with pytest.raises(FewIntentError, match="too alike .*only 4 distinct"):
        check_logs(["hello there", "hi", "card lost", "Hi", "bye now"] * 100, "m.txt")
    assert len(check_logs(LOGS + ["", "  "])) == len(LOGS)
    clf = IntentClassifier(tiny_encoder).fit(SUPPORT)
    before = clf.threshold
    with pytest.raises(FewIntentError, match="too few"):
        clf.calibrate(logs=LOGS[:10])
    with pytest.raises(FewIntentError, match="not both"):
        clf.calibrate(SUPPORT, logs=LOGS)
    with pytest.raises(FewIntentError, match="oos_share"):
        clf.calibrate(logs=LOGS, oos_share=1.5)
    with pytest.raises(FewIntentError, match="unknown objective 'recall'"):
        clf.calibrate(logs=LOGS, objective="recall")
    assert clf.threshold == before and not clf.threshold_manual
    multi = IntentClassifier(tiny_encoder, head="onevsrest").fit(SUPPORT)
    with pytest.raises(FewIntentError, match="multi-label"):
        multi.calibrate(logs=LOGS)


def test_logs_calibration_survives_save_and_load(tiny_encoder, tmp_path):
    clf = IntentClassifier(tiny_encoder).fit(SUPPORT)
    report = clf.calibrate(logs=LOGS)
    assert 0.0 <= report.oos_share <= 1.0 and report.share_estimated and report.n_logs == len(LOGS)
    assert clf.threshold == report.threshold and clf.threshold_manual and report.objective == "mcc"
    assert report.after["mcc"] >= report.before["mcc"] - 1e-9  # the best expected MCC, by construction
    clf.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    record = config["meta"]["calibration"]
    assert record["oos_share"] == round(report.oos_share, 4) and record["threshold"] == config["threshold"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"oos_share: {record['oos_share']}" in card and "unlabelled logged messages" in card
    again = IntentClassifier.load(tmp_path / "m")
    assert again.threshold == clf.threshold and again.meta["calibration"] == record
    stated = again.calibrate(logs=LOGS, oos_share=0.25, objective="f1")
    assert stated.oos_share == 0.25 and not stated.share_estimated
    held = IntentSet(SUPPORT.texts, SUPPORT.intents, ["zeta one", "zeta two", "zeta three"], "oos")
    again.calibrate(held)  # a labelled file sets the threshold now: the share no longer describes it
    again.save(tmp_path / "m")
    assert "calibration" not in json.loads((tmp_path / "m" / "config.json").read_text())["meta"]
    assert "oos_share" not in (tmp_path / "m" / "README.md").read_text()


def test_cli_calibrate_and_adapt_with_logs(tmp_path):
    from conftest import tiny_model_dir

    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in zip(SUPPORT.texts, SUPPORT.intents)))
    logs = tmp_path / "messages.txt"
    logs.write_text("\n".join(LOGS) + "\n")
    small = tmp_path / "small.txt"
    small.write_text("\n".join(LOGS[:20]) + "\n")
    model = tmp_path / "m"
    base = ["--base", str(tiny_model_dir()), "--adapter", "none"]
    result = runner.invoke(app, ["adapt", str(train), "-o", str(model), *base, "--logs", str(small)])
    assert result.exit_code == 1 and f"at least {MIN_LOG_MESSAGES}" in result.output and result.output.count("\n") == 1
    assert not model.exists()  # refused before adapting
    result = runner.invoke(app, ["adapt", str(train), "-o", str(model), *base, "--logs", str(logs)])
    assert result.exit_code == 0, result.output
    assert "out-of-scope share" in result.output and "threshold" in result.output
    assert "calibration" in json.loads((model / "config.json").read_text())["meta"]
    result = runner.invoke(app, ["calibrate", str(model), "--logs", str(logs), "--oos-share", "0.4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["oos_share"] == 0.4 and report["share_estimated"] is False
    assert json.loads((model / "config.json").read_text())["threshold"] == pytest.approx(report["threshold"])
    for args, message in (
        (["--logs", str(small)], "too few"),
        ([str(train), "--logs", str(logs)], "one of the two"),
        ([], "one of the two"),
        (["--logs", str(logs), "--objective", "recall"], "unknown --objective 'recall' with --logs"),
    ):
        result = runner.invoke(app, ["calibrate", str(model), *args])
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output
