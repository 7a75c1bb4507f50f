"""The inference protocol codecs: request bodies, prediction splitting, bad answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.protocols import (
    PROTOCOLS,
    BadResponse,
    RawCodec,
    V1Codec,
    V2Codec,
    get_codec,
)

if TYPE_CHECKING:
    from consumer.protocols import Codec, ProtocolName

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
FINITE = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)


def dumps(value: object) -> bytes:
    """Encode one JSON value compactly, as a producer would."""
    return orjson.dumps(value)


def v2_body(*outputs: dict[str, Any]) -> bytes:
    """Return an Open Inference Protocol response body holding ``outputs``."""
    return orjson.dumps({"model_name": "m", "outputs": list(outputs)})


# --- the factory ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROTOCOLS)
def test_get_codec_returns_the_named_json_codec(name: ProtocolName) -> None:
    """Each protocol name gives a codec of that name that posts JSON."""
    codec = get_codec(name)
    assert codec.name == name
    assert codec.content_type == "application/json"


def test_get_codec_rejects_an_unknown_name() -> None:
    """A protocol name from configuration that no codec serves fails with the choices."""
    with pytest.raises(ValueError, match=r"unknown inference protocol 'v3'.*raw, v1, v2"):
        get_codec("v3")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["raw", "v1"])
def test_output_name_is_only_for_v2(name: ProtocolName) -> None:
    """Asking raw or v1 for a named output is a configuration error, not silently ignored."""
    with pytest.raises(ValueError, match="v2 protocol only"):
        get_codec(name, output_name="probabilities")


def test_get_codec_passes_output_name_to_v2() -> None:
    """The v2 codec built by the factory reads the configured output."""
    codec = get_codec("v2", output_name="b")
    body = v2_body(
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]},
    )
    assert codec.decode(body, 1) == [b"2"]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_encode_refuses_an_empty_work_unit(name: ProtocolName) -> None:
    """A request with no items is a caller bug and fails loudly."""
    with pytest.raises(ValueError, match="at least one item"):
        get_codec(name).encode([])


# --- raw --------------------------------------------------------------------------------


def test_raw_single_item_is_sent_verbatim() -> None:
    """One item is the whole body, byte for byte (spacing and number spelling kept)."""
    item = b'{"b": 1,  "a": 2.50}'
    assert RawCodec().encode([item]) == item


def test_raw_several_items_become_a_json_array_of_the_exact_texts() -> None:
    """Several items are joined into one JSON array without being re-encoded."""
    items = [b'{"a": 1.0}', b"[1, 2]", b'"x"']
    body = RawCodec().encode(items)
    assert body == b'[{"a": 1.0},[1, 2],"x"]'
    assert orjson.loads(body) == [{"a": 1.0}, [1, 2], "x"]


def test_raw_single_prediction_is_the_whole_body() -> None:
    """With one item the body is its prediction, even when that prediction is an array."""
    assert RawCodec().decode(b' ["setosa", 0.9] \n', 1) == [b'["setosa", 0.9]']
    assert RawCodec().decode(b'"setosa"', 1) == [b'"setosa"']


def test_raw_several_predictions_are_the_array_elements() -> None:
    """With several items each array element is one prediction, in order, as raw JSON."""
    body = b'["setosa", {"p": [0.1, 0.9]}, null]'
    assert RawCodec().decode(body, 3) == [b'"setosa"', b'{"p": [0.1, 0.9]}', b"null"]


def test_raw_wrong_prediction_count_is_a_bad_response() -> None:
    """An array of four answers to five items names both numbers."""
    with pytest.raises(BadResponse, match="expected 5 predictions, got 4"):
        RawCodec().decode(b"[1,2,3,4]", 5)


def test_raw_non_array_for_several_items_is_a_bad_response() -> None:
    """A single value where an array of predictions was due is refused."""
    with pytest.raises(BadResponse, match="expected a JSON array of 2 predictions"):
        RawCodec().decode(b'{"label": "setosa"}', 2)


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b'["a", "b"', b"[1,2,3] trailing"])
def test_raw_non_json_is_a_bad_response(body: bytes, count: int) -> None:
    """Empty, HTML, truncated or trailing-garbage bodies are reported as not JSON."""
    with pytest.raises(BadResponse, match="not valid JSON"):
        RawCodec().decode(body, count)


# --- v1 ---------------------------------------------------------------------------------


def test_v1_body_is_instances_by_concatenation() -> None:
    """The v1 body wraps the exact item texts in ``{"instances": [...]}``."""
    items = [b'{"b": 1,  "a": 2.50}', b"[5.1, 3.5]"]
    body = V1Codec().encode(items)
    assert body == b'{"instances":[{"b": 1,  "a": 2.50},[5.1, 3.5]]}'
    assert orjson.loads(body) == {"instances": [{"b": 1, "a": 2.5}, [5.1, 3.5]]}


def test_v1_accepts_msgspec_raw_items() -> None:
    """Items held as ``msgspec.Raw`` views (as decoded from a BatchRequest) encode alike."""
    items = msgspec.json.decode(b'[{"a": 1}, 2]', type=list[msgspec.Raw])
    assert V1Codec().encode(items) == b'{"instances":[{"a": 1},2]}'
    assert RawCodec().encode(items[:1]) == b'{"a": 1}'
    assert orjson.loads(V2Codec().encode(items))["inputs"][0]["data"] == ['{"a": 1}', "2"]


def test_v1_predictions_are_split_as_raw_json() -> None:
    """Each element of ``predictions`` comes back as its own exact JSON text."""
    body = b'{"predictions": ["setosa", [0.1, 0.9], {"k": 1}], "model": "iris"}'
    assert V1Codec().decode(body, 3) == [b'"setosa"', b"[0.1, 0.9]", b'{"k": 1}']


def test_v1_wrong_prediction_count_is_a_bad_response() -> None:
    """One prediction fewer than items is refused with both counts."""
    with pytest.raises(BadResponse, match="expected 5 predictions, got 4"):
        V1Codec().decode(b'{"predictions": [1, 2, 3, 4]}', 5)


def test_v1_missing_predictions_is_a_bad_response() -> None:
    """An answer without ``predictions`` (an error object, say) names the missing field."""
    with pytest.raises(BadResponse, match="predictions"):
        V1Codec().decode(b'{"error": "model not loaded"}', 1)


def test_v1_predictions_not_an_array_is_a_bad_response() -> None:
    """``predictions`` must be an array, even for one item."""
    with pytest.raises(BadResponse, match=r"unexpected response shape.*predictions"):
        V1Codec().decode(b'{"predictions": "setosa"}', 1)


@pytest.mark.parametrize("body", [b"", b"garbage", b'{"predictions": [1, 2', b"[1, 2]"])
def test_v1_non_json_or_non_object_is_a_bad_response(body: bytes) -> None:
    """Non-JSON, truncated, or a bare array instead of the v1 object are refused."""
    with pytest.raises(BadResponse):
        V1Codec().decode(body, 2)


# --- v2 encode --------------------------------------------------------------------------


def test_v2_number_arrays_become_one_n_by_k_fp64_tensor() -> None:
    """Equal-length arrays of numbers are one row-major [n, k] FP64 tensor ``input-0``."""
    body = V2Codec().encode([b"[5.1, 3.5, 1.4, 0.2]", b"[6, 3, 4.8, 1.8]"])
    assert orjson.loads(body) == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": [5.1, 3.5, 1.4, 0.2, 6, 3, 4.8, 1.8],
            }
        ]
    }


def test_v2_number_records_become_one_tensor_per_key() -> None:
    """Objects of numbers with the same keys give one [n] FP64 tensor per key, in key order."""
    items = [dumps({"x": 1.5, "y": 2}), dumps({"y": 4, "x": 3.5})]
    assert orjson.loads(V2Codec().encode(items)) == {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, 3.5]},
            {"name": "y", "shape": [2], "datatype": "FP64", "data": [2, 4]},
        ]
    }


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([[1, 2], [3]], id="unequal-lengths"),
        pytest.param([[1, 2], [3, "4"]], id="string-in-row"),
        pytest.param([[True, 2]], id="bool-is-not-a-number"),
        pytest.param([[[1], [2]]], id="nested-arrays"),
        pytest.param([[]], id="empty-array"),
        pytest.param([{}], id="empty-object"),
        pytest.param([{"x": 1}, {"y": 1}], id="different-keys"),
        pytest.param([{"x": 1}, {"x": 1, "y": 2}], id="extra-key"),
        pytest.param([{"x": 1, "id": "a"}], id="string-value"),
        pytest.param([{"x": None}], id="null-value"),
        pytest.param([[1, 2], {"x": 1}], id="mixed-kinds"),
        pytest.param([1, 2.5], id="scalars"),
        pytest.param(["text"], id="string"),
    ],
)
def test_v2_other_items_become_a_bytes_tensor_of_their_json(items: list[object]) -> None:
    """Anything that is not uniform numbers travels as a BYTES tensor of exact item texts."""
    texts = [dumps(item) for item in items]
    body = orjson.loads(V2Codec().encode(texts))
    assert body == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(items)],
                "datatype": "BYTES",
                "parameters": {"content_type": "str"},
                "data": [t.decode() for t in texts],
            }
        ]
    }


def test_v2_bytes_tensor_keeps_the_items_text_verbatim() -> None:
    """The BYTES elements are the items' own text, spacing and all, not a re-encoding."""
    item = b'{ "id" : "a",  "x": 1.50 }'
    assert orjson.loads(V2Codec().encode([item]))["inputs"][0]["data"] == [item.decode()]


# --- v2 decode --------------------------------------------------------------------------


def test_v2_vector_output_gives_one_scalar_per_item() -> None:
    """An [n] output is n predictions, each one element as raw JSON."""
    body = v2_body({"name": "label", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]})
    assert V2Codec().decode(body, 3) == [b'"a"', b'"b"', b'"c"']


def test_v2_matrix_output_gives_one_row_per_item() -> None:
    """An [n, k] output is split into n JSON arrays of k values."""
    body = v2_body({"name": "p", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]})
    assert V2Codec().decode(body, 2) == [b"[1,2,3]", b"[4,5,6]"]


def test_v2_higher_rank_output_nests_each_item() -> None:
    """An [n, 2, 2] output gives each item a 2x2 nested array, row-major."""
    body = v2_body({"name": "p", "shape": [2, 2, 2], "datatype": "INT64", "data": list(range(8))})
    assert V2Codec().decode(body, 2) == [b"[[0,1],[2,3]]", b"[[4,5],[6,7]]"]


def test_v2_rows_sent_nested_are_accepted() -> None:
    """A server that nests ``data`` by row instead of flattening still decodes per item."""
    body = v2_body({"name": "p", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]})
    assert V2Codec().decode(body, 2) == [b"[1,2]", b"[3,4]"]


def test_v2_takes_the_first_output_by_default() -> None:
    """Without a configured name the first output is the prediction."""
    body = v2_body(
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]},
        {"name": "probabilities", "shape": [1, 3], "datatype": "FP64", "data": [0.9, 0.1, 0]},
    )
    assert V2Codec().decode(body, 1) == [b'"setosa"']
    assert V2Codec("probabilities").decode(body, 1) == [b"[0.9,0.1,0]"]


def test_v2_missing_named_output_lists_what_there_is() -> None:
    """A configured output the server did not send is refused, naming those it did."""
    body = v2_body({"name": "label", "shape": [1], "datatype": "BYTES", "data": ["a"]})
    with pytest.raises(BadResponse, match=r"no output 'proba' \(it has 'label'\)"):
        V2Codec("proba").decode(body, 1)


def test_v2_no_outputs_is_a_bad_response() -> None:
    """An empty outputs list carries no predictions."""
    with pytest.raises(BadResponse, match="no outputs"):
        V2Codec().decode(b'{"outputs": []}', 1)


def test_v2_wrong_first_dimension_is_a_wrong_count() -> None:
    """shape[0] is the prediction count and must equal the item count."""
    body = v2_body({"name": "y", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]})
    with pytest.raises(BadResponse, match="expected 5 predictions, got 4"):
        V2Codec().decode(body, 5)


def test_v2_shape_that_does_not_fit_the_data_is_a_bad_response() -> None:
    """A [2, 3] tensor with five values is refused, naming shape and data length."""
    body = v2_body({"name": "y", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5]})
    with pytest.raises(BadResponse, match=r"'y' has shape \[2, 3\] \(6 values\) but 5 data"):
        V2Codec().decode(body, 2)


def test_v2_vector_with_too_few_values_is_a_bad_response() -> None:
    """An [n] tensor whose data is shorter than n is refused."""
    body = v2_body({"name": "y", "shape": [3], "datatype": "FP64", "data": [1, 2]})
    with pytest.raises(BadResponse, match="3 values"):
        V2Codec().decode(body, 3)


def test_v2_scalar_output_is_a_bad_response() -> None:
    """A rank-0 output cannot be split per item."""
    body = v2_body({"name": "y", "shape": [], "datatype": "FP64", "data": [1]})
    with pytest.raises(BadResponse, match="scalar"):
        V2Codec().decode(body, 1)


def test_v2_negative_dimension_is_a_bad_response() -> None:
    """A -1 (unknown) dimension in an answer is refused rather than guessed."""
    body = v2_body({"name": "y", "shape": [1, -1], "datatype": "FP64", "data": [1]})
    with pytest.raises(BadResponse, match="negative dimension"):
        V2Codec().decode(body, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"<html>", "not valid JSON"),
        (b'{"outputs": [', "not valid JSON"),
        (b'{"error": "boom"}', "outputs"),
        (b'{"outputs": [{"name": "y", "shape": [1]}]}', "data"),
        (b'{"outputs": [{"name": "y", "shape": ["1"], "data": [1]}]}', "shape"),
    ],
)
def test_v2_malformed_answers_are_bad_responses(body: bytes, message: str) -> None:
    """Non-JSON, truncated, error objects and tensors lacking fields are all refused."""
    with pytest.raises(BadResponse, match=message):
        V2Codec().decode(body, 1)


# --- properties -------------------------------------------------------------------------


def echo(codec: Codec, body: bytes, count: int) -> bytes:
    """Answer ``body`` as an identity model speaking ``codec``'s protocol would."""
    if codec.name == "raw":
        return body
    if codec.name == "v1":
        return orjson.dumps({"predictions": orjson.loads(body)["instances"]})
    inputs = orjson.loads(body)["inputs"]
    assert inputs[0]["shape"][0] == count
    return orjson.dumps({"outputs": inputs})


@given(items=st.lists(JSON_VALUES, min_size=1, max_size=8))
@pytest.mark.parametrize("name", ["raw", "v1"])
def test_identity_round_trip_returns_each_item_in_order(
    name: ProtocolName, items: list[object]
) -> None:
    """Any JSON items sent to an identity model come back one per item, in order."""
    codec = get_codec(name)
    texts = [dumps(item) for item in items]
    body = codec.encode(texts)
    predictions = codec.decode(echo(codec, body, len(items)), len(items))
    assert predictions == texts


@given(
    rows=st.integers(1, 4).flatmap(
        lambda k: st.lists(st.lists(FINITE, min_size=k, max_size=k), min_size=1, max_size=8)
    )
)
def test_v2_number_rows_round_trip_through_an_echoing_server(rows: list[list[float]]) -> None:
    """Number arrays encoded as an [n, k] tensor and echoed back decode to the same rows."""
    codec = V2Codec()
    body = codec.encode([dumps(r) for r in rows])
    predictions = codec.decode(echo(codec, body, len(rows)), len(rows))
    assert [orjson.loads(p) for p in predictions] == rows


@given(items=st.lists(JSON_VALUES, min_size=1, max_size=8))
def test_v2_any_items_encode_to_a_valid_tensor_set(items: list[object]) -> None:
    """Any items give tensors whose first dimension is n and whose data restores the items."""
    body = orjson.loads(V2Codec().encode([dumps(item) for item in items]))
    tensors = body["inputs"]
    n = len(items)
    assert all(t["shape"][0] == n for t in tensors)
    first = tensors[0]
    if first["datatype"] == "BYTES":
        restored = [orjson.loads(text) for text in first["data"]]
    elif len(first["shape"]) == 2:
        k = first["shape"][1]
        restored = [first["data"][i * k : (i + 1) * k] for i in range(n)]
    else:
        restored = [{t["name"]: t["data"][i] for t in tensors} for i in range(n)]
    assert restored == items
