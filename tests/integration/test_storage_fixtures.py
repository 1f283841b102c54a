"""Every schema version of every store, as that version wrote it (tests/fixtures/storage/), opens with today's
code: migrated in place, nothing lost, nothing distrusted."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.buffer import Buffer
from gateway.buffer.inspect import summarize
from gateway.buffer.store import SCHEMA_VERSION as BUFFER_VERSION
from gateway.commands.store import SCHEMA_VERSION as COMMANDS_VERSION
from gateway.commands.store import CommandStore
from gateway.core.backlog import NewRecord
from gateway.core.model import Lane
from gateway.storage.keys import Keyring, load_keyring
from gateway.storage.sqlite import schema_scripts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "storage"


def _copy(name: str, tmp_path: Path) -> tuple[Path, Keyring]:
    key = tmp_path / "fixtures.key"
    shutil.copy(FIXTURES / "fixtures.key", key)
    key.chmod(0o600)
    db = tmp_path / name
    shutil.copy(FIXTURES / name, db)
    return db, load_keyring(key)


def test_every_schema_version_has_a_fixture() -> None:
    buffer_versions = {version for version, _ in schema_scripts("gateway.buffer")}
    command_versions = {0} | {version for version, _ in schema_scripts("gateway.commands")}
    assert {f"buffer_v{v}.sqlite3" for v in buffer_versions} <= {p.name for p in FIXTURES.iterdir()}
    assert {f"commands_v{v}.sqlite3" for v in command_versions} <= {p.name for p in FIXTURES.iterdir()}


async def test_buffer_databases_of_every_version_open_and_drain(tmp_path: Path) -> None:
    for version in sorted({v for v, _ in schema_scripts("gateway.buffer")}):
        db, keyring = _copy(f"buffer_v{version}.sqlite3", tmp_path)
        buffer = await Buffer.open(db, keyring)
        try:
            rows = await buffer.read({}, 10)
            assert [r.payload for r in rows if r.lane is Lane.NUMERICS] == [b"payload 1", b"payload 2"]
            assert buffer.total_bytes > 0  # sizes known (back-filled from version 1)
            await buffer.append([NewRecord(Lane.NUMERICS, "ox-1", b"payload 3", 1)])
            await buffer.delete([r.seq for r in rows])
        finally:
            await buffer.close()
        assert summarize(db).schema_version == BUFFER_VERSION


def test_command_stores_of_every_version_open_with_their_state(tmp_path: Path) -> None:
    for version in (0, *sorted(v for v, _ in schema_scripts("gateway.commands"))):
        db, keyring = _copy(f"commands_v{version}.sqlite3", tmp_path)
        store = CommandStore(db, keyring)
        try:
            assert store.db.execute("PRAGMA user_version").fetchone()[0] == COMMANDS_VERSION
            assert store.verify_audit() == []
            assert store.state_problems() == []
            assert "c1" in store.state.seen
            command = store.get("c1")
            assert command is not None
            assert command.parameters == {"amount_mu": 500}
        finally:
            store.close()
