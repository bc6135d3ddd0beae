"""Adapt a classifier to a demo company's intents and classify a few messages, from Python.

Run from the repository root:  python examples/quickstart.py
"""

from __future__ import annotations

from pathlib import Path

from fewintent import IntentClassifier, evaluate, read_intent_file

DATA = Path(__file__).resolve().parent.parent / "data"

# 12 intents, 5-7 examples each, plus a few out-of-scope rows that calibrate the fallback.
examples = read_intent_file(DATA / "demo_company.jsonl")
clf = IntentClassifier.adapt(examples)  # packaged all-MiniLM-L6-v2 (+ the shipped meta-learned adapter)
print(f"{len(clf.labels)} intents, out-of-scope below cosine {clf.threshold:.3f}")

messages = [
    "my back brake squeaks, can you have a look?",
    "how much is a cargo bike for a day",
    "write me a poem about the sea",
]
for p in clf.predict(messages):
    # out of scope, the ranking's first intent is the best in-scope one (what the fallback overruled)
    runner_up = p.intent_ranking[0] if p.is_oos else p.intent_ranking[1]
    print(f"{p.text!r:50} -> {p.intent.name:15} {p.intent.confidence:.2f}  (next: {runner_up.name})")

# Add an intent live: no retraining, the other intents are untouched.
clf.add_intent("gift_cards", ["do you sell gift cards", "can I buy a voucher", "gift card balance"])
print(clf.predict(["I'd like to buy a gift voucher for my dad"])[0].intent.name)

print(evaluate(clf, read_intent_file(DATA / "demo_company_test.jsonl", for_training=False)).to_dict())
# safetensors + JSON + model card, in a directory of its own: models/demo is the README's command-line model
clf.save("models/quickstart")
print("saved models/quickstart; IntentClassifier.load('models/quickstart') reads it back")
