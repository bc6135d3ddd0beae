"""A minimal chatbot backend that calls a fewintent server over HTTP (standard library only).

Start a server, then run this against it (from the repository root):

    fewintent adapt data/demo_company.jsonl -o models/demo
    FEWINTENT_API_KEY=change-me fewintent serve models/demo &
    FEWINTENT_API_KEY=change-me python examples/chatbot_http.py --url http://127.0.0.1:8000

It classifies a few messages, adds an intent live (POST /intents, saved in the model directory), uses it, and
removes it again so the model ends as it started.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from typing import Any

REPLIES = {
    "book_repair": "Sure - pick a slot at bikeshop.example/repairs and bring the bike in.",
    "opening_hours": "We're open 9-18 on weekdays and 10-16 on Saturdays.",
    "rent_bike": "Rentals start at the front desk; city bikes and e-bikes are available.",
    "gift_cards": "Gift cards come in 25, 50 and 100 - in store or online.",
}
FALLBACK = "Sorry, I can only help with our bikes, repairs, rentals and orders. Shall I get a human?"


class IntentAPI:
    """A thin client for the fewintent HTTP API. Errors raise ``RuntimeError`` with the server's message."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            error = json.loads(e.read() or b"{}").get("error", {})
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {error.get('message', e.reason)}") from None

    def classify(self, messages: list[str]) -> list[dict[str, Any]]:
        return self.call("POST", "/predict", {"texts": messages})["predictions"]


def reply(prediction: dict[str, Any]) -> str:
    if prediction["is_oos"]:
        return FALLBACK
    name = prediction["intent"]["name"]
    return REPLIES.get(name, f"[{name}] I can help with that.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="The fewintent server.")
    parser.add_argument("--api-key", default=os.environ.get("FEWINTENT_API_KEY"), help="Default: $FEWINTENT_API_KEY.")
    args = parser.parse_args()
    api = IntentAPI(args.url, args.api_key)

    health = api.call("GET", "/health")
    print(f"server: {health['model']}, {health['intents']} intents, fewintent {health['version']}\n")
    messages = ["my gears keep slipping, can you fix them?", "do you sell gift vouchers?", "the capital of Peru?"]
    for message, prediction in zip(messages, api.classify(messages)):
        print(f"user: {message}\nbot:  {reply(prediction)}   ({prediction['intent']['name']})\n")

    examples = ["do you sell gift cards", "can I buy a voucher", "gift card balance"]
    change = api.call("POST", "/intents", {"name": "gift_cards", "examples": examples})
    print(f"-- added '{change['name']}' live ({change['examples']} examples, now {change['intents']} intents) --")
    print(f"bot:  {reply(api.classify([messages[1]])[0])}\n")
    if change["created"]:  # leave the model as we found it
        api.call("DELETE", "/intents/gift_cards")
        print("-- removed 'gift_cards' again --")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError) as e:  # server down, wrong key, ...: one line, no traceback
        raise SystemExit(f"error: {e}") from None
