"""`imagen serve` rejects bad input with a 4xx that names the problem, and keeps answering: every request field
each way it can be wrong, malformed bodies, image payloads (bombs, wrong formats, data URLs), oversized bodies, and a
bounded schemathesis fuzz of the OpenAPI spec. TestClient around the fake model (conftest.FakeImagen).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from conftest import AUTH, assert_healthy, png_b64
from PIL import Image

from imagen_addon.runtime import server as server_module
from imagen_addon.runtime.schemas import MAX_IMAGE_B64_CHARS


# ---- input validation --------------------------------------------------------------------------------------------
# (body, the field the error must name); every field of the request, each way it can be wrong.
BAD_FIELDS = [
    ("prompt", ""), ("prompt", "   "), ("prompt", "x" * 1001), ("prompt", 5), ("prompt", "a\x00b"),
    ("negative_prompt", "n" * 1001), ("negative_prompt", None), ("mode", "paint"), ("seed", -1), ("seed", 2**32),
    ("seed", "abc"), ("steps", True), ("steps", "5"), ("panorama", 1), ("steps", 0), ("steps", 251), ("steps", 2.5), ("sampler", "euler"),
    ("guidance_scale", -0.1), ("guidance_scale", 31), ("guidance_scale", "lots"), ("width", 4), ("width", 2048),
    ("width", 20), ("height", 1025), ("height", 12), ("tiling", "y"), ("panorama", "sometimes"),
    ("strength", 1.5), ("strength", -0.1), ("colour", "red"), ("mask", png_b64()), ("init_image", 7),
]
BAD_BODIES = [({"prompt": "x", name: value}, name) for name, value in BAD_FIELDS] + [
    ({"prompt": "x", "panorama": True, "tiling": "xy"}, "tiling"),
    ({"prompt": "x", "panorama": True, "height": 600}, "width"),
    ({"prompt": "x", "panorama": True, "width": 40, "height": 8}, "width"),
    ({"prompt": "x", "panorama": True, "width": 24}, "height"),
    ({"mode": "img2img", "prompt": "x"}, "init_image"), ({"mode": "upscale"}, "init_image"),
    ({"mode": "inpaint", "prompt": "x", "init_image": png_b64()}, "mask"),
]


@pytest.mark.parametrize("body, field", BAD_BODIES)
def test_bad_fields_are_422_naming_the_field(api, body, field):
    response = api.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


def test_non_finite_numbers_and_malformed_bodies_are_4xx(api):
    for content in (b'{"prompt": "x", "guidance_scale": NaN}', b'{"prompt": "x", "strength": Infinity}', b"{bad",
                    b"[]", b'"a cat"', b"", b"\xff\xfe"):
        response = api.post("/v1/jobs", content=content, headers={**AUTH, "content-type": "application/json"})
        assert 400 <= response.status_code < 500 and response.json()["error"], content
    response = api.post("/v1/jobs", content=b"prompt=x", headers={**AUTH, "content-type": "text/plain"})
    assert response.status_code == 422 and "JSON object" in response.json()["error"]
    assert api.delete("/v1/jobs", headers=AUTH).status_code == 405
    assert api.get("/v2/anything").status_code == 404
    assert assert_healthy(api)["status"] == "ok"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (no pixel data): a decompression bomb's first bytes."""
    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize("image, message", [
    ("not base64!", "not valid base64"), (_b64(b"hello, not an image"), "not a PNG, JPEG or WebP"),
    (png_b64(fmt="GIF"), "not a PNG, JPEG or WebP"), (png_b64(fmt="BMP"), "not a PNG, JPEG or WebP"),
    (_b64(_png_header_only(100_000, 100_000)), "too many pixels"), (_b64(_png_header_only(5000, 10)), "5000x10"),
    (png_b64((4097, 1), mode="L"), "4097x1"), (_b64(_truncated_png()), "could not be decoded"),
    ("", "init_image"), ("data:image/png,abc", "data URL"),
])
def test_bad_image_payloads_are_422(api, image, message):
    response = api.post("/v1/jobs", json={"mode": "img2img", "prompt": "x", "init_image": image}, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["error"], response.text
    assert assert_healthy(api)["status"] == "ok"


def test_image_formats_and_data_urls_are_accepted(api):
    for image in (png_b64(fmt="JPEG"), png_b64(fmt="WEBP"), "data:image/png;base64," + png_b64()):
        assert api.post("/v1/jobs", json={"mode": "img2img", "prompt": "x", "steps": 1, "init_image": image},
                        headers=AUTH).status_code == 202


def test_oversized_payload_is_rejected_before_decoding(api):
    response = api.post("/v1/jobs", json={"mode": "upscale", "init_image": "A" * (MAX_IMAGE_B64_CHARS + 4)},
                        headers=AUTH)
    assert response.status_code == 422 and "too large" in response.json()["error"]


@pytest.mark.parametrize("size, message", [((6, 6), "multiples of 4"), ((520, 8), "at most 512 px")])
def test_upscale_input_must_give_a_possible_output_size(api, size, message):
    response = api.post("/v1/jobs", json={"mode": "upscale", "init_image": png_b64(size)}, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["error"]


def test_mask_must_match_the_init_image(api):
    body = {"mode": "inpaint", "prompt": "x", "init_image": png_b64((16, 16)), "mask": png_b64((8, 8), mode="L")}
    response = api.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422 and "same size" in response.json()["error"]


def test_too_large_body_is_413(make_api, fake_model, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", 1000)  # instead of ~45 MB
    client, _ = make_api(fake_model)
    body = json.dumps({"prompt": "x" * 990}).encode()
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["error"]
    chunks = iter([body[:600], body[600:]])  # no Content-Length: counted as it arrives
    response = client.post("/v1/jobs", content=chunks, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert assert_healthy(client)["status"] == "ok"


def test_schemathesis_finds_no_server_errors(api):
    """A bounded fuzz of the OpenAPI spec (valid and invalid requests, with the token): no 5xx, and every answer
    matches the documented status codes, content types and response schemas."""
    schemathesis = pytest.importorskip("schemathesis", minversion="4")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import checks

    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    strategy = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                         schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    conformance = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                   checks.response_schema_conformance]
    seen = set()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        response = case.call_and_validate(headers=AUTH, checks=conformance)
        seen.add(response.status_code)

    check()
    assert 422 in seen and 200 in seen
    assert assert_healthy(api)["worker"] == "ok"
