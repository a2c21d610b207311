"""Security properties of the runtime and the add-on: loopback by default, a token on every endpoint but health,
private token files, constant-time token comparison, no client-chosen paths, no code execution from data, and
network use only for loopback URLs unless Blender's online access is on.

Also covered elsewhere: a non-loopback --host without --allow-remote and an env token is refused
(tests/runtime/test_server_auth.py::test_unsafe_host_or_token_is_refused); in real Blender with online access off a
remote URL is refused before any request (tests/blender/test_extension.py::test_in_blender[offline_refuses_remote_url]).
"""

from __future__ import annotations

import ast
import hmac
import os
import re
import socket
import stat
from pathlib import Path

import pytest
from reliability_fixtures import fakes, make_api  # noqa: F401 (fixtures)
from reliability_support import AUTH, REPO, TOKEN, Runtime, listening_addresses, wait_job

from imagen_addon.blender import logic
from imagen_addon.runtime import server as server_module
from imagen_addon.runtime.client import is_loopback
from imagen_addon.runtime.jobs import RESULT_NAME
from imagen_addon.runtime.launcher import RuntimeLauncher

PACKAGE = REPO / "imagen_addon"


# ---- binding and tokens ------------------------------------------------------------------------------------------
def test_default_bind_is_loopback_only_and_token_file_private(tmp_path):
    """`imagen serve` with no --host listens on 127.0.0.1 only (checked in the kernel's socket table); without an env
    token it writes a fresh token to a 0600 file in a 0700 folder, removed at exit."""
    assert server_module.parse_args([]).host == "127.0.0.1"
    old_umask = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        runtime = Runtime(tmp_path, token=None, log=False).start()
    finally:
        os.umask(old_umask)
    try:
        port = int(runtime.url.rsplit(":", 1)[1])
        assert runtime.url == f"http://127.0.0.1:{port}"
        assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0 or ::
        token_file = Path(runtime.ready["token_file"])
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        token = token_file.read_text()
        assert len(token) >= 32
        with runtime.client() as http:
            assert http.post("/v1/jobs", json={"prompt": "x"}).status_code == 401
            assert http.post("/v1/jobs", json={"prompt": "x"}, headers=AUTH).status_code == 401  # not a default
            job = http.post("/v1/jobs", json={"prompt": "x", "steps": 1},
                            headers={"Authorization": f"Bearer {token}"}).json()["id"]
            assert wait_job(http, {"Authorization": f"Bearer {token}"}, job)["status"] == "done"
    finally:
        assert runtime.stop() == 0
    assert not token_file.exists() and not token_file.parent.exists()


def test_token_files_are_0600_whatever_the_umask(tmp_path):
    old_umask = os.umask(0)
    try:
        server_module.write_token_file(tmp_path / "token", "t" * 40)
        launcher = RuntimeLauncher(tmp_path / "state")
        launcher._write_private(launcher.token_file, "secret")
        launcher._write_private(launcher.state_file, "{}")
    finally:
        os.umask(old_umask)
    for path in (tmp_path / "token", launcher.token_file, launcher.state_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def endpoints(spec: dict) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def test_every_endpoint_but_health_needs_the_token(make_api):
    client, _, _ = make_api()
    spec = client.get("/openapi.json").json()
    job = client.post("/v1/jobs", json={"prompt": "x", "steps": 1}, headers=AUTH).json()["id"]
    listed = endpoints(spec)
    assert len(listed) == 5
    for method, path in listed:
        url = path.replace("{job_id}", job)
        body = {"json": {"prompt": "x", "steps": 1}} if method == "POST" else {}
        without = client.request(method, url, **body)
        wrong = client.request(method, url, headers={"Authorization": f"Bearer {TOKEN[:-1]}X"}, **body)
        right = client.request(method, url, headers=AUTH, **body)
        if path == "/v1/health":
            assert without.status_code == wrong.status_code == right.status_code == 200
        else:
            assert without.status_code == wrong.status_code == 401, (method, path)
            assert "token" in without.json()["error"] and right.status_code != 401, (method, path)
            assert "security" in spec["paths"][path][method.lower()], (method, path)  # documented as protected
    # Nothing is served that the spec does not list (every route is in the schema; no interactive docs offline).
    assert "include_in_schema" not in Path(server_module.__file__).read_text()
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/v1", "/v1/jobs/", "/metrics", "/v1/admin"):
        assert client.get(path, headers=AUTH).status_code in (404, 405), path


def test_token_is_compared_in_constant_time(make_api, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client, _, _ = make_api()
    assert client.get("/v1/jobs/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert set(calls) == {(b"wrong", TOKEN.encode())}  # the body guard and the endpoint's dependency
    calls.clear()
    assert client.get("/v1/jobs/x", headers=AUTH).status_code == 404
    assert set(calls) == {(TOKEN.encode(), TOKEN.encode())} and len(calls) == 2
    source = Path(server_module.__file__).read_text()
    assert not re.search(r"(==|!=)\s*(expected|token)\b|\b(expected|token)\s*(==|!=)", source)


# ---- paths -------------------------------------------------------------------------------------------------------
HOSTILE_IDS = ["..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2E%2E", "..", "%2Fetc%2Fpasswd", "..%5C..%5Cwindows",
               "imagen-..%2F..%2Fx", "x%00.png", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a" * 5000]


def test_job_ids_never_reach_files(make_api):
    """Ids only look jobs up in memory: hostile ids are unknown jobs (404), never a file read."""
    client, _, out = make_api()
    job = client.post("/v1/jobs", json={"prompt": "../../etc/passwd", "steps": 1}, headers=AUTH).json()["id"]
    state = wait_job(client, AUTH, job)
    assert RESULT_NAME.match(state["result"]["file"]) and state["result"]["file"] == f"imagen-{job}.png"
    assert sorted(p.name for p in out.iterdir()) == [f"imagen-{job}.json", f"imagen-{job}.png"]
    for job_id in HOSTILE_IDS:
        for method, suffix in (("GET", ""), ("GET", "/image"), ("POST", "/cancel")):
            response = client.request(method, f"/v1/jobs/{job_id}{suffix}", headers=AUTH)
            assert response.status_code in (404, 405), (job_id, suffix, response.status_code)
            assert b"root:" not in response.content


def test_raw_dot_segments_in_the_url_never_reach_files(tmp_path):
    """Literal `../` in the request line (no client-side normalising): the server answers 404, reading nothing."""
    with Runtime(tmp_path, log=False) as runtime:
        port = int(runtime.url.rsplit(":", 1)[1])
        for target in ("/v1/jobs/../../../../etc/passwd", "/v1/jobs/..%2f..%2f..%2fetc%2fpasswd/image",
                       "/v1/../../../etc/passwd", "//etc/passwd", "/v1/jobs/x/image/../../../../etc/passwd"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                             "Connection: close\r\n\r\n".encode())
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            status = int(reply.split(b" ", 2)[1])
            assert status in (404, 405) and b"root:" not in reply, (target, reply[:200])
        with runtime.client() as http:
            assert http.get("/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize("prompt, seed", [
    ("../../../etc/cron.d/x", 1), ("a/b\\c", 2), ("", None),
    ("x", "../../../../tmp/evil"), ("x", "/etc/passwd"), ("x", "..\\..\\evil"), ("x", "1/../../2"),
])
def test_addon_output_file_names_stay_in_the_output_folder(tmp_path, prompt, seed):
    """The add-on names saved images from the prompt and the seed the runtime reports; neither may steer the path
    (a remote runtime is another machine: its answers are data, not paths)."""
    record = logic.history_record({"prompt": prompt, "seed": 1}, {"seed": seed})
    name = logic.output_filename(record["prompt"], record["seed"])
    assert os.path.basename(name) == name and ".." not in name and "\\" not in name and not name.startswith(".")
    assert Path(os.path.join(tmp_path, name)).resolve().parent == tmp_path.resolve()


# ---- no code from data ----------------------------------------------------------------------------------------------
def _unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        dotted = ast.unparse(func)
        keywords = {k.arg: k.value for k in node.keywords}

        def kw_is(key, value):
            return key in keywords and isinstance(keywords[key], ast.Constant) and keywords[key].value is value

        if name in ("eval", "exec", "__import__"):
            found.append(f"{name}()")
        elif re.fullmatch(r"(c?pickle|dill|marshal|shelve|joblib)\.\w+", dotted) or dotted.endswith("Unpickler"):
            found.append(dotted)
        elif dotted == "torch.load" and not kw_is("weights_only", True):
            found.append("torch.load without weights_only=True")
        elif dotted.endswith(("np.load", "numpy.load")) and "allow_pickle" in keywords:
            found.append("np.load(allow_pickle=...)")
        elif dotted in ("yaml.load", "os.system", "os.popen") or kw_is("shell", True):
            found.append(dotted)
        elif kw_is("trust_remote_code", True) or kw_is("weights_only", False):
            found.append(f"{dotted}(... unsafe flag)")
    return found


def test_the_scanner_catches_what_it_looks_for():
    bad = ("eval('1')\nexec('x')\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\nsubprocess.run(c, shell=True)\nAutoModel.from_pretrained(p, "
           "trust_remote_code=True)\nos.system('x')\n")
    assert len(_unsafe_calls(ast.parse(bad))) == 9
    good = "model.eval()\ntorch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\nre.compile('x')\n"
    assert _unsafe_calls(ast.parse(good)) == []


def test_no_pickle_eval_or_exec_in_the_package():
    files = sorted(PACKAGE.rglob("*.py")) + [REPO / "__init__.py"]
    assert len(files) > 40
    problems = {str(path.relative_to(REPO)): found for path in files
                if (found := _unsafe_calls(ast.parse(path.read_text(encoding="utf-8"))))}
    assert problems == {}
    assert not [p for p in PACKAGE.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]


# ---- network only where Blender allows it ------------------------------------------------------------------------
@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8765", True), ("localhost:8765", True), ("http://[::1]:8765", True),
    ("http://127.0.0.2:8765", True), ("http://LOCALHOST:1", True),
    ("http://127.0.0.1.nip.io:8765", False), ("http://127.example.org:8765", False),
    ("http://localhost.example.org", False), ("http://0.0.0.0:8765", False), ("http://10.0.0.5:8765", False),
    ("https://gpu.example.org", False), ("http://evil.example#@127.0.0.1", False), ("not a url at all", False),
])
def test_network_is_used_only_for_loopback_unless_online_access(url, loopback):
    """With Blender's online access off only the local machine may be contacted; a host name that merely starts
    like a loopback address (127.x.example, localhost.example) is a DNS name and goes anywhere."""
    assert logic.is_loopback_url(url) is loopback
    assert (logic.check_url_allowed(url, online_access=False) is None) is loopback
    assert logic.check_url_allowed(url, online_access=True) is None
    if loopback:
        assert is_loopback(url)
