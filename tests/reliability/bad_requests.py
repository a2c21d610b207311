"""Hostile input for a running runtime: hand-written bad requests (over httpx and raw sockets) and a schemathesis
fuzz of the OpenAPI spec. Used by test_bad_input.py (small counts) and bench/reliability_fuzz.py (thousands).

Every function returns what the server answered, so callers can assert "no 5xx" and report the figures.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import socket
import struct
import zlib
from collections import Counter

import httpx
from PIL import Image

CLOSED = 0  # status recorded when the server closed the connection without an HTTP answer


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _png(width: int, height: int, idat: bytes | None = None, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IDAT", idat) if idat is not None else b""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + body + _chunk(b"IEND", b"")


@functools.lru_cache(maxsize=None)
def hostile_images() -> dict[str, str]:
    """name -> base64 payload. Sizes are what the server must refuse (or survive) cheaply."""
    pixels = zlib.compress(b"\x00" * (4096 * (1 + 4096 * 3)), 9)  # 48 MiB of pixels in ~50 kB
    text_bomb = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9))
    good = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(good, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, format="JPEG")
    raw = {
        "zlib_bomb_4096px": _png(4096, 4096, pixels),
        "header_bomb_100000px": _png(100_000, 100_000),
        "header_bomb_10000px": _png(10_000, 10_000),
        "text_chunk_bomb_64MiB": _png(8, 8, zlib.compress(b"\x00" * (8 * 25)), extra=text_bomb),
        "truncated_png": good.getvalue()[: len(good.getvalue()) // 2],
        "truncated_jpeg": jpeg.getvalue()[:200],
        "zero_by_zero_png": _png(0, 0),
        "random_bytes": bytes(range(256)) * 16,
        "empty": b"",
    }
    images = {name: base64.b64encode(data).decode("ascii") for name, data in raw.items()}
    images["not_base64"] = "this is not base64!"
    images["oversized_base64_20MiB"] = "A" * (20 << 20)
    return images


def json_cases() -> list[tuple[str, dict | bytes, dict]]:
    """(name, body, extra headers): bodies as dicts (sent as JSON) or raw bytes (sent as they are)."""
    big = 10 * 1024 * 1024
    cases: list[tuple[str, dict | bytes, dict]] = [
        ("width_zero", {"prompt": "x", "width": 0}, {}), ("height_zero", {"prompt": "x", "height": 0}, {}),
        ("width_negative", {"prompt": "x", "width": -16}, {}), ("width_huge", {"prompt": "x", "width": 10**9}, {}),
        ("width_2_64", {"prompt": "x", "width": 2**64}, {}), ("height_float", {"prompt": "x", "height": 16.0}, {}),
        ("size_max_float", {"prompt": "x", "width": 1.7e308}, {}),
        ("steps_negative", {"prompt": "x", "steps": -5}, {}), ("steps_zero", {"prompt": "x", "steps": 0}, {}),
        ("seed_negative", {"prompt": "x", "seed": -1}, {}), ("seed_2_64", {"prompt": "x", "seed": 2**64}, {}),
        ("guidance_negative", {"prompt": "x", "guidance_scale": -1e-9}, {}),
        ("strength_negative", {"mode": "img2img", "prompt": "x", "strength": -0.5}, {}),
        ("guidance_nan", b'{"prompt": "x", "guidance_scale": NaN}', {}),
        ("guidance_inf", b'{"prompt": "x", "guidance_scale": Infinity}', {}),
        ("guidance_minus_inf", b'{"prompt": "x", "guidance_scale": -Infinity}', {}),
        ("guidance_1e999", b'{"prompt": "x", "guidance_scale": 1e999}', {}),
        ("strength_nan", b'{"mode": "img2img", "prompt": "x", "strength": NaN}', {}),
        ("steps_5000_digits", b'{"prompt": "x", "steps": ' + b"9" * 5000 + b"}", {}),
        ("prompt_10MB", {"prompt": "x" * big}, {}),
        ("prompt_10MB_multibyte", {"prompt": "\u00e9" * (big // 2)}, {}),
        ("negative_prompt_10MB", {"prompt": "x", "negative_prompt": "n" * big}, {}),
        ("prompt_lone_surrogate", b'{"prompt": "a\\ud800b"}', {}),
        ("prompt_nul", {"prompt": "a\x00b"}, {}),
        ("body_not_utf8", b'{"prompt": "\xff\xfe\xfd"}', {}),
        ("body_latin1_declared", '{"prompt": "caf\u00e9"}'.encode("latin-1"),
         {"content-type": "application/json; charset=latin-1"}),
        ("body_utf16", '{"prompt": "x", "steps": 1}'.encode("utf-16"), {}),
        ("body_array", b"[]", {}), ("body_null", b"null", {}), ("body_number", b"1", {}),
        ("body_empty", b"", {}), ("body_truncated", b'{"prompt": "x", "steps', {}),
        ("body_nested_arrays", b"[" * 100_000 + b"]" * 100_000, {}),
        ("body_nested_objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {}),
        ("body_100k_fields", json.dumps({f"k{i}": i for i in range(100_000)}).encode(), {}),
        ("body_duplicate_keys", b'{"prompt": "x", "prompt": 5}', {}),
        ("type_text_plain", b'{"prompt": "x"}', {"content-type": "text/plain"}),
        ("type_form", b"prompt=x&steps=1", {"content-type": "application/x-www-form-urlencoded"}),
        ("type_multipart", b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b--\r\n",
         {"content-type": "multipart/form-data; boundary=b"}),
        ("type_xml", b"<job><prompt>x</prompt></job>", {"content-type": "application/xml"}),
        ("type_png", base64.b64decode(hostile_images()["truncated_png"]), {"content-type": "image/png"}),
        ("type_missing", b'{"prompt": "x", "steps": 1}', {"content-type": ""}),
        ("type_garbage", b'{"prompt": "x", "steps": 1}', {"content-type": "\x01;;==;"}),
    ]
    for name, data in hostile_images().items():
        mode = "upscale" if name == "zlib_bomb_4096px" else "img2img"
        cases.append((f"init_image_{name}", {"mode": mode, "prompt": "x", "init_image": data}, {}))
    cases.append(("mask_bomb", {"mode": "inpaint", "prompt": "x", "init_image": base64.b64encode(
        _png(8, 8, zlib.compress(b"\x00" * (8 * 25)))).decode(), "mask": hostile_images()["header_bomb_10000px"]}, {}))
    return cases


# (name, raw bytes sent on a fresh connection). {auth} is replaced by the Authorization header line.
RAW_CASES = [
    ("garbage_request_line", b"GARBAGE\r\n\r\n"),
    ("binary_noise", bytes(range(256)) * 8),
    ("header_100kB", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"),
    ("10k_headers", b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n"),
    ("content_length_60MB_no_body", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                                    b"Content-Length: 60000000\r\n\r\n"),
    ("content_length_negative", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: -1\r\n\r\n"),
    ("content_length_text", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: lots\r\n\r\n"),
    ("chunked_over_limit", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + (b"100000\r\n" + b"a" * 0x100000 + b"\r\n") * 48
                           + b"0\r\n\r\n"),
    ("short_body_then_close", b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                              b"Content-Length: 1000\r\n\r\n{\"prompt\""),
    ("raw_non_utf8_path", b"GET /v1/jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    ("percent_non_utf8_path", b"GET /v1/jobs/%ff%fe/image HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    ("non_utf8_token", b"GET /v1/jobs/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"),
    ("http_0_9", b"GET /v1/health\r\n\r\n"),
    ("http_2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("absolute_uri", b"GET http://evil.example/v1/health HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
    ("method_trace", b"TRACE /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    ("method_delete", b"DELETE /v1/jobs HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
]


def send_raw(host: str, port: int, data: bytes, timeout: float = 30.0) -> int:
    """Send `data` on a fresh connection and read the status line; its HTTP status, or CLOSED when the server
    closed the connection without one. Cases whose name ends in `then_close` half-close right after sending."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may answer (413, 400) and close before everything was sent
            pass
        reply = b""
        try:
            while b"\r\n" not in reply and (chunk := sock.recv(65536)):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if not reply.startswith(b"HTTP/"):
        return CLOSED
    return int(reply.split(b" ", 2)[1])


def send_closing(host: str, port: int, data: bytes, timeout: float = 30.0) -> int:
    """Send `data` (a request whose body is shorter than announced) and close; the server must just drop it."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
    return CLOSED


def send_bad_requests(url: str, auth: dict[str, str]) -> list[tuple[str, int]]:
    """Every hand-written bad request once; returns [(case name, status)]."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    answers = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for name, body, headers in json_cases():
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent = {"content-type": "application/json", **headers, **auth}
            if not sent["content-type"]:
                del sent["content-type"]
            answers.append((name, http.post("/v1/jobs", content=content, headers=sent).status_code))
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
            answers.append((f"method_{method}", http.request(method, "/v1/jobs", headers=auth).status_code))
    auth_line = "".join(f"{k}: {v}\r\n" for k, v in auth.items()).encode()
    for name, data in RAW_CASES:
        send = send_closing if name.endswith("then_close") else send_raw
        answers.append((f"raw_{name}", send(host, int(port), data.replace(b"{auth}", auth_line))))
    return answers


def fuzz(url: str, auth: dict[str, str], examples: int, seed: int | None = None) -> Counter:
    """A schemathesis run (positive and negative cases of every operation, with the token) of `examples` cases;
    each response is checked against the spec and for 5xx. Returns a Counter of status codes."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis import strategies as st
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    strategy = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                         schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    conformance = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                   checks.response_schema_conformance]
    seen: Counter = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=strategy)
    def check(case):
        response = case.call_and_validate(base_url=url, headers=auth, checks=conformance)
        seen[response.status_code] += 1

    if seed is not None:
        check = fixed_seed(seed)(check)
    check()
    return seen
