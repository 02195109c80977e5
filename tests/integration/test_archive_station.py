"""A running station (folder camera, real Mosquitto) with its archive: rejects kept with their part id, and an
archive that cannot write costs the line nothing (every result still reaches the MES; an alarm says why)."""

from __future__ import annotations

from pathlib import Path

from lineinspect.line.archive.archive import NotKept
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.station_runtime import running_station, subscribed, write_line_station
from tests.helpers.waiting import wait_for

ARCHIVE = {"folder": "var/archive", "min_free_bytes": 0, "pass_first_count": 0, "pass_sample_every": 0}


def test_the_station_archives_its_rejects_and_the_mes_gets_their_reference(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="gb", archive=ARCHIVE)
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        wait_for(lambda: station.status().cameras[0].state.value == "connected", 5, "camera connected")
        station.trigger("cam1", part_id="A122")
        station.trigger("cam1", part_id="A123")
        sub.wait_until(lambda: len(sub.results()) >= 2, 10, "2 results")
        bodies = {b["part_id"]: b for b in (m.json() for m in sub.received("/result"))}
        assert station.archive is not None
        station.archive.flush()
        assert bodies["A122"]["verdict"] == "pass" and bodies["A122"]["image"]["ref"] is None
        ref = bodies["A123"]["image"]["ref"]
        assert bodies["A123"]["verdict"] == "fail" and ref.startswith(tuple("0123456789"))
        assert (tmp_path / "var" / "archive" / ref).is_file()
        found = station.archive.index.search(text="A123")
        assert [row.result_id for row in found] == [bodies["A123"]["result_id"]]
        assert station.status().to_payload()["archive"]["frames"] == 1


def test_an_unwritable_archive_is_an_alarm_and_every_result_still_reaches_the_mes(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    write_line_station(tmp_path, mosquitto.port, parts="b", archive=ARCHIVE)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "archive").write_text("a file where the archive folder should be")
    with subscribed(mosquitto.port) as sub, running_station(tmp_path) as station:
        wait_for(lambda: station.status().cameras[0].state.value == "connected", 5, "camera connected")
        for i in range(3):
            station.trigger("cam1", part_id=f"B{i}")
        sub.wait_until(lambda: len(sub.results()) >= 3, 10, "3 results")
        status = station.status().to_payload()
        bodies = [m.json() for m in sub.received("/result")]
    assert [b["verdict"] for b in bodies] == ["fail"] * 3 and all(b["image"]["ref"] is None for b in bodies)
    assert status["archive"]["state"] == "off" and "cannot be created" in status["archive"]["problem"]
    alarms = [(a["source"], a["kind"]) for a in status["alarms"]]
    assert ("archive", "unwritable") in alarms
    assert station.archive is not None
    try:
        station.archive.frame(bodies[0]["result_id"])
    except NotKept as exc:
        assert exc.code == "archive_off" and "Point archive.folder at a writable folder" in exc.message
    else:
        raise AssertionError("an off archive served a frame")
