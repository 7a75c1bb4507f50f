"""OpenAI Batch files: reading an input file line by line, writing output lines to the schema.

No broker: the reader is given real files, the output lines are made from real result
records (encoded and decoded as the service writes them) and validated against
``schemas/openai-batch-output.v1.json``; results carrying ``custom_id`` and ``usage``
validate against ``result.v1.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

from producer.openai_batch import output_line, read_batch_file
from schemas import (
    Result,
    ResultErrorKind,
    Usage,
    decode_batch_request,
    decode_results_record,
    encode_batch_request,
    encode_error_result,
    encode_ok_result,
)
from tests.helpers import schema_validator
from tests.test_producer_cli import cli

if TYPE_CHECKING:
    from pathlib import Path

OUTPUT_SCHEMA = schema_validator("openai-batch-output")
RESULT_SCHEMA = schema_validator("result")


def batch_line(custom_id: str, url: str = "/v1/chat/completions", **body: Any) -> str:
    """Return one input line (a chat body unless ``body`` says otherwise)."""
    payload = body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}
    ).decode()


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """Each bad line is named with its line number and what is wrong; the good ones are kept."""
    lines = [
        batch_line("a"),
        "",
        batch_line("a"),
        batch_line("b").replace('"POST"', '"GET"'),
        batch_line("c", messages=[], model="m"),
        batch_line("d", model=3, messages=[{"content": "x"}]),
        batch_line("e", "/v1/embeddings", model="x"),
        batch_line("f", "/v1/moderations", model="x", input="t"),
        '{"custom_id":"g",',
        "[1, 2]",
        batch_line("h", "/v1/embeddings", model="x", input="t"),
        batch_line("i", "/v1/completions", model="x", prompt="once upon"),
        batch_line("").replace('"custom_id":""', '"custom_id":""'),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    found = read_batch_file(str(path))
    assert found.custom_ids == ["a", "h", "i"]
    assert found.line_numbers == [1, 11, 12]
    name = str(path)
    assert found.problems == [
        f"{name}:3: custom_id 'a' is on line 1 already (custom_ids must be unique in a batch)",
        f"{name}:4: Invalid enum value 'GET' - at `$.method`",
        f"{name}:5: Expected `array` of length >= 1 - at `$.body.messages`",
        f"{name}:6: Expected `str`, got `int` - at `$.body.model`",
        f"{name}:7: Object missing required field `input` - at `$.body`",
        f"{name}:8: Invalid enum value '/v1/moderations' - at `$.url`",
        f"{name}:9: not valid JSON (Input data was truncated)",
        f"{name}:10: Expected `object`, got `array`",
        f"{name}:13: Expected `str` of length >= 1 - at `$.custom_id`",
    ]


def test_items_keep_the_line_and_its_body_byte_for_byte(tmp_path: Path) -> None:
    """An item is the line, compact, with the body exactly as written (spacing, escapes)."""
    body = '{"model": "m",  "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    text = (
        f'{{ "custom_id" : "x", "method": "POST", "url": "/v1/chat/completions", "body": {body} }}'
    )
    path = tmp_path / "in.jsonl"
    path.write_text(text + "\n")
    (item,) = read_batch_file(str(path)).items
    assert item == (
        b'{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":'
        + body.encode()
        + b"}"
    )
    assert orjson.loads(item)["body"] == orjson.loads(body)


def test_unknown_fields_on_a_line_are_refused(tmp_path: Path) -> None:
    """A misspelt field (``boby``) on a line is an error, not a silently dropped body."""
    path = tmp_path / "in.jsonl"
    path.write_text(batch_line("a").replace('"body"', '"boby"') + "\n")
    (problem,) = read_batch_file(str(path)).problems
    assert problem.endswith("Object contains unknown field `boby`")


# --- output lines ---------------------------------------------------------------------------


def stored(record: bytes) -> Result:
    """Decode a result record as a reader of the results topic does."""
    result = decode_results_record(record)
    assert isinstance(result, Result)
    return result


REQUEST = decode_batch_request(
    encode_batch_request(
        batch_id="llm-1",
        items=[b'{"custom_id":"q1","body":{}}'] * 3,
        start=0,
        total=3,
        chunk=0,
        chunks=1,
    )
)
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
USAGE = Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4)


def test_results_with_custom_id_and_usage_follow_the_result_schema() -> None:
    """The optional ``custom_id`` and ``usage`` validate and decode (result/v1 still)."""
    ok = encode_ok_result(REQUEST, 0, ANSWER, 1, 2.0, custom_id="q1", usage=USAGE)
    error = encode_error_result(
        REQUEST, 1, ResultErrorKind.TIMEOUT, "slow", None, 3, 9.0, custom_id="q2"
    )
    for record in (ok, error):
        RESULT_SCHEMA.validate(orjson.loads(record))
    assert stored(ok).usage == USAGE
    assert stored(ok).custom_id == "q1"
    assert stored(error).custom_id == "q2"
    assert b"usage" not in encode_ok_result(REQUEST, 0, b"1", 1, 2.0)


def test_output_lines_follow_the_openai_batch_output_schema() -> None:
    """Answers, error statuses and failures without an answer each make a valid line."""
    ok = output_line(stored(encode_ok_result(REQUEST, 0, ANSWER, 1, 2.0, custom_id="q1")))
    refused = output_line(
        stored(
            encode_error_result(
                REQUEST,
                1,
                ResultErrorKind.HTTP_STATUS,
                "HTTP 400: bad model",
                400,
                1,
                2.0,
                custom_id="q2",
            )
        )
    )
    slow = output_line(
        stored(encode_error_result(REQUEST, 2, ResultErrorKind.TIMEOUT, "no answer", None, 60, 9.0))
    )
    for line in (ok, refused, slow):
        OUTPUT_SCHEMA.validate(line)
    assert ok == {
        "id": "batch_req_llm-1_0",
        "custom_id": "q1",
        "response": {"status_code": 200, "request_id": "chatcmpl-1", "body": orjson.loads(ANSWER)},
        "error": None,
    }
    assert refused["response"]["status_code"] == 400
    assert refused["error"] == {"code": "http_status", "message": "HTTP 400: bad model"}
    assert slow["response"] is None
    assert slow["custom_id"] == "2"  # an item without a custom_id is named by its index


@pytest.mark.parametrize(
    "line",
    [
        {"id": "x", "custom_id": "c", "response": None, "error": None},
        {"id": "x", "response": None, "error": {"code": "timeout", "message": "m"}},
        {
            "id": "x",
            "custom_id": "c",
            "response": {"status_code": 200, "request_id": "r", "body": {}},
            "error": {"code": "timeout", "message": "m"},
        },
        {
            "id": "x",
            "custom_id": "c",
            "response": {"status_code": 200, "request_id": "r"},
            "error": None,
        },
        {"id": "x", "custom_id": "c", "error": None, "response": None, "extra": 1},
    ],
)
def test_the_output_schema_refuses_lines_no_reader_could_use(line: dict[str, Any]) -> None:
    """Neither answer nor error, no custom_id, an answer and an error, a body missing."""
    assert not OUTPUT_SCHEMA.is_valid(line)


def test_submit_refuses_a_file_with_bad_lines_unless_told_to_skip_them(tmp_path: Path) -> None:
    """Without ``--skip-invalid`` every bad line is named and nothing is sent (exit 2).

    The file is checked before any Kafka cluster is looked for, so none is needed here.
    """
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([batch_line("a"), "{", batch_line("a")]) + "\n")
    done = cli("submit", str(path), "--format", "openai-batch", bootstrap="127.0.0.1:1")
    assert done.returncode == 2
    assert f"{path}:2: not valid JSON" in done.stderr
    assert f"{path}:3: custom_id 'a' is on line 1 already" in done.stderr
    assert "2 invalid lines" in done.stderr
    assert "--skip-invalid submits the other 1" in done.stderr
    assert done.stdout == ""
