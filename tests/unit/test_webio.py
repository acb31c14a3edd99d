"""Unit tests for ``hookline.webio``: body decoding, content types, sizes and responses."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hookline.errors import (
    BadRequest,
    ClientError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RequestRefused,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from hookline.webio import (
    Request,
    check_size,
    error_response,
    json_response,
    parse_content_type,
    parse_fields,
    parse_json,
    query_int,
    query_one,
    redacted_headers,
    text_response,
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BOUNDARY = "----hooklineBoundary7MA4YWxk"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, bytes] | tuple[str, bytes, dict[str, str]]) -> bytes:
    """A multipart/form-data body built by hand: (name, value[, extra part headers])."""
    chunks: list[bytes] = []
    for part in parts:
        name, value = part[0], part[1]
        extra = dict(part[2]) if len(part) == 3 else {}  # type: ignore[misc]
        disposition = extra.pop("Content-Disposition", f'form-data; name="{name}"')
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        head += "".join(f"{key}: {val}\r\n" for key, val in extra.items())
        chunks.append(head.encode("utf-8") + b"\r\n" + value + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


# --- parse_fields: urlencoded --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"order_id=1234&product_name=example", {"order_id": "1234", "product_name": "example"}),
        ("name=café".encode(), {"name": "café"}),
        (b"name=caf%C3%A9", {"name": "café"}),
        (b"name=caf%c3%a9", {"name": "café"}),
        ("name=한국&x=%ED%95%9C%EA%B5%AD".encode(), {"name": "한국", "x": "한국"}),
        (b"a=1+2&b=1%2B2", {"a": "1 2", "b": "1+2"}),
        (b"a=&b", {"a": "", "b": ""}),
        (b"a=1&a=2", {"a": ["1", "2"]}),
        (b"a=1&b=x&a=2&a=3", {"a": ["1", "2", "3"], "b": "x"}),
        (b"k%20ey=v", {"k ey": "v"}),
        (b"", {}),
        (b"a=1;b=2", {"a": "1;b=2"}),
    ],
)
def test_urlencoded(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_fields(FORM, body) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        FORM,
        f"{FORM}; charset=utf-8",
        f"{FORM}; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
        f'{FORM}; charset="utf8"',
        f"{FORM}; charset=us-ascii",
    ],
)
def test_urlencoded_content_type_variants(content_type: str) -> None:
    assert parse_fields(content_type, b"a=1") == {"a": "1"}


@pytest.mark.parametrize(
    "body",
    [
        b"name=caf\xe9",  # raw latin-1 byte
        b"name=\xff\xfe",
        b"name=caf%E9",  # percent-encoded latin-1 byte
        b"name=%ED%A0%80",  # an encoded UTF-16 surrogate
        b"na%FFme=x",
        b"name=%C3",  # truncated sequence
    ],
)
def test_urlencoded_invalid_utf8(body: bytes) -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_fields(FORM, body)


# --- parse_fields: multipart ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            multipart(("order_id", b"1234"), ("product_name", b"example")),
            {"order_id": "1234", "product_name": "example"},
        ),
        (multipart(("name", "café".encode())), {"name": "café"}),
        (multipart(("a", b"1"), ("a", b"2")), {"a": ["1", "2"]}),
        (multipart(("a", b"")), {"a": ""}),
        (multipart(("a", b"line1\r\nline2")), {"a": "line1\r\nline2"}),
        (
            multipart(("a", b"x", {"Content-Type": "text/plain; charset=utf-8"})),
            {"a": "x"},
        ),
        (
            multipart(("a", b"Y2Fmw6k=", {"Content-Transfer-Encoding": "base64"})),
            {"a": "café"},
        ),
    ],
)
def test_multipart(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_fields(MULTIPART, body) == expected


def test_multipart_quoted_boundary() -> None:
    body = multipart(("a", b"1"))
    assert parse_fields(f'multipart/form-data; boundary="{BOUNDARY}"', body) == {"a": "1"}


@pytest.mark.parametrize(
    "body",
    [
        multipart(
            (
                "f",
                b"hello",
                {
                    "Content-Disposition": 'form-data; name="f"; filename="a.txt"',
                    "Content-Type": "text/plain",
                },
            )
        ),
        multipart(
            ("a", b"1"),
            ("f", b"\x89PNG", {"Content-Disposition": 'form-data; name="f"; filename=""'}),
        ),
    ],
)
def test_multipart_file_parts_are_refused(body: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="file uploads"):
        parse_fields(MULTIPART, body)


@pytest.mark.parametrize(
    ("content_type", "body", "error", "match"),
    [
        ("multipart/form-data", multipart(("a", b"1")), BadRequest, "boundary"),
        (MULTIPART, b"", BadRequest, "boundary"),
        (MULTIPART, b"no parts at all", BadRequest, "boundary"),
        (
            MULTIPART,
            multipart(("a", b"1", {"Content-Disposition": "form-data"})),
            BadRequest,
            "without a field name",
        ),
        (MULTIPART, multipart(("a", b"caf\xe9")), BadRequest, "UTF-8"),
        (
            MULTIPART,
            multipart(("a", b"x", {"Content-Type": "text/plain; charset=iso-8859-1"})),
            UnsupportedMediaType,
            "charset",
        ),
    ],
)
def test_multipart_errors(
    content_type: str, body: bytes, error: type[ClientError], match: str
) -> None:
    with pytest.raises(error, match=match):
        parse_fields(content_type, body)


# --- parse_fields: JSON --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (JSON, b'{"order_id": "1234"}', {"order_id": "1234"}),
        (JSON, b"{}", {}),
        (f"{JSON}; charset=utf-8", '{"n": "café"}'.encode(), {"n": "café"}),
        ("application/vnd.api+json", b'{"a": [1, 2.5, null, true]}', {"a": [1, 2.5, None, True]}),
        ("APPLICATION/JSON", b' \n{"a": 1}\n ', {"a": 1}),
        (JSON, b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # UTF-8 BOM
        (JSON, b'{"a": {"a": 1}}', {"a": {"a": 1}}),  # same key at different levels
        (JSON, b'{"n": "caf\\u00e9"}', {"n": "café"}),
    ],
)
def test_json(content_type: str, body: bytes, expected: dict[str, Any]) -> None:
    assert parse_fields(content_type, body) == expected


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[1, 2]", "must be an object"),
        (b'"text"', "must be an object"),
        (b"42", "must be an object"),
        (b"null", "must be an object"),
        (b"true", "must be an object"),
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b'{"a": }', r"malformed JSON: Expecting value at line 1 column 7"),
        (b'{"a": 1', "malformed JSON: Expecting ',' delimiter"),
        (b"{'a': 1}", "malformed JSON: Expecting property name"),
        (b'{"a": 1} trailing', "malformed JSON: Extra data"),
        (b'{"a": 1, "a": 2}', "key 'a' appears more than once"),
        (b'{"x": {"b": 1, "b": 1}}', "key 'b' appears more than once"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b'{"a": Infinity}', "Infinity is not a JSON value"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
        (b"[" * 10_000, "nested deeper than 64 levels"),
        (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64 levels"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nested deeper than 64 levels"),
        (b'{"a": "caf\xe9"}', "not valid UTF-8"),
    ],
)
def test_json_bad_request(body: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_fields(JSON, body)


def test_json_depth_limit_is_inclusive() -> None:
    body = b"[" * 63 + b"{}" + b"]" * 63  # 64 levels in all
    with pytest.raises(BadRequest, match="must be an object"):
        parse_fields(JSON, body)
    value = parse_json(body)
    for _ in range(63):
        assert isinstance(value, list)
        assert len(value) == 1
        value = value[0]
    assert value == {}
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json(b"[" * 65 + b"]" * 65)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1e400}',  # overflows to float('inf'): Infinity by another name
        b'{"a": -1e400}',
    ],
)
def test_json_overflowing_numbers_are_refused(body: bytes) -> None:
    # parse_json promises "no NaN/Infinity"; json.loads turns 1e400 into inf, which
    # json.dumps later writes back as the non-JSON token Infinity.
    with pytest.raises(BadRequest):
        parse_fields(JSON, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud800"}',  # a lone surrogate: not encodable as UTF-8 afterwards
        b'{"\\udfff": 1}',
    ],
)
def test_json_lone_surrogates_are_refused(body: bytes) -> None:
    # A string the engine cannot encode back to UTF-8 (json_response, the database) would
    # turn into a 500 later; it should be a 400 at the door.
    with pytest.raises(BadRequest):
        parse_fields(JSON, body)


# --- parse_fields: content types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"a=1"),
        ("application/xml", b"<a/>"),
        ("text/json", b"{}"),
        ("application/octet-stream", b"\x00"),
        ("garbage", b"a=1"),  # not a media type at all
        (f"{JSON}; charset=utf-16", '{"a": 1}'.encode("utf-16")),
        (f"{JSON}; charset=latin-1", b'{"a": 1}'),
        (f"{FORM}; charset=iso-8859-1", b"a=1"),
        (f"{FORM}; charset=windows-1252", b"a=1"),
        ("", b"a=1"),  # a body without a content type
        ("   ", b"{}"),
    ],
)
def test_unsupported_media_type(content_type: str, body: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_fields(content_type, body)


@pytest.mark.parametrize("content_type", ["", "  "])
def test_empty_body_without_content_type_is_empty_form(content_type: str) -> None:
    assert parse_fields(content_type, b"") == {}


# --- parse_json, parse_content_type --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "charset", "expected"),
    [
        (b"[1, 2]", None, [1, 2]),
        (b'"x"', "utf-8", "x"),
        (b"1.5", "UTF8", 1.5),
        (b"null", "ascii", None),
        (b'{"a": 1}', " us-ascii ", {"a": 1}),
    ],
)
def test_parse_json_values(body: bytes, charset: str | None, expected: Any) -> None:
    assert parse_json(body, charset) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("", {})),
        ("   ", ("", {})),
        ("application/json", ("application/json", {})),
        ("Application/JSON; Charset=UTF-8", ("application/json", {"charset": "UTF-8"})),
        ('application/json; charset="utf-8"', ("application/json", {"charset": "utf-8"})),
        (
            "multipart/form-data; boundary=abc; charset=utf-8",
            ("multipart/form-data", {"boundary": "abc", "charset": "utf-8"}),
        ),
        ("text/plain ;  charset = utf-8", ("text/plain", {"charset": "utf-8"})),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


# --- headers, sizes, Request ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, []),
        (
            {"Authorization": "Bearer s3cret", "Content-Type": "application/json"},
            [["Authorization", "[redacted]"], ["Content-Type", "application/json"]],
        ),
        (
            {"cookie": "a=b", "x-api-key": "k", "proxy-authorization": "p", "x-other": "v"},
            [
                ["cookie", "[redacted]"],
                ["proxy-authorization", "[redacted]"],
                ["x-api-key", "[redacted]"],
                ["x-other", "v"],
            ],
        ),
        ({"X-API-KEY": "k"}, [["X-API-KEY", "[redacted]"]]),
        ({"webhook-signature": "v1,abc"}, [["webhook-signature", "v1,abc"]]),
    ],
)
def test_redacted_headers(headers: dict[str, str], expected: list[list[str]]) -> None:
    assert redacted_headers(headers) == expected


@pytest.mark.parametrize(
    ("size", "limit", "too_large"),
    [(0, 0, False), (0, 10, False), (10, 10, False), (11, 10, True), (1, 0, True)],
)
def test_check_size(size: int, limit: int, too_large: bool) -> None:
    body = b"x" * size
    if too_large:
        with pytest.raises(PayloadTooLarge) as info:
            check_size(body, limit)
        assert info.value.status == 413
        assert f"{size} bytes" in info.value.message
        assert f"limit is {limit}" in info.value.message
    else:
        check_size(body, limit)


@pytest.mark.parametrize(
    ("kwargs", "method", "headers", "query"),
    [
        ({"method": "post"}, "POST", {}, {}),
        (
            {"method": "Get", "headers": {"Content-Type": "a/b", "X-Thing": "1"}},
            "GET",
            {"content-type": "a/b", "x-thing": "1"},
            {},
        ),
        (
            {"method": "PUT", "headers": [("X-A", "1"), ("x-b", "2")]},
            "PUT",
            {"x-a": "1", "x-b": "2"},
            {},
        ),
        (
            {"method": "GET", "query_string": "a=1&a=2&b=&c=caf%C3%A9"},
            "GET",
            {},
            {"a": ["1", "2"], "b": [""], "c": ["café"]},
        ),
    ],
)
def test_request_build(
    kwargs: dict[str, Any], method: str, headers: dict[str, str], query: dict[str, list[str]]
) -> None:
    request = Request.build(**kwargs)
    assert request.method == method
    assert dict(request.headers) == headers
    assert dict(request.query) == query
    assert request.path == "/"
    assert request.body == b""


def test_request_header_lookup_is_case_insensitive() -> None:
    request = Request.build("POST", "/myapp/webhook", {"Webhook-Id": "msg_1"}, b"a=1")
    assert request.header("webhook-id") == "msg_1"
    assert request.header("WEBHOOK-ID") == "msg_1"
    assert request.header("missing") == ""
    assert request.header("missing", "dflt") == "dflt"
    assert request.path == "/myapp/webhook"
    assert request.body == b"a=1"


# --- query parameters ----------------------------------------------------------------------


def _query(query_string: str) -> Request:
    return Request.build("GET", "/myapp/api/orders", query_string=query_string)


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("", None),
        ("limit=1", 1),
        ("limit=200", 200),
        ("limit=0050", 50),
        ("limit=" + "0" * 5000 + "7", 7),
    ],
)
def test_query_int(query_string: str, expected: int | None) -> None:
    assert query_int(_query(query_string), "limit", 1, 200) == expected


# "1" * 5000: more digits than int() converts, which raised ValueError (a 500).
@pytest.mark.parametrize(
    "value", ["0", "201", "-1", "+5", "1.5", "", "\u0663", "1" * 5000, "9" * 25]
)
def test_query_int_refuses_naming_the_parameter(value: str) -> None:
    query_string = urllib.parse.urlencode({"limit": value})
    with pytest.raises(ValidationFailed) as refused:
        query_int(_query(query_string), "limit", 1, 200)
    assert refused.value.errors == {"limit": "must be a whole number from 1 to 200"}


# A NUL reached the database, whose driver refused the query (a 500 on both engines).
@pytest.mark.parametrize(
    ("query_string", "reason"),
    [
        ("source=%00", "must not contain NUL (%00)"),
        ("source=a%00b", "must not contain NUL (%00)"),
        ("source=a&source=b", "given more than once"),
    ],
)
def test_query_one_refuses_nul_and_repeats(query_string: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        query_one(_query(query_string), "source")
    assert refused.value.errors == {"source": reason}


# --- responses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload", "body"),
    [
        (
            200,
            {"status": "success", "message": "Webhook processed"},
            b'{"status": "success", "message": "Webhook processed"}',
        ),
        (201, [1, 2], b"[1, 2]"),
        (200, {"n": "café"}, '{"n": "café"}'.encode()),
    ],
)
def test_json_response(status: int, payload: Any, body: bytes) -> None:
    response = json_response(status, payload)
    assert response.status == status
    assert response.body == body
    assert response.headers == {"Content-Type": "application/json"}
    assert response.json() == payload


def test_json_response_extra_headers() -> None:
    response = json_response(202, {}, {"Retry-After": "1"})
    assert response.headers == {"Content-Type": "application/json", "Retry-After": "1"}


@pytest.mark.parametrize("text", ["Invalid request", "café", ""])
def test_text_response(text: str) -> None:
    response = text_response(400, text)
    assert response.status == 400
    assert response.body == text.encode("utf-8")
    assert response.headers == {"Content-Type": "text/plain; charset=utf-8"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest("bad"), 400),
        (Unauthorized("who?"), 401),
        (NotFound("none"), 404),
        (Conflict("state"), 409),
        (PayloadTooLarge("big"), 413),
        (UnsupportedMediaType("type"), 415),
        (ValidationFailed("invalid", errors={"order_id": "is required"}), 422),
        (ServiceUnavailable("busy"), 503),
    ],
)
def test_error_response(error: RequestRefused, status: int) -> None:
    response = error_response(error)
    assert response.status == status
    assert response.json() == error.as_dict()
    assert response.headers["Content-Type"] == "application/json"
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="hookline"'
    else:
        assert "WWW-Authenticate" not in response.headers


# --- properties ----------------------------------------------------------------------------

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
content_types = st.one_of(
    header_text,
    st.sampled_from([FORM, JSON, MULTIPART, "multipart/form-data", "application/x+json", ""]),
    st.builds(
        lambda base, params: base + params,
        st.sampled_from([FORM, JSON, "multipart/form-data", "text/plain"]),
        header_text,
    ),
)


@settings(database=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(content_type=content_types, body=st.binary(max_size=300))
@example(content_type=JSON, body=b"[" * 10_000)
@example(content_type=MULTIPART, body=multipart(("a", b"\xff")))
@example(content_type="multipart/form-data; boundary=", body=b"--\r\n\r\n--")
def test_parse_fields_only_raises_client_errors(content_type: str, body: bytes) -> None:
    try:
        result = parse_fields(content_type, body)
    except ClientError:
        return
    assert isinstance(result, dict)


multipart_bodies = st.lists(
    st.tuples(
        st.text(
            alphabet=st.characters(
                min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'
            ),
            min_size=1,
            max_size=10,
        ),
        st.binary(max_size=40),
    ),
    max_size=4,
).map(lambda parts: multipart(*parts))


@settings(database=None, max_examples=200)
@given(body=multipart_bodies)
def test_parse_multipart_only_raises_client_errors(body: bytes) -> None:
    try:
        result = parse_fields(MULTIPART, body)
    except ClientError:
        return
    assert isinstance(result, dict)


form_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(database=None, max_examples=300)
@given(fields=st.dictionaries(form_text, form_text, max_size=6))
def test_urlencoded_round_trip(fields: dict[str, str]) -> None:
    body = urllib.parse.urlencode(fields).encode("ascii")
    assert parse_fields(FORM, body) == fields


@settings(database=None, max_examples=200)
@given(key=form_text, values=st.lists(form_text, min_size=2, max_size=4))
def test_urlencoded_repeated_key_round_trip(key: str, values: list[str]) -> None:
    body = urllib.parse.urlencode([(key, value) for value in values]).encode("ascii")
    assert parse_fields(FORM, body) == {key: values}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | form_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(form_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(database=None, max_examples=200)
@given(data=st.dictionaries(form_text, json_values, max_size=5))
def test_json_round_trip(data: dict[str, Any]) -> None:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    assert parse_fields(JSON, body) == data
