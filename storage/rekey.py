"""Moving what is at rest between keys: ``python -m bot rotate-key``, the migration that first
encrypted the phone columns (0018), and the start-up check that the configured keys open them.

Works on the raw column values (tokens, ``{"$sealed": …}``), never through the ORM's types, so it
sees exactly what the database holds. Every row is handled on its own and idempotently: a phone
token already under the current key (with its hash) is skipped, anything else (a clear number left
by an older version, a token of an old key) is opened and written again under the current key with
a fresh hash. The write is conditional on the value read (a phone column) or on the row's version
(a dialogue row), so a row the bot changed meanwhile is left as the bot wrote it, which is under the
current key already. ``after_batch`` commits between batches for ``rotate-key``: a rotation killed
half way leaves every row readable with both keys configured, and running it again finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from sqlalchemy import (JSON, Integer, LargeBinary, String, Text, and_, column, func, not_, or_, select, table, tuple_,
                        update)
from sqlalchemy.engine import Connection

from storage.crypto import (PHONE_COLUMNS, SEAL, SEALED_COLUMNS, VERSION, DataKeyError, Keyring, PhoneColumn,
                            SealedColumn, carries_phone, token_key_id, unknown_key_message)

# The primary key of every table with sealed text (dialogue_state and processed_inbound have composite keys).
_KEYS = {"dialogue_state": ("channel", "external_user_id"), "processed_inbound": ("channel", "event_key")}
_VERSIONED = {"dialogue_state": "version"}  # rows guarded by their version when written back


@dataclass
class Rekeyed:
    """What a pass did, per ``table.column``: rows written again, rows found current."""

    written: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.written.values())


def _phone_table(spec: PhoneColumn):
    return table(spec.table, column("id", Integer), column(spec.column, String), column(spec.hash_column, String))


_TYPES = {"json": JSON, "text": Text, "bytes": LargeBinary}
_FILE_BATCH = 50  # attachments are files (a chart, a workbook): fewer of them at a time


def _sealed_table(spec: SealedColumn):
    keys = _KEYS.get(spec.table, ("id",))
    columns = [column(name, Integer if name == "id" else String) for name in keys] + [column(spec.column,
                                                                                          _TYPES[spec.kind])]
    if spec.table in _VERSIONED:
        columns.append(column(_VERSIONED[spec.table], Integer))
    return table(spec.table, *columns), keys


def _stale_phone(t, spec: PhoneColumn, keyring: Keyring):
    value = t.c[spec.column]
    return and_(value.is_not(None), value != "",
                or_(not_(value.startswith(keyring.prefix)), t.c[spec.hash_column].is_(None)))


def pending(conn: Connection, keyring: Keyring, phone_columns: Sequence[PhoneColumn] = PHONE_COLUMNS,
            sealed_columns: Sequence[SealedColumn] = SEALED_COLUMNS) -> dict[str, int]:
    """Rows not yet under the current key, per ``table.column``."""
    counts = {}
    for spec in phone_columns:
        t = _phone_table(spec)
        counts[f"{spec.table}.{spec.column}"] = conn.execute(
            select(func.count()).select_from(t).where(_stale_phone(t, spec, keyring))).scalar_one()
    for spec in sealed_columns:
        t, _keys = _sealed_table(spec)
        counts[f"{spec.table}.{spec.column}"] = conn.execute(
            select(func.count()).select_from(t).where(_sealed_filter(t, spec, keyring))).scalar_one()
    return counts


def _sealed_filter(t, spec: SealedColumn, keyring: Keyring | None = None):
    """Rows holding a sealed value; given a keyring, only those not sealed under its current key."""
    value = t.c[spec.column]
    if spec.kind == "json":
        found = value.cast(Text).like(f'%"{SEAL}"%')
        return and_(found, not_(value.cast(Text).like(f'%"{keyring.prefix}%'))) if keyring else found
    if spec.kind == "text":
        found = value.like(f"{VERSION}:%")
        return and_(found, not_(value.startswith(keyring.prefix))) if keyring else found
    found = func.substr(value, 1, len(VERSION) + 1) == f"{VERSION}:".encode()
    if keyring is None:
        return found
    return and_(found, func.substr(value, 1, len(keyring.prefix)) != keyring.prefix.encode())


def reencrypt(conn: Connection, keyring: Keyring, *, batch: int = 500,
              phone_columns: Sequence[PhoneColumn] = PHONE_COLUMNS,
              sealed_columns: Sequence[SealedColumn] = SEALED_COLUMNS, seal_clear: bool = False,
              progress: Callable[[str, int], None] | None = None,
              after_batch: Callable[[], None] | None = None) -> Rekeyed:
    """Writes every phone token and sealed value under the current key, in batches of ``batch`` rows.

    ``seal_clear``: also read every row of the sealed-text tables and seal the clear values that carry
    a phone number (the first migration; later every write seals on its own). ``progress(name, n)``
    is told after each batch; ``after_batch`` runs after each (``rotate-key`` commits there)."""
    done = Rekeyed()
    for spec in phone_columns:
        name = f"{spec.table}.{spec.column}"
        done.written[name] = 0
        t = _phone_table(spec)
        value, last = t.c[spec.column], 0
        while True:
            rows = conn.execute(select(t.c.id, value).where(t.c.id > last, _stale_phone(t, spec, keyring))
                                .order_by(t.c.id).limit(batch)).all()
            if not rows:
                break
            for row_id, raw in rows:
                plain = keyring.decrypt(raw)
                done.written[name] += conn.execute(
                    update(t).where(t.c.id == row_id, value == raw)
                    .values({spec.column: keyring.encrypt(plain), spec.hash_column: keyring.hash(plain)})).rowcount
            last = rows[-1][0]
            _after(progress, after_batch, name, len(rows))
    for spec in sealed_columns:
        name = f"{spec.table}.{spec.column}"
        done.written[name] = 0
        t, keys = _sealed_table(spec)
        key_columns = [t.c[k] for k in keys]
        version = t.c[_VERSIONED[spec.table]] if spec.table in _VERSIONED else None
        value, last = t.c[spec.column], None
        where = [] if seal_clear else [_sealed_filter(t, spec, keyring)]
        size = min(batch, _FILE_BATCH) if spec.kind == "bytes" else batch
        while True:
            after = [] if last is None else [tuple_(*key_columns) > tuple_(*last)]
            fetched = [*key_columns, value] + ([version] if version is not None else [])
            rows = conn.execute(select(*fetched).where(*where, *after).order_by(*key_columns).limit(size)).all()
            if not rows:
                break
            for row in rows:
                ident, raw = tuple(row[:len(keys)]), row[len(keys)]
                new = _resealed(keyring, spec, raw, seal_clear)
                if new is _SAME:
                    continue
                guard = [c == v for c, v in zip(key_columns, ident)]
                if version is not None:
                    guard.append(version == row[len(keys) + 1])
                done.written[name] += conn.execute(update(t).where(*guard).values({spec.column: new})).rowcount
            last = tuple(rows[-1][:len(keys)])
            _after(progress, after_batch, name, len(rows))
    return done


_SAME = object()


def _resealed(keyring: Keyring, spec: SealedColumn, raw, seal_clear: bool):
    """The value to write back, or ``_SAME``."""
    if spec.kind == "json":
        if type(raw) is dict and SEAL in raw and len(raw) == 1:
            return _SAME if keyring.is_current(raw[SEAL]) else keyring.seal_json(keyring.open_json(raw))
        return keyring.seal_json(raw) if seal_clear and raw is not None and carries_phone(raw) else _SAME
    if spec.kind == "bytes":  # files are always sealed
        raw = bytes(raw) if raw is not None else None
        if raw and raw.startswith(f"{VERSION}:".encode()):
            return _SAME if raw.startswith(keyring.prefix.encode()) else keyring.encrypt_bytes(keyring.decrypt_bytes(raw))
        return keyring.encrypt_bytes(raw) if seal_clear and raw else _SAME
    if token_key_id(raw) is not None:
        return _SAME if keyring.is_current(raw) else keyring.encrypt(keyring.decrypt(raw))
    return keyring.encrypt(raw) if seal_clear and raw and carries_phone(raw) else _SAME


def _after(progress, after_batch, name: str, n: int) -> None:
    if after_batch is not None:
        after_batch()
    if progress is not None:
        progress(name, n)


def decrypt_all(conn: Connection, keyring: Keyring, phone_columns: Sequence[PhoneColumn],
                sealed_columns: Sequence[SealedColumn]) -> None:
    """Every token and sealed value back to clear (the migration's downgrade)."""
    for spec in phone_columns:
        t = _phone_table(spec)
        value = t.c[spec.column]
        for row_id, raw in conn.execute(select(t.c.id, value).where(value.like(f"{VERSION}:%"))).all():
            conn.execute(update(t).where(t.c.id == row_id).values({spec.column: keyring.decrypt(raw)}))
    for spec in sealed_columns:
        t, keys = _sealed_table(spec)
        key_columns = [t.c[k] for k in keys]
        for row in conn.execute(select(*key_columns, t.c[spec.column]).where(_sealed_filter(t, spec))).all():
            raw = row[len(keys)]
            clear = (keyring.open_json(raw) if spec.kind == "json" else
                     keyring.decrypt_bytes(bytes(raw)) if spec.kind == "bytes" else keyring.decrypt(raw))
            conn.execute(update(t).where(*(c == v for c, v in zip(key_columns, row[:len(keys)])))
                         .values({spec.column: clear}))


def unknown_keys(conn: Connection, keyring: Keyring,
                 phone_columns: Sequence[PhoneColumn] = PHONE_COLUMNS) -> dict[str, set[str]]:
    """The key ids found in each phone column that no configured key opens (empty: all readable)."""
    found: dict[str, set[str]] = {}
    prefix_length = len(VERSION) + 1 + 8 + 1
    for spec in phone_columns:
        t = _phone_table(spec)
        value = t.c[spec.column]
        prefixes = conn.execute(select(func.substr(value, 1, prefix_length)).where(value.like(f"{VERSION}:%"))
                                .distinct()).scalars().all()
        unknown = {p.split(":")[1] for p in prefixes} - keyring.known_ids
        if unknown:
            found[f"{spec.table}.{spec.column}"] = unknown
    return found


def check_keys(conn: Connection, keyring: Keyring) -> None:
    """Raises ``DataKeyError`` naming the key ids the configured keys cannot open, if any."""
    unknown = unknown_keys(conn, keyring)
    if unknown:
        kids = sorted(set().union(*unknown.values()))
        raise DataKeyError(unknown_key_message("、".join(kids)) + f"（涉及：{'、'.join(sorted(unknown))}）")
