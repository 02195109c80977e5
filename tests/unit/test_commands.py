"""StationCommands: every MQTT command gets exactly one answer, also when it is malformed, unknown or too many."""

from __future__ import annotations

import threading
from typing import Any

from lineinspect.line.commands import StationCommands, required
from tests.helpers.waiting import wait_for


def commands_with(answers: list[dict[str, Any]], **handlers: Any) -> StationCommands:
    commands = StationCommands(answers.append, max_waiting=2)
    for name, handler in handlers.items():
        commands.on(name, handler)
    return commands


def test_a_command_runs_off_the_mqtt_thread_and_is_answered_with_its_request_id() -> None:
    answers: list[dict[str, Any]] = []
    ran_on: list[str] = []

    def recipe(body: dict[str, Any]) -> tuple[bool, str]:
        ran_on.append(threading.current_thread().name)
        return True, f"camera {required(body, 'camera')} → {required(body, 'recipe')}"

    commands = commands_with(answers, recipe=recipe)
    commands.start()
    try:
        commands.submit("a/b/lineinspect/s/command/recipe", b'{"request_id": "r1", "camera": "top", "recipe": "x"}')
        wait_for(lambda: len(answers) == 1, 5, "the answer")
    finally:
        commands.stop()
    assert ran_on == ["commands"]
    assert answers[0] | {"at": None} == {
        "request_id": "r1",
        "command": "recipe",
        "ok": True,
        "message": "camera top → x",
        "at": None,
    }


def test_malformed_unknown_incomplete_and_excess_commands_are_each_answered_with_what_is_wrong() -> None:
    answers: list[dict[str, Any]] = []
    release, running = threading.Event(), threading.Event()

    def slow(body: dict[str, Any]) -> tuple[bool, str]:
        running.set()
        release.wait(5)
        return True, "done"

    def recipe(body: dict[str, Any]) -> tuple[bool, str]:
        return True, required(body, "recipe")

    commands = commands_with(answers, slow=slow, recipe=recipe)
    commands.start()
    try:
        commands.submit("p/command/recipe", b"not json")
        commands.submit("p/command/recipe", b"[1, 2]")
        commands.submit("p/command/fly", b'{"request_id": "r2"}')
        commands.submit("p/command/recipe", b'{"request_id": "r3", "camera": "top"}')
        wait_for(lambda: len(answers) == 4, 5, "four answers")
        commands.submit("p/command/slow", b'{"request_id": "s0"}')
        wait_for(running.is_set, 5, "the first slow command running")
        for n in (1, 2, 3):  # two wait, the third finds the queue full
            commands.submit("p/command/slow", f'{{"request_id": "s{n}"}}'.encode())
        wait_for(lambda: any(a["request_id"] == "s3" for a in answers), 5, "the busy answer")
        commands.submit("p/command/response", b'{"request_id": "echo"}')  # our own answers are not commands
        release.set()
        wait_for(lambda: len(answers) == 8, 5, "every answer")
    finally:
        release.set()
        commands.stop()
    by_id = {a["request_id"]: a for a in answers if a["request_id"]}
    malformed = [a for a in answers if a["request_id"] is None]
    assert [a["ok"] for a in malformed] == [False, False]
    assert all("is not a JSON object" in a["message"] for a in malformed)
    assert by_id["r2"]["message"] == "unknown command 'fly'; this station knows ['recipe', 'slow']"
    assert not by_id["r3"]["ok"] and "field 'recipe' missing or not a text" in by_id["r3"]["message"]
    assert not by_id["s3"]["ok"] and by_id["s3"]["message"].startswith("busy: 2 commands waiting")
    assert [by_id[f"s{n}"]["ok"] for n in range(3)] == [True, True, True]
    assert "echo" not in by_id
