"""What the core knows of the model: the facts `status` shows, and the plain turn rule."""

from datetime import UTC, datetime

from bot.core.generator import ModelInfo, ProjectionCounts, plain_turns
from storage.types import Role, StoredTurn


def info(**changes) -> ModelInfo:
    fields = dict(
        name="m",
        source="m",
        quantization="int8",
        backend="torch",
        parameters=354_823_168,
        context=1024,
        projections=ProjectionCounts(int8=97, total=97),
    )
    return ModelInfo(**{**fields, **changes})


def test_details_name_quantization_projections_and_size():
    assert info().details() == ["INT8", "97/97 projections INT8", "354.8M parameters"]
    assert info(quantization="none").details()[0] == "FP32"
    remote = info(quantization="remote", parameters=None, projections=None)
    assert remote.details() == ["remote"]
    assert remote.summary() == "m (remote, backend torch)"


def test_plain_turns_keep_every_stored_turn_then_the_message():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    history = [StoredTurn(Role.USER, "u", "hi", at), StoredTurn(Role.USER, "u", "hi", at)]
    assert plain_turns(history, "again") == ["hi", "hi", "again"]
