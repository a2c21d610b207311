"""Shared state and helpers of the in-Blender checks (bpy_extension_checks.py, bpy_scene_checks.py)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "runtime"))

import bpy  # noqa: E402
from fake_imagen_runtime import FakeRuntime  # noqa: E402

PKG = "bl_ext.user_default.imagen"
OPERATORS = ("generate", "generate_from_view", "cancel", "describe_scene", "history_reuse", "set_world",
             "apply_material", "project_from_camera", "upscale", "pbr_maps", "runtime_start", "runtime_stop",
             "runtime_check")
PANELS = ("VIEW3D_PT_imagen", "VIEW3D_PT_imagen_settings", "VIEW3D_PT_imagen_use", "VIEW3D_PT_imagen_history")
FAKE = FakeRuntime(token="bpy-test-token", steps=2, native_size=32)
REAL = bool(os.environ.get("IMAGEN_TEST_RUNTIME_URL"))  # a real runtime (the bundled model) instead of the fake
NATIVE = int(os.environ.get("IMAGEN_TEST_NATIVE_SIZE", "32"))  # the runtime's native (square) image size
CHECKS: dict = {}  # name -> check function; bpy_extension_checks.ORDER says in which order they run


class Skip(Exception):
    """Raised by a check that cannot run here; reported as skipped with the reason."""


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def mod(name: str):
    return sys.modules[f"{PKG}.imagen_addon.blender.{name}"]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


def settings():
    return bpy.context.scene.imagen


def use_runtime(url: str | None = None, token: str | None = None) -> None:
    p = prefs()
    p.runtime_mode = "REMOTE"
    p.url = url or os.environ.get("IMAGEN_TEST_RUNTIME_URL") or FAKE.url
    p.token = token if token is not None else os.environ.get("IMAGEN_TEST_RUNTIME_TOKEN", FAKE.token)


def last_job_body() -> dict | None:
    """The last submitted job as the fake runtime received it (None against a real runtime)."""
    if REAL:
        return None
    return [body for method, path, body in FAKE.requests if path == "/v1/jobs"][-1]


def expect_error(op, text: str, **kwargs) -> str:
    try:
        op(**kwargs)
    except RuntimeError as err:
        assert text in str(err), f"expected {text!r} in {err}"
        return str(err)
    raise AssertionError(f"{op.idname_py()} did not report an error containing {text!r}")


def snapshot() -> dict:
    """What a refused operator must leave unchanged."""
    return {
        "images": sorted(i.name for i in bpy.data.images),
        "materials": sorted(m.name for m in bpy.data.materials),
        "uv": {o.name: [uv.name for uv in o.data.uv_layers] for o in bpy.data.objects if o.type == "MESH"},
        "slots": {o.name: [s.material.name if s.material else None for s in o.material_slots] for o in bpy.data.objects},
        "world": bpy.context.scene.world.name if bpy.context.scene.world else None,
        "world_nodes": sorted(n.name for n in bpy.context.scene.world.node_tree.nodes) if bpy.context.scene.world else [],
        "prompt": settings().prompt,
        "render": (bpy.context.scene.render.engine, bpy.context.scene.render.resolution_x,
                   bpy.context.scene.render.filepath),
    }


def select(*names: str) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj.name in names)
    if names:
        bpy.context.view_layer.objects.active = bpy.data.objects[names[0]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingLayout:
    """Stands in for UILayout when calling draw() in background mode (there is no UI to draw into).

    prop() checks the property exists; operator() checks the operator is registered and that the properties set
    on its result exist. Every call is recorded as (method, first argument) in `calls` (shared with sub-layouts).
    """

    def __init__(self, calls: list | None = None):
        self.calls = [] if calls is None else calls

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties.keys(), f"{type(data).__name__} has no property {name!r}"
        self.calls.append(("prop", name))

    def operator(self, idname, **kwargs):
        category, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, category), name).get_rna_type()  # KeyError when not registered
        self.calls.append(("operator", idname))
        return _OperatorProps(set(rna.properties.keys()))

    def template_ID(self, data, name, **kwargs):
        self.prop(data, name)

    def __getattr__(self, method):  # row(), column(), box(), label(), progress(), ...: sub-layouts
        def call(*args, **kwargs):
            self.calls.append((method, kwargs.get("text", args[0] if args else None)))
            return RecordingLayout(self.calls)

        return call

    def __setattr__(self, name, value):  # alert, enabled, scale_y, use_property_split, ...
        object.__setattr__(self, name, value)


class _OperatorProps:
    def __init__(self, names: set):
        object.__setattr__(self, "_names", names)

    def __setattr__(self, name, value):
        assert name in self._names, f"operator has no property {name!r}"
