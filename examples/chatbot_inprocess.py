"""A minimal async chatbot backend that embeds fewintent in-process (no HTTP).

One classifier is loaded at start-up and shared by every conversation. Concurrent messages go through a
``MicroBatcher``, which merges them into one encoder pass off the event loop; an intent added while the bot runs
answers from the next message on. Run from the repository root:

    python examples/chatbot_inprocess.py                 # adapts data/demo_company.jsonl first (a few seconds)
    python examples/chatbot_inprocess.py --model models/demo
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fewintent import IntentClassifier
from fewintent.serve import MicroBatcher

DATA = Path(__file__).resolve().parent.parent / "data" / "demo_company.jsonl"

REPLIES = {
    "book_repair": "Sure - pick a slot at bikeshop.example/repairs and bring the bike in.",
    "repair_status": "Let me look up your repair ticket...",
    "opening_hours": "We're open 9-18 on weekdays and 10-16 on Saturdays.",
    "rent_bike": "Rentals start at the front desk; city bikes and e-bikes are available.",
    "gift_cards": "Gift cards come in 25, 50 and 100 - in store or online.",
}
FALLBACK = "Sorry, I can only help with our bikes, repairs, rentals and orders. Shall I get a human?"


class ChatBackend:
    """Turns a user message into a reply. Safe to call from many coroutines at once."""

    def __init__(self, clf: IntentClassifier, *, min_confidence: float = 0.5) -> None:
        self.clf = clf
        self.batcher = MicroBatcher(clf, max_wait_ms=2)
        self.min_confidence = min_confidence

    async def reply(self, message: str) -> str:
        (pred,) = await self.batcher.predict([message])
        if pred.is_oos or pred.intent.confidence < self.min_confidence:
            return FALLBACK
        return REPLIES.get(pred.intent.name, f"[{pred.intent.name}] I can help with that.")

    async def add_intent(self, name: str, examples: list[str]) -> None:
        # add_intent encodes the examples: run it in a thread so the event loop keeps answering meanwhile.
        await asyncio.to_thread(self.clf.add_intent, name, examples)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Model directory from `fewintent adapt` (default: adapt the demo).")
    args = parser.parse_args()
    clf = IntentClassifier.load(args.model) if args.model else IntentClassifier.adapt(DATA)
    bot = ChatBackend(clf)
    async with bot.batcher:
        messages = [
            "my gears keep slipping, can you fix them this week?",
            "when do you open on saturday",
            "can I rent an e-bike for the weekend",
            "do you sell gift vouchers?",
            "what's the capital of Peru",
        ]
        # Five users at once: one encoder call serves all of them.
        for message, answer in zip(messages, await asyncio.gather(*(bot.reply(m) for m in messages))):
            print(f"user: {message}\nbot:  {answer}\n")

        await bot.add_intent("gift_cards", ["do you sell gift cards", "can I buy a voucher", "gift card balance"])
        print("-- added intent 'gift_cards' live --\n")
        print(f"user: {messages[3]}\nbot:  {await bot.reply(messages[3])}")
        print(f"\n{bot.batcher.stats.to_dict()}")


if __name__ == "__main__":
    asyncio.run(main())
