"""Preferences buttons: start, stop and check the runtime, with a status line. Network and process work runs on
a worker thread (jobs.run_task), so the UI never waits for a model to load."""

from __future__ import annotations

import bpy

from . import jobs, logic
from .preferences import get_prefs, runtime_config
from .worker import TaskRunner, connect, launcher_for


class RuntimeStatus:
    def __init__(self) -> None:
        self.text = "Runtime: not checked yet"
        self.error = False

    def set(self, text: str, error: bool = False) -> None:
        self.text, self.error = text, error


STATUS = RuntimeStatus()
RUNNER = TaskRunner()


def _on_error(err: BaseException) -> None:
    STATUS.set(str(err), error=True)


def _on_health(health: dict) -> None:
    STATUS.set(logic.health_text(health), error=health.get("status") != "ok")


def _busy(cls) -> bool:
    if RUNNER.busy:
        cls.poll_message_set("Busy: wait for the runtime to answer")
        return True
    return False


class IMAGEN_OT_runtime_start(bpy.types.Operator):
    bl_idname = "imagen.runtime_start"
    bl_label = "Start Runtime"
    bl_description = "Start the local runtime (or reuse one that is already running) and load the model"

    @classmethod
    def poll(cls, context):
        prefs = get_prefs(context)
        return prefs is not None and prefs.runtime_mode == "LOCAL" and not _busy(cls)

    def execute(self, context):
        config = runtime_config(context)
        STATUS.set("Starting the runtime (loading the model can take a minute)")
        jobs.run_task(RUNNER, lambda emit, cancel: connect(config, start=True).health(), _on_health, _on_error)
        if STATUS.error:
            self.report({"ERROR"}, STATUS.text)
            return {"CANCELLED"}
        return {"FINISHED"}


class IMAGEN_OT_runtime_stop(bpy.types.Operator):
    bl_idname = "imagen.runtime_stop"
    bl_label = "Stop Runtime"
    bl_description = "Stop the local runtime started by this add-on"

    @classmethod
    def poll(cls, context):
        prefs = get_prefs(context)
        return prefs is not None and prefs.runtime_mode == "LOCAL" and not _busy(cls)

    def execute(self, context):
        launcher = launcher_for(runtime_config(context))

        def stopped(was_running: bool) -> None:
            STATUS.set("Runtime stopped" if was_running else "Runtime was not running")

        jobs.run_task(RUNNER, lambda emit, cancel: launcher.stop(include_recorded=True), stopped, _on_error)
        return {"FINISHED"}


class IMAGEN_OT_runtime_check(bpy.types.Operator):
    bl_idname = "imagen.runtime_check"
    bl_label = "Check"
    bl_description = "Ask the runtime whether it is up and which model it serves"

    @classmethod
    def poll(cls, context):
        return not _busy(cls)

    def execute(self, context):
        config = runtime_config(context)
        STATUS.set("Checking the runtime")
        jobs.run_task(RUNNER, lambda emit, cancel: connect(config, start=False).health(), _on_health, _on_error)
        if STATUS.error:
            self.report({"WARNING"}, STATUS.text)
        return {"FINISHED"}


classes = (IMAGEN_OT_runtime_start, IMAGEN_OT_runtime_stop, IMAGEN_OT_runtime_check)


def shutdown() -> None:
    RUNNER.abandon()
