from datetime import UTC, datetime, timedelta
from pathlib import Path

from callflow.overrides import PersistentOverrides
from callflow.schedule import Override

NOW = datetime(2026, 12, 24, 17, 0, tzinfo=UTC)


def test_an_override_survives_a_restart_and_still_reverts(tmp_path: Path) -> None:
    path = tmp_path / "state" / "overrides.json"
    first = PersistentOverrides(path, NOW)
    until = NOW + timedelta(days=4)
    first.set("flow/office", Override(open=False, until=until, label="grippe", set_by="admin"))
    first.set("flow/short", Override(open=True, until=NOW + timedelta(hours=1)))
    again = PersistentOverrides(path, NOW + timedelta(hours=2))  # the daemon restarted
    kept = again.get("flow/office", NOW + timedelta(hours=2))
    assert kept == Override(open=False, until=until, label="grippe", set_by="admin")
    assert again.get("flow/short", NOW + timedelta(hours=2)) is None  # expired meanwhile
    again.clear("flow/office")
    assert PersistentOverrides(path, NOW).get("flow/office", NOW) is None


def test_a_damaged_file_restores_nothing_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "overrides.json"
    path.write_text("{not json")
    store = PersistentOverrides(path, NOW)
    assert store.active(NOW) == {}
    store.set("f/c", Override(open=True, until=NOW + timedelta(days=1)))
    assert PersistentOverrides(path, NOW).get("f/c", NOW) is not None
