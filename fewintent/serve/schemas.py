"""Request and response bodies of the HTTP API (they are also what ``/docs`` shows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    texts: list[str] = Field(..., description="Messages to classify (at most the server's --max-texts).")
    top_k: int | None = Field(
        default=None, ge=1, le=100, strict=True, description="Intents per ranking (default 5); an integer, not true."
    )

    # A misspelt key ("top-k", "text") is refused, not silently ignored.
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"texts": ["where is my order?", "what's the weather"]}]},
    }


class IntentScoreOut(BaseModel):
    name: str
    confidence: float


class PredictionOut(BaseModel):
    """Exactly one line of ``fewintent predict --json``."""

    text: str
    intent: IntentScoreOut
    is_oos: bool
    intent_ranking: list[IntentScoreOut]
    oos_score: float | None = Field(
        default=None,
        description="How in-scope the text looks (higher = more); below the threshold it is out of scope.",
    )
    intents: list[IntentScoreOut] | None = Field(
        default=None,
        description="Multi-label models only (absent otherwise): every intent that passes its own threshold, most "
        "confident first, each with its own probability; empty when the message is out of scope. `intent` is the "
        "first of them (or the OOS label), so single-label clients keep working.",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "text": "I lost my card, block it",
                    "intent": {"name": "card", "confidence": 0.99},
                    "is_oos": False,
                    "intent_ranking": [
                        {"name": "card", "confidence": 0.99},
                        {"name": "lost_stolen", "confidence": 0.96},
                        {"name": "block", "confidence": 0.93},
                        {"name": "new", "confidence": 0.21},
                    ],
                    "oos_score": 4.2,
                    "intents": [
                        {"name": "card", "confidence": 0.99},
                        {"name": "lost_stolen", "confidence": 0.96},
                        {"name": "block", "confidence": 0.93},
                    ],
                }
            ]
        }
    }


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]


class AddIntentRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=200, description="Intent name; an existing one is replaced.")
    examples: list[str] = Field(
        ...,
        min_length=1,
        description="Example utterances (5-10 is plenty). On a multi-label model each carries this intent alone; "
        "replacing an intent takes it off its old examples, which keep their other intents.",
    )

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [{"name": "cancel_order", "examples": ["cancel my order", "I don't want it anymore"]}]
        },
    }


class IntentInfo(BaseModel):
    name: str
    examples: int
    tuned: bool = Field(
        False,
        description="Whether the encoder was trained on this intent's examples (adapt --tune); false for "
        "intents added since, whose head is refitted on the tuned encoder.",
    )


class IntentsResponse(BaseModel):
    intents: list[IntentInfo]
    oos_label: str
    multi_label: bool = Field(
        False,
        description="Whether a message can get several intents (a one-vs-rest model; `/predict` then adds "
        "`intents`). An example with several intents counts for each of them in `examples`.",
    )


class IntentChange(BaseModel):
    name: str
    created: bool = Field(default=False, description="True when the intent is new, false when it replaced one.")
    removed: bool = False
    examples: int = Field(default=0, description="Examples the intent now has (after removing duplicates).")
    intents: int = Field(..., description="Intents the model has now.")
    warnings: list[str] = Field(
        default_factory=list, description="What to check about the edit (e.g. a name that differs only by case)."
    )


class ParseRequest(BaseModel):
    """Rasa's ``POST /model/parse`` body."""

    text: str = Field(..., description="The message to classify.")
    message_id: str | None = Field(default=None, description="Accepted for Rasa compatibility; not used.")

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"text": "where is my order?"}]}}


class ParseResponse(BaseModel):
    """Rasa's ``/model/parse`` answer: out of scope, ``intent`` is the model's OOS label (as Rasa's
    ``nlu_fallback``) and heads ``intent_ranking``, followed by the in-scope intents. A multi-label model's
    ``intent`` is the most confident intent that passes (or the OOS label when none does), and ``intents`` lists
    all that pass."""

    text: str
    intent: IntentScoreOut
    entities: list[dict[str, Any]] = Field(default_factory=list, description="Always empty: no entity extraction.")
    intent_ranking: list[IntentScoreOut]
    intents: list[IntentScoreOut] | None = Field(
        default=None,
        description="Multi-label models only (absent otherwise): every intent that passes, most confident first; "
        "empty when out of scope. Not part of Rasa's answer; Rasa clients ignore it.",
    )


class HealthResponse(BaseModel):
    status: str = Field(..., description='"ok", or "degraded" while a reload failed and the previous model serves.')
    model: str
    model_dir: str = Field(..., description="The model directory this server answers from.")
    intents: int
    oos_label: str
    multi_label: bool = Field(False, description="Whether a message can get several intents (`/predict`'s `intents`).")
    version: str
    batching: dict[str, Any]
    reload_error: str | None = Field(
        default=None,
        description="Why the model directory's current contents could not be loaded; the previous model is still "
        "served. Null when the model served is the directory's.",
    )


class ErrorBody(BaseModel):
    status: int
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every error, whatever its status, has this shape."""

    error: ErrorBody
