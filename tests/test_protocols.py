"""The inference protocol codecs: request bodies, prediction splitting, bad answers.

Also each per-endpoint codec option (rows and columns, v2 tensors and datatypes, the
output read, unwrapping one-element predictions, the v1 key) and how options are parsed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.protocols import (
    PROTOCOLS,
    BadItem,
    BadResponse,
    CodecOptions,
    RawCodec,
    V1Codec,
    V2Codec,
    codec_options,
    get_codec,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

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


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("raw", CodecOptions(output="probabilities")),
        ("v1", CodecOptions(datatype="FP32")),
        ("raw", CodecOptions(inputs="columns")),
        ("v2", CodecOptions(v1_key="inputs")),
    ],
)
def test_options_of_another_protocol_are_refused(name: ProtocolName, option: CodecOptions) -> None:
    """An option that does not apply to the protocol is a configuration error, not ignored."""
    with pytest.raises(ValueError, match="applies to the"):
        get_codec(name, option)


def test_get_codec_passes_the_output_option_to_v2() -> None:
    """The v2 codec built by the factory reads the configured output."""
    codec = get_codec("v2", CodecOptions(output="b"))
    body = v2_body(
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]},
    )
    assert codec.decode(body, 1) == [b"2"]


# --- parsing options ----------------------------------------------------------------------


def test_codec_options_parse_every_kind_of_value() -> None:
    """Booleans in any spelling, comma-separated columns, datatypes in any case."""
    options = codec_options(
        "v2",
        {
            "rows": "Yes",
            "unwrap": "off",
            "columns": " a, b ,c",
            "datatype": "fp32",
            "inputs": "columns",
            "content_type": "pd",
            "input_name": "x",
            "output": "label",
        },
    )
    assert options == CodecOptions(
        rows=True,
        unwrap=False,
        columns=("a", "b", "c"),
        datatype="FP32",
        inputs="columns",
        content_type="pd",
        input_name="x",
        output="label",
    )
    assert codec_options("v1", {"v1_key": "inputs"}).v1_key == "inputs"
    assert codec_options("raw", {}) == CodecOptions()


@pytest.mark.parametrize(
    ("protocol", "values", "message"),
    [
        ("v2", {"colums": "a"}, r"unknown codec option 'colums' \(options: rows, columns"),
        ("v1", {"datatype": "FP32"}, "'datatype' applies to the v2 protocol, not v1"),
        ("v2", {"v1_key": "inputs"}, "'v1_key' applies to the v1 protocol, not v2"),
        ("raw", {"output": "y"}, "'output' applies to the v2 protocol, not raw"),
        ("v2", {"rows": "maybe"}, "rows='maybe': use true or false"),
        ("v2", {"datatype": "FLOAT"}, "datatype 'FLOAT': use one of BOOL"),
        ("v2", {"inputs": "rows"}, "inputs 'rows': use tensor or columns"),
        ("v1", {"v1_key": "records"}, "v1_key 'records': use instances or inputs"),
        ("v2", {"columns": "a,,b"}, "columns: give at least one column name, none empty"),
        ("raw", {"columns": "a,b,a"}, "columns: a column is named twice"),
        ("v2", {"input_name": ""}, "input_name: must not be empty"),
        ("v2", {"output": " "}, "must not be empty"),
    ],
)
def test_codec_options_refuse_what_no_server_could_use(
    protocol: ProtocolName, values: dict[str, str], message: str
) -> None:
    """Each mistake names the option and what is accepted."""
    with pytest.raises(ValueError, match=message):
        codec_options(protocol, values)


def test_option_defaults_depend_on_the_protocol() -> None:
    """Rows and unwrapping are on for v2 and off for raw and v1 unless configured."""
    default = CodecOptions()
    shaping: tuple[ProtocolName, ...] = ("raw", "v1", "v2")
    assert [default.rows_for(p) for p in shaping] == [False, False, True]
    assert [default.unwrap_for(p) for p in shaping] == [False, False, True]
    configured = CodecOptions(rows=False, unwrap=True)
    assert [configured.rows_for(p) for p in shaping] == [False, False, False]
    assert [configured.unwrap_for(p) for p in shaping] == [True, True, True]


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


# --- rows for raw and v1 -----------------------------------------------------------------

IRIS = [
    {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3},
    {"petal_width": 2.3, "sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2},
]
ROWS = CodecOptions(rows=True)


def test_v1_rows_turn_objects_into_arrays_in_the_first_items_key_order() -> None:
    """KServe's sklearn server wants rows: each object becomes its values' array."""
    body = V1Codec(ROWS).encode([dumps(item) for item in IRIS])
    assert orjson.loads(body) == {"instances": [[5.2, 3.6, 1.5, 0.3], [6.7, 3.0, 5.2, 2.3]]}


def test_rows_keep_each_values_exact_text() -> None:
    """Values are cut out of the item's text, not decoded and re-encoded."""
    items = [b'{"a": 1.50, "b": 1e2, "c": {"x" : [1]}}', b"[7, 8]", b'"s"']
    assert RawCodec(ROWS).encode(items) == b'[[1.50,1e2,{"x" : [1]}],[7, 8],"s"]'
    assert RawCodec(ROWS).encode(items[:1]) == b'[1.50,1e2,{"x" : [1]}]'


def test_stated_columns_set_the_order_and_leave_other_keys_out() -> None:
    """With ``columns`` the row follows that order; keys not named are not sent."""
    options = codec_options("v1", {"rows": "true", "columns": "b,a"})
    body = V1Codec(options).encode([b'{"a": 1, "b": 2, "id": "x"}', b'{"b": 3, "a": 4}'])
    assert body == b'{"instances":[[2,1],[3,4]]}'


def test_a_missing_stated_column_is_a_bad_item_naming_it() -> None:
    """An object without a stated column cannot become a row: no request is made."""
    options = CodecOptions(rows=True, columns=("a", "b"))
    with pytest.raises(BadItem, match=r"item 1 of the request has no 'b' \(columns: a, b\)"):
        V1Codec(options).encode([b'{"a": 1, "b": 2}', b'{"a": 3}'])


def test_objects_with_other_keys_than_the_first_are_a_bad_item() -> None:
    """Without stated columns every object must have the first object's keys."""
    with pytest.raises(BadItem, match=r"item 1 of the request has the keys \['a', 'c'\]"):
        RawCodec(ROWS).encode([b'{"a": 1, "b": 2}', b'{"a": 3, "c": 4}'])


def test_v1_key_inputs_names_the_list_inputs() -> None:
    """``v1_key=inputs`` sends ``{"inputs": [...]}`` (KServe and MLflow read both)."""
    body = V1Codec(CodecOptions(v1_key="inputs")).encode([b"[1, 2]"])
    assert body == b'{"inputs":[[1, 2]]}'


def test_v1_reads_outputs_when_there_are_no_predictions() -> None:
    """An answer holding ``outputs`` instead of ``predictions`` is read the same way."""
    assert V1Codec().decode(b'{"outputs": [1, [2]]}', 2) == [b"1", b"[2]"]


@pytest.mark.parametrize("name", ["raw", "v1"])
def test_unwrap_reads_one_element_predictions_as_their_element(name: ProtocolName) -> None:
    """With ``unwrap`` a ``[0]`` prediction is ``0``; longer arrays stay as they are."""
    codec = get_codec(name, CodecOptions(unwrap=True))
    body = b"[[0], [[2]], [1, 2], []]" if name == "raw" else b'{"predictions":[[0],[[2]],[1,2],[]]}'
    assert codec.decode(body, 4) == [b"0", b"2", b"[1,2]" if name == "v1" else b"[1, 2]", b"[]"]
    plain = get_codec(name)
    assert plain.decode(body, 4)[0] == b"[0]"


# --- v2 encode --------------------------------------------------------------------------


def tensors(codec: V2Codec, items: Sequence[object]) -> list[dict[str, Any]]:
    """Return the input tensors ``codec`` sends for ``items``."""
    inputs: list[dict[str, Any]] = orjson.loads(codec.encode([dumps(i) for i in items]))["inputs"]
    return inputs


def test_v2_number_arrays_become_one_n_by_k_tensor() -> None:
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


def test_v2_objects_become_one_tensor_with_the_first_items_column_order() -> None:
    """Iris objects are one [n, 4] tensor (what MLServer's and KServe's numpy codecs read)."""
    assert tensors(V2Codec(), IRIS) == [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP64",
            "data": [5.2, 3.6, 1.5, 0.3, 6.7, 3.0, 5.2, 2.3],
        }
    ]


def test_v2_stated_columns_order_the_tensor() -> None:
    """``columns`` fixes the order of the values in each row, whatever the items' order."""
    options = CodecOptions(columns=("petal_width", "sepal_length"))
    assert tensors(V2Codec(options), IRIS)[0]["data"] == [0.3, 5.2, 2.3, 6.7]


@pytest.mark.parametrize(
    ("items", "shape", "datatype"),
    [
        pytest.param([1, 2], [2], "INT64", id="integers"),
        pytest.param([1, 2.5], [2], "FP64", id="numbers"),
        pytest.param([True, False], [2], "BOOL", id="booleans"),
        pytest.param(["a b", "c"], [2], "BYTES", id="strings"),
        pytest.param([[1, 2], [3, 4]], [2, 2], "INT64", id="integer-rows"),
        pytest.param([[[1], [2]], [[3], [4]]], [2, 2, 1], "INT64", id="rank-3"),
        pytest.param([{"a": "x", "b": "y"}], [1, 2], "BYTES", id="string-objects"),
        pytest.param([2**63, 1], [2], "FP64", id="beyond-int64"),
    ],
)
def test_v2_datatype_and_shape_are_inferred(
    items: list[object], shape: list[int], datatype: str
) -> None:
    """Scalars are [n], rows [n, k], deeper arrays [n, ...]; the values pick the datatype."""
    (tensor,) = tensors(V2Codec(), items)
    assert (tensor["shape"], tensor["datatype"]) == (shape, datatype)
    flat = tensor["data"]
    assert len(flat) == math.prod(shape)
    if datatype == "BYTES" and len(shape) == 1:
        assert tensor["parameters"] == {"content_type": "str"}
        assert flat == items


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([[1, 2], [3]], id="unequal-lengths"),
        pytest.param([[1, 2], [3, "4"]], id="string-in-row"),
        pytest.param([[True, 2]], id="bool-mixed-with-a-number"),
        pytest.param([[]], id="empty-array"),
        pytest.param([{"x": 1}, {"y": 1}], id="different-keys"),
        pytest.param([{"x": 1}, {"x": 1, "y": 2}], id="extra-key"),
        pytest.param([{"x": 1, "id": "a"}], id="string-and-number"),
        pytest.param([{"x": None}], id="null-value"),
        pytest.param([{"x": [1, 2], "y": 3}], id="nested-value"),
        pytest.param([[1, 2], {"x": 1, "y": 2}, 3], id="mixed-kinds"),
        pytest.param([None], id="null"),
    ],
)
def test_v2_items_that_make_no_tensor_travel_as_their_json_text(items: list[object]) -> None:
    """Anything that is not one rectangular array of one kind is a BYTES tensor of items."""
    texts = [dumps(item) for item in items]
    assert orjson.loads(V2Codec().encode(texts)) == {
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
    item = b'{ "id" : "a",  "x": [1.50] }'
    assert orjson.loads(V2Codec().encode([item]))["inputs"][0]["data"] == [item.decode()]


def test_v2_a_number_beyond_a_double_travels_as_text() -> None:
    """``1e400`` cannot be a tensor value; the items go as JSON text instead of failing."""
    body = orjson.loads(V2Codec().encode([b"[1e400, 1]", b"[2, 3]"]))
    assert body["inputs"][0]["datatype"] == "BYTES"
    assert body["inputs"][0]["data"] == ["[1e400, 1]", "[2, 3]"]
    with pytest.raises(BadItem, match="beyond a double's range"):
        V2Codec(CodecOptions(inputs="columns")).encode([b'{"a": 1e400}'])


def test_v2_rows_false_sends_objects_as_json_text() -> None:
    """``rows=false`` keeps objects whole: a BYTES tensor of their text (an identity model)."""
    (tensor,) = tensors(V2Codec(CodecOptions(rows=False)), IRIS)
    assert tensor["datatype"] == "BYTES"
    assert [orjson.loads(t) for t in tensor["data"]] == IRIS


def test_v2_explicit_rows_with_differing_keys_is_a_bad_item() -> None:
    """Asked for rows (or columns), objects that cannot make them fail instead of falling back."""
    for options in (CodecOptions(rows=True), CodecOptions(columns=("x", "y"))):
        with pytest.raises(BadItem, match="item 1 of the request"):
            V2Codec(options).encode([b'{"x": 1, "y": 2}', b'{"x": 1}'])


@pytest.mark.parametrize(
    ("datatype", "items", "data"),
    [
        ("FP32", [[1, 2.5]], [1, 2.5]),
        ("INT32", [[1, 2]], [1, 2]),
        ("BOOL", [True], [True]),
        ("BYTES", [[1, "a"]], ["1", "a"]),
        ("BYTES", [{"a": [1], "b": 2}], ['{"a":[1],"b":2}']),
    ],
)
def test_v2_configured_datatype_is_used(
    datatype: str, items: list[object], data: list[Any]
) -> None:
    """A configured datatype names the tensor; BYTES holds other values as their JSON text."""
    (tensor,) = tensors(V2Codec(CodecOptions(datatype=datatype)), items)
    assert (tensor["datatype"], tensor["data"]) == (datatype, data)


@pytest.mark.parametrize(
    ("datatype", "items", "message"),
    [
        ("INT64", [[1, 2.5]], "2.5 is not a INT64 value"),
        ("FP32", [["a"]], '"a" is not a FP32 value'),
        ("FP32", [[True]], "true is not a FP32 value"),
        ("BOOL", [1], "1 is not a BOOL value"),
        ("FP64", [[1], [2, 3]], "not a tensor of one shape, so they cannot be sent as a FP64"),
    ],
)
def test_v2_values_the_configured_datatype_cannot_hold_are_bad_items(
    datatype: str, items: list[object], message: str
) -> None:
    """A value that does not fit the stated datatype fails before any request is made."""
    with pytest.raises(BadItem, match=message):
        V2Codec(CodecOptions(datatype=datatype)).encode([dumps(i) for i in items])


def test_v2_content_type_and_input_name_are_sent() -> None:
    """``content_type`` is the request's parameter; ``input_name`` names the tensor."""
    options = CodecOptions(content_type="np", input_name="predict-input")
    body = orjson.loads(V2Codec(options).encode([b"[1, 2]"]))
    assert body["parameters"] == {"content_type": "np"}
    assert body["inputs"][0]["name"] == "predict-input"


def test_v2_columns_give_one_tensor_per_column_with_its_own_datatype() -> None:
    """``inputs=columns``: one [n] tensor per key, in the first item's order (pd codecs)."""
    options = codec_options("v2", {"inputs": "columns", "content_type": "pd"})
    items = [{"x": 1.5, "n": 2, "s": "a"}, {"s": "b", "n": 4, "x": 3}]
    body = orjson.loads(V2Codec(options).encode([dumps(i) for i in items]))
    assert body == {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, 3]},
            {"name": "n", "shape": [2], "datatype": "INT64", "data": [2, 4]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
        "parameters": {"content_type": "pd"},
    }


def test_v2_stated_columns_pick_and_order_the_column_tensors() -> None:
    """With ``columns`` only those keys are sent, in that order, with the configured type."""
    options = CodecOptions(inputs="columns", columns=("b", "a"), datatype="FP32")
    (b, a) = tensors(V2Codec(options), [{"a": 1, "b": 2, "id": "x"}])
    assert (b["name"], b["data"], b["datatype"], a["name"], a["data"]) == (
        "b",
        [2],
        "FP32",
        "a",
        [1],
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"a": 1}, [1]], "item 1 of the request is not an object"),
        ([{"a": [1, 2]}], "column 'a' of item 0 is not a scalar"),
        ([{"a": 1}, {"a": "x"}], "column 'a' mixes strings, numbers and booleans"),
        ([{"a": 1}, {"b": 1}], "item 1 of the request has the keys"),
    ],
)
def test_v2_column_inputs_need_objects_of_scalars(items: list[object], message: str) -> None:
    """Items that give no columns fail as bad items naming the item or the column."""
    with pytest.raises(BadItem, match=message):
        V2Codec(CodecOptions(inputs="columns")).encode([dumps(i) for i in items])


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


def test_v2_one_value_per_item_reads_as_a_scalar() -> None:
    """MLServer's sklearn answer ``predict`` [n, 1] gives ``"setosa"``, not ``["setosa"]``."""
    body = v2_body(
        {"name": "predict", "shape": [2, 1], "datatype": "BYTES", "data": ["setosa", "virginica"]}
    )
    assert V2Codec().decode(body, 2) == [b'"setosa"', b'"virginica"']
    kept = V2Codec(CodecOptions(unwrap=False))
    assert kept.decode(body, 2) == [b'["setosa"]', b'["virginica"]']


def test_v2_one_value_per_item_sent_nested_reads_as_a_scalar() -> None:
    """Rows sent nested (``[[0], [2]]``) or of shape [n, 1, 1] unwrap to their one value."""
    nested = v2_body({"name": "y", "shape": [2, 1], "datatype": "INT64", "data": [[0], [2]]})
    assert V2Codec().decode(nested, 2) == [b"0", b"2"]
    deep = v2_body({"name": "y", "shape": [2, 1, 1], "datatype": "INT64", "data": [[[0]], [[2]]]})
    assert V2Codec().decode(deep, 2) == [b"0", b"2"]
    assert V2Codec(CodecOptions(unwrap=False)).decode(nested, 2) == [b"[0]", b"[2]"]


def test_v2_takes_the_first_output_by_default() -> None:
    """Without a configured name the first output is the prediction."""
    body = v2_body(
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]},
        {"name": "probabilities", "shape": [1, 3], "datatype": "FP64", "data": [0.9, 0.1, 0]},
    )
    assert V2Codec().decode(body, 1) == [b'"setosa"']
    assert V2Codec(CodecOptions(output="probabilities")).decode(body, 1) == [b"[0.9,0.1,0]"]


def test_v2_missing_named_output_lists_what_there_is() -> None:
    """A configured output the server did not send is refused, naming those it did."""
    body = v2_body({"name": "label", "shape": [1], "datatype": "BYTES", "data": ["a"]})
    with pytest.raises(BadResponse, match=r"no output 'proba' \(it has 'label'\)"):
        V2Codec(CodecOptions(output="proba")).decode(body, 1)


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
    """Number arrays sent as an [n, k] tensor and echoed back decode to the same rows.

    One-number rows come back as that number (``unwrap``, the default for v2).
    """
    codec = V2Codec()
    body = codec.encode([dumps(r) for r in rows])
    predictions = codec.decode(echo(codec, body, len(rows)), len(rows))
    expected = [r[0] for r in rows] if len(rows[0]) == 1 else rows
    assert [orjson.loads(p) for p in predictions] == expected


RECORD_KEYS = st.lists(st.text(max_size=4), min_size=1, max_size=4, unique=True)


@given(
    keys=RECORD_KEYS,
    data=st.data(),
    name=st.sampled_from(["raw", "v1", "v2"]),
)
def test_objects_with_the_same_keys_become_rows_in_every_protocol(
    keys: list[str], data: st.DataObject, name: ProtocolName
) -> None:
    """Objects of numbers sharing keys (in any order) arrive as rows in the first one's order."""
    count = data.draw(st.integers(1, 6))
    records = [
        dict(data.draw(st.permutations([(k, data.draw(FINITE)) for k in keys])))
        for _ in range(count)
    ]
    order = list(records[0])
    codec = get_codec(name, CodecOptions(rows=True, unwrap=False))
    body = codec.encode([dumps(r) for r in records])
    predictions = codec.decode(echo(codec, body, count), count)
    assert [orjson.loads(p) for p in predictions] == [[r[k] for k in order] for r in records]


def rows_of(items: list[object]) -> list[object]:
    """Return ``items`` with objects as the arrays of their values in the first one's order."""
    order: list[str] | None = None
    out: list[object] = []
    for item in items:
        if isinstance(item, dict):
            order = order or list(item)
            out.append([item[k] for k in order] if set(item) == set(order) else item)
        else:
            out.append(item)
    return out


@given(items=st.lists(JSON_VALUES, min_size=1, max_size=8))
def test_v2_any_items_encode_to_one_tensor_that_restores_them(items: list[object]) -> None:
    """Any items give one tensor of first dimension n: their rows reshaped, or their text."""
    (tensor,) = tensors(V2Codec(), items)
    n = len(items)
    assert tensor["shape"][0] == n
    if tensor["datatype"] == "BYTES" and tensor["data"] == [dumps(i).decode() for i in items]:
        return  # the items as JSON text (they are no tensor, or all strings)
    flat = tensor["data"]
    per_item = math.prod(tensor["shape"][1:])
    restored = [
        flat[i]
        if len(tensor["shape"]) == 1
        else nest(flat[i * per_item : (i + 1) * per_item], tensor["shape"][1:])
        for i in range(n)
    ]
    assert restored == rows_of(items)


def nest(flat: list[Any], dims: list[int]) -> list[Any]:
    """Arrange ``flat`` (row-major) to the shape ``dims``."""
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0]
    return [nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]
