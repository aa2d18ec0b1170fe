"""Citizens' phone numbers at rest (issue #15, 数据加密): the database holds none in clear, and lookups,
forms, masking, the call-back list, key rotation, the migration of an existing database and a wrong
key all behave.

"The database holds none in clear" is checked on what is really stored: on SQLite the bytes of the
database file and its WAL (a fresh file, so no other test's rows are in it), on PostgreSQL every row
of every table cast to text.
"""

from __future__ import annotations

import enum
import io
import os
import re
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from bot import texts
from bot.cli import main as cli_main
from bot.config import Settings, get_settings
from bot.core import outbox
from bot.core.engine import Engine
from bot.core.types import Inbound
from bot.imports.hotline import import_hotline
from bot.imports.roster import import_roster
from bot.reports import forms
from storage import crypto, rekey
from storage.crypto import DataKeyError, Keyring
from storage.db import make_engine, migrate, session_scope, upgrade
from storage.example_roster import CADRES, write_example_workbook
from storage.models import (AuditLog, CallbackTask, Cadre, DialogueState, Household, OutboxAttachment, OutboxMessage,
                            Problem, ProcessedInbound, Rating, Role, ServiceObject, TargetKind)
from tests.utils import Chat, bind, make_roster, token_for

KEY_A = "a-test-data-key-of-forty-characters-0001"
KEY_B = "b-test-data-key-of-forty-characters-0002"
RATER = "13987654321"  # left for a call-back with a 差评
REPORTER = "0571-87654321"  # typed in /report
CALLER = "13611112222"  # a hotline caller
HOTLINE_COLUMNS = ("反映人姓名", "联系电话", "问题内容", "办理情况", "责任单位", "备注")


@pytest.fixture
def store(db, database_url, tmp_path):
    """A database of this test's own: a fresh SQLite file, or the (emptied) PostgreSQL test database."""
    if not database_url.startswith("sqlite"):
        yield db
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'at-rest.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def stored(engine) -> str:
    """Everything the database holds as stored: the SQLite file and its WAL, or PostgreSQL's rows."""
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database)
        wal = path.with_name(path.name + "-wal")
        raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        return raw.decode("latin-1")  # digits are single bytes in UTF-8; nothing else matters here
    with engine.connect() as conn:
        return "\n".join(value for table in SQLModel.metadata.sorted_tables
                         for value in conn.execute(text(f'SELECT CAST(t AS TEXT) FROM "{table.name}" AS t')).scalars())


def hotline_book(path: Path, unit: str, phone: str = CALLER) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "附件5"
    ws.append(list(HOTLINE_COLUMNS))
    ws.append(["孙七", phone, "楼道灯不亮", "办理中", unit, ""])
    wb.save(path)
    return path


def in_clear(engine, phones) -> list[str]:
    """The numbers among ``phones`` that appear in the stored bytes, in any of the forms a number is written."""
    raw = stored(engine)
    return [p for p in phones if p in raw or p.replace("-", "") in raw]


def _citizen_phones(engine) -> set[str]:
    with session_scope(engine) as s:
        phones = {h.phone for h in s.exec(select(Household))} | {o.phone for o in s.exec(select(ServiceObject))}
        phones |= {p.raiser_phone for p in s.exec(select(Problem)) if p.raiser_phone}
        phones |= {r.phone for r in s.exec(select(Rating)) if r.phone}
        phones |= {t.phone for t in s.exec(select(CallbackTask)) if t.phone}
    return phones


def test_the_database_holds_no_citizen_phone_in_clear(store, settings, clock, tmp_path):
    """A roster import (households, service objects), a 差评 with a call-back number, a /report with a
    number (stopped at its confirmation, then sent), a hotline import, the supervisor's call-back list:
    no citizen's number is stored in clear anywhere, and every view still shows what it showed."""
    core = Engine(store, settings, clock=clock)
    try:
        import_roster(store, write_example_workbook(tmp_path / "roster.xlsx"))
        with session_scope(store) as s:
            cadre = s.exec(select(Cadre).where(Cadre.role == Role.CADRE).order_by(Cadre.id)).first()
            head = s.exec(select(Cadre).where(Cadre.role.in_(Role.HEADS)).order_by(Cadre.id)).first()  # 作风办
            unit_name = forms.units_for(s, {cadre.unit_id})[0].name

        citizen = Chat(core, "citizen")
        citizen.say(f"/start {token_for(store, settings, TargetKind.CADRE, cadre.id)}")
        citizen.press("非常不满意")
        citizen.press("办事拖拉")
        citizen.press(texts.RATING_REASONS_DONE)
        citizen.say("等了两个小时")
        assert texts.RATING_FOLLOW_UP_CALL.format(days=settings.rating_follow_up_days) in citizen.say(RATER)

        reporter = Chat(core, "reporter")
        reporter.say("/report")
        reporter.press("城建")
        reporter.say("小区路灯坏了一个月")
        summary = reporter.say(REPORTER)
        assert "请确认" in summary and "057****4321" in summary  # the summary masks the number
        assert in_clear(store, [REPORTER]) == []  # held in the dialogue row meanwhile: sealed
        with session_scope(store) as s:
            assert s.get(DialogueState, ("test", "reporter")).data["phone"] == REPORTER  # read back in clear

        import_hotline(store, hotline_book(tmp_path / "hotline.xlsx", unit_name), now=clock())

        bind(store, head, "test", "head", clock())
        boss = Chat(core, "head")
        bad = boss.say("/ratings")
        assert "139****4321" in bad and RATER not in bad  # masked in the list
        callbacks = core.handle(Inbound(channel="test", user_id="head", command="callbacks", event_key="e-callbacks"))
        assert RATER in callbacks.replies[0].text  # in full where it must be called, and audited
        assert "已收到，编号 #" in reporter.press("确认")

        phones = _citizen_phones(store)
        assert {RATER, REPORTER, CALLER} <= phones and len(phones) > 50
        assert not phones & {c[2] for c in CADRES}  # the staff's own numbers (kept in clear) are others
        assert in_clear(store, phones) == []

        with session_scope(store) as s:
            reveals = s.exec(select(AuditLog).where(AuditLog.action == "phone.reveal")).all()
            assert reveals and all(a.actor == f"cadre:{head.id}" for a in reveals)
            kept = s.get(ProcessedInbound, ("test", "e-callbacks")).answer
        assert RATER in kept["replies"][0]["text"]  # the answer kept for a redelivery: sealed, read back whole
        again = core.handle(Inbound(channel="test", user_id="head", command="callbacks", event_key="e-callbacks"))
        assert again.duplicate and RATER in again.resend[0].text
        with store.connect() as conn:
            raw = conn.execute(text("SELECT CAST(answer AS TEXT) FROM processed_inbound WHERE event_key = 'e-callbacks'"))
            assert '"$sealed"' in raw.scalar_one()

        with session_scope(store) as s:  # the forms that show numbers show them decrypted
            units = forms.units_for(s, None)
            [form5] = forms.export(s, [5], "2026H2", units, settings)
            [form3] = forms.export(s, [3], "2026H2", units, settings)
            an_object = s.exec(select(ServiceObject).order_by(ServiceObject.id)).first().phone
        assert CALLER in _cells(form5.content) and an_object in _cells(form3.content)

        # The same form sent by chat (WeCom sends files from the outbox): body, API calls and file sealed.
        with session_scope(store) as s:
            outbox.enqueue(s, key="reply:form5", kind="reply", channel="wecom", recipient="head", now=clock(),
                           body=f"附件5 已生成；回访电话 {CALLER}", settings=settings,
                           payload={"wecom": [{"path": "/cgi-bin/message/send", "body": {"text": {"content": CALLER}}}]},
                           attachments=[outbox.Attachment("附件5.xlsx", forms.XLSX, form5.content)])
        with session_scope(store) as s:
            message = s.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == "reply:form5")).one()
            [attachment] = s.exec(select(OutboxAttachment).where(OutboxAttachment.message_id == message.id)).all()
            assert CALLER in message.body and message.payload["wecom"][0]["body"]["text"]["content"] == CALLER
            assert attachment.content == form5.content  # read back whole
            assert attachment.content_type == forms.XLSX  # 65 characters: once too long for PostgreSQL
        with store.connect() as conn:
            raw_file = conn.execute(text("SELECT content FROM outbox_attachment")).scalar_one()
        assert bytes(raw_file).startswith(f"v1:{crypto.keyring().current.kid}:".encode())
        assert in_clear(store, phones) == []
    finally:
        core.close()


def _cells(content: bytes) -> set[str]:
    wb = openpyxl.load_workbook(io.BytesIO(content))
    return {str(cell) for ws in wb for row in ws.iter_rows(values_only=True) for cell in row if cell is not None}


def test_every_hash_is_the_keyed_hash_of_its_number_and_objects_stay_unique(db):
    roster = make_roster(db)
    with session_scope(db) as s:
        s.add(Rating(code_id=_code(s, roster), target_kind="cadre", cadre_id=roster.cadre.id, unit_id=roster.unit.id,
                     level=1, phone=RATER, channel="web", rater_key="r", rated_at=_now(), rated_on="2026-11-20"))
    keys = crypto.keyring()
    with session_scope(db) as s:
        for model, column in ((Household, "phone"), (ServiceObject, "phone"), (Rating, "phone")):
            for row in s.exec(select(model)):
                assert getattr(row, f"{column}_hash") == keys.hash(getattr(row, column)) is not None
        obj = s.exec(select(ServiceObject)).first()
        obj.phone = "13700009999"  # an edit re-hashes
    with session_scope(db) as s:
        obj = s.get(ServiceObject, obj.id)
        assert obj.phone_hash == keys.hash("13700009999")
        # Found by its number through the hash; the column itself cannot be compared.
        found = s.exec(select(ServiceObject).where(ServiceObject.phone_hash.in_(keys.hashes("13700009999")))).one()
        assert found.id == obj.id
        with pytest.raises(TypeError, match="hash"):
            select(ServiceObject).where(ServiceObject.phone == "13700009999")
    with pytest.raises(IntegrityError):  # the same name and number twice in a unit
        with session_scope(db) as s:
            s.add(ServiceObject(name=obj.name, workplace="别处", phone="13700009999", cadre_id=roster.cadre.id,
                                unit_id=roster.unit.id))


def _now():
    from datetime import datetime, timezone

    return datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def _code(s, roster) -> int:
    from bot.core import evaluation

    return evaluation.code_for(s, TargetKind.CADRE, roster.cadre.id, _now()).id


# ---------------------------------------------------------------------------------------------
# The keys


def test_a_token_names_its_key_and_a_wrong_key_is_an_error_not_garbage():
    a, b = Keyring(KEY_A), Keyring(KEY_B)
    token = a.encrypt(RATER)
    assert token.startswith(f"v1:{a.current.kid}:") and RATER not in token and a.encrypt(RATER) != token
    assert a.decrypt(token) == RATER
    with pytest.raises(DataKeyError, match=f"编号 {a.current.kid}.*DATA_KEY"):
        b.decrypt(token)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(DataKeyError, match="校验"):
        a.decrypt(forged)
    assert Keyring(KEY_B, [KEY_A]).decrypt(token) == RATER  # during a rotation both open
    assert a.hash(RATER) != b.hash(RATER) and Keyring(KEY_B, [KEY_A]).hashes(RATER) == (b.hash(RATER), a.hash(RATER))
    assert a.decrypt("13900000000") == "13900000000"  # a clear value from before the migration reads as it is


def test_sm4_seals_under_its_own_key_id_and_both_ciphers_open_each_other():
    if not crypto.sm4_available():
        pytest.skip("this OpenSSL has no SM4")
    sm4 = Keyring(KEY_A, cipher="sm4-gcm")
    aes = Keyring(KEY_A)
    token = sm4.encrypt(RATER)
    assert sm4.current.kid != aes.current.kid and sm4.decrypt(token) == aes.decrypt(token) == RATER
    assert sm4.hash(RATER) == aes.hash(RATER)  # the hash depends on the key, not the cipher


def test_sealed_text_and_json_only_when_a_phone_is_in_them():
    keys = Keyring(KEY_A)
    crypto.configure(keys)
    assert crypto.carries_phone({"replies": [{"text": f"回访电话 {RATER}"}]})
    assert crypto.carries_phone("电话：0535-6543210") and crypto.carries_phone("13912345678。")
    assert not crypto.carries_phone({"household": 13912345678, "text": "139****5678，编号 20261120139123456789"})
    sealed = crypto.SealedJSON().process_bind_param({"phone": RATER}, None)
    assert list(sealed) == ["$sealed"] and crypto.SealedJSON().process_result_value(sealed, None) == {"phone": RATER}
    assert crypto.SealedJSON().process_bind_param({"step": "x"}, None) == {"step": "x"}
    assert crypto.SealedText().process_bind_param("你好", None) == "你好"


def _carries_phone_as_written_first(value) -> bool:
    """carries_phone as it was first written: every string searched by the plain pattern, walked in Python."""
    import re

    pattern = re.compile(r"(?<![0-9])(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})(?![0-9])")
    if isinstance(value, str):
        return pattern.search(value) is not None
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return False
    return any(pattern.search(item) is not None if isinstance(item, str)
               else isinstance(item, (dict, list, tuple)) and _carries_phone_as_written_first(item) for item in value)


class _Tagged(str):
    def __reduce__(self):  # a pickle that does not show the text
        return (_Tagged, ("",))


class _Kind(enum.StrEnum):
    PHONE = "13912345678"


def test_the_fast_phone_check_answers_as_the_plain_walk_does():
    """carries_phone screens a value by its pickle for seven digits in a row and only then walks it: the
    same answer as walking every value, whatever surrounds the number (Chinese, control characters,
    quotes, surrogates, a pickle's own bytes), in keys, numbers, sets, str subclasses and enums."""
    import random

    rng = random.Random(15)
    numbers = ["13912345678", "0535-6543210", "053565432101", "1391234567", "139123456789", "0535-654321",
               "2026112013912345678", "12345678", "1234567", "010-1234567"]
    around = ["", "电话", "x", "1", "0", "-", "\n", "\x00", "\x10", "\x7f", "\u3000", "\ud83d", "\"", "\\", "１", "é",
              "\U0001f4de", "5\u4e2d", "'", "K", "q"]

    def text() -> str:
        return rng.choice(around) + rng.choice(numbers) + rng.choice(around) if rng.random() < 0.5 else \
            rng.choice(around) + "住户" + rng.choice(around)

    def value(depth: int = 0):
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice([text(), text(), 13912345678, 5356543210.5, True, None, b"13912345678",
                               _Tagged("13912345678"), _Kind.PHONE, "x" * rng.randint(40, 300) + rng.choice(numbers)])
        if roll < 0.55:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        if roll < 0.7:
            return tuple(value(depth + 1) for _ in range(rng.randint(0, 3)))
        if roll < 0.75:
            return {rng.choice(numbers), "x"}
        return {rng.choice([text(), "k", 7]): value(depth + 1) for _ in range(rng.randint(0, 4))}

    checked = {True: 0, False: 0}
    for _ in range(3000):
        item = value()
        expected = _carries_phone_as_written_first(item)
        assert crypto.carries_phone(item) == expected, repr(item)
        checked[expected] += 1
    assert min(checked.values()) > 500
    # The pattern written with each branch's first digit before its look-behind finds what the plain one does.
    plain = re.compile(r"(?<![0-9])(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})(?![0-9])")
    for _ in range(3000):
        sample = "".join(rng.choice(["1", "0", "3", "9", "-", "5", "中", " "]) for _ in range(rng.randint(0, 30)))
        found, expected = crypto._PHONE_IN_TEXT.search(sample), plain.search(sample)
        assert (found and found.span()) == (expected and expected.span()), sample


def _configure(monkeypatch, settings, key: str | None, old: str | None = None, cipher: str | None = None) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    for name, value in (("DATA_KEY", key), ("DATA_KEY_OLD", old), ("DATA_CIPHER", cipher)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def _kids(db) -> set[str]:
    kids = set()
    with db.connect() as conn:
        for spec in crypto.PHONE_COLUMNS:
            kids |= {crypto.token_key_id(v) for v in conn.execute(
                text(f"SELECT {spec.column} FROM {spec.table} WHERE {spec.column} <> ''")).scalars() if v}
    return kids


def test_rotate_key_round_trip_a_crash_half_way_and_a_wrong_key(db, settings, clock, monkeypatch, capsys,
                                                                tmp_path):
    crypto.configure(Keyring(KEY_A))
    roster = make_roster(db, households=12)
    core = Engine(db, settings, clock=clock)
    try:
        citizen = Chat(core, "citizen")
        citizen.say(f"/start {token_for(db, settings, TargetKind.CADRE, roster.cadre.id)}")
        citizen.press("非常不满意")
        citizen.press("办事拖拉")
        citizen.press(texts.RATING_REASONS_DONE)
        citizen.say("等了两个小时")
        citizen.say(RATER)
    finally:
        core.close()
    import_hotline(db, hotline_book(tmp_path / "h.xlsx", roster.unit.name), now=clock())
    with session_scope(db) as s:  # a queued reply with a file
        outbox.enqueue(s, key="reply:1", kind="reply", channel="wecom", recipient="head", now=clock(),
                       body=f"回访电话 {RATER}", settings=settings, payload={"text": RATER},
                       attachments=[outbox.Attachment("a.csv", "text/csv", f"号码,{RATER}".encode())])
    before = _citizen_phones(db)
    assert _kids(db) == {Keyring(KEY_A).current.kid}

    # The new key alone cannot read the old rows: every command stops at start and names the key.
    _configure(monkeypatch, settings, KEY_B)
    assert cli_main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert f"编号 {Keyring(KEY_A).current.kid}" in err and "DATA_KEY_OLD" in err and "rotate-key" in err

    # A rotation that dies after its first batch: what was done is committed, everything still reads.
    both = Keyring(KEY_B, [KEY_A])
    crypto.configure(both)

    class Killed(Exception):
        pass

    def die():
        raise Killed

    with db.connect() as conn:
        with pytest.raises(Killed):
            rekey.reencrypt(conn, both, batch=5, after_batch=lambda: (conn.commit(), die()))
    assert _kids(db) == {Keyring(KEY_A).current.kid, Keyring(KEY_B).current.kid}
    assert _citizen_phones(db) == before

    # Run again with the old key given: finishes; a third run finds nothing to do.
    _configure(monkeypatch, settings, KEY_B, old=KEY_A)
    assert cli_main(["rotate-key", "--quiet", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "已用新密钥重新加密" in out and "删去 DATA_KEY_OLD" in out
    assert _kids(db) == {Keyring(KEY_B).current.kid}
    with db.connect() as conn:
        raw = conn.execute(text("SELECT o.body, CAST(o.payload AS TEXT), a.content FROM outbox o "
                                "JOIN outbox_attachment a ON a.message_id = o.id")).one()
    prefix = f"v1:{Keyring(KEY_B).current.kid}:"
    assert raw[0].startswith(prefix) and f'"{prefix}' in raw[1] and bytes(raw[2]).startswith(prefix.encode())
    assert cli_main(["rotate-key", "--quiet"]) == 0
    assert "无需轮换" in capsys.readouterr().out

    # The new key alone now reads everything, lookups by hash included; the old key alone is refused.
    _configure(monkeypatch, settings, KEY_B)
    assert cli_main(["migrate"]) == 0
    capsys.readouterr()
    crypto.configure(Keyring(KEY_B))
    assert _citizen_phones(db) == before
    with session_scope(db) as s:
        assert s.exec(select(OutboxAttachment)).one().content == f"号码,{RATER}".encode()
        assert s.exec(select(OutboxMessage)).one().payload == {"text": RATER}
    with session_scope(db) as s:
        assert s.exec(select(Household).where(Household.phone_hash.in_(crypto.keyring().hashes("13900000003")))).one()
    assert import_hotline(db, hotline_book(tmp_path / "h.xlsx", roster.unit.name), now=clock()).created == 0
    _configure(monkeypatch, settings, KEY_A)
    assert cli_main(["migrate"]) == 2
    assert f"编号 {Keyring(KEY_B).current.kid}" in capsys.readouterr().err
    get_settings.cache_clear()


def test_changing_only_the_cipher_is_a_rotation_too(db, settings, monkeypatch, capsys):
    if not crypto.sm4_available():
        pytest.skip("this OpenSSL has no SM4")
    crypto.configure(Keyring(KEY_A))
    make_roster(db)
    _configure(monkeypatch, settings, KEY_A, cipher="sm4-gcm")
    assert cli_main(["rotate-key", "--quiet"]) == 0
    assert _kids(db) == {Keyring(KEY_A, cipher="sm4-gcm").current.kid}
    assert len(_citizen_phones(db)) == 13
    get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------
# Production refuses to run without a key of its own


def test_production_refuses_no_key_or_the_development_key(settings, monkeypatch, capsys):
    from bot.errors import SettingsError

    good = dict(environment="production", evaluation_secret="k" * 32)
    with pytest.raises(SettingsError, match="DATA_KEY 缺失.*token_urlsafe"):
        Settings(**good).check()
    with pytest.raises(SettingsError, match="DATA_KEY 是公开的开发密钥"):
        Settings(**good, data_key=crypto.DEVELOPMENT_DATA_KEY).check()
    with pytest.raises(SettingsError, match="DATA_KEY 仍是占位值或太短"):
        Settings(**good, data_key="short").check()
    with pytest.raises(SettingsError, match="DATA_KEY_OLD"):
        Settings(**good, data_key=KEY_A, data_key_old="short").check()
    assert Settings(**good, data_key=KEY_A).check().data_keyring.current.kid == Keyring(KEY_A).current.kid
    assert Settings(environment="development").check().data_keyring.development  # trying it out: allowed

    _configure(monkeypatch, settings, None)
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("EVALUATION_SECRET", "k" * 32)
    assert cli_main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("配置错误：DATA_KEY 缺失") and "secrets.token_urlsafe(32)" in err
    get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------
# The migration moves an existing database's numbers


def _migration_engine(database_url: str, tmp_path: Path):
    """An empty database of its own: a SQLite file, or a schema of its own on PostgreSQL."""
    if database_url.startswith("sqlite"):
        return make_engine(f"sqlite:///{tmp_path / 'old.db'}"), None
    schema = f"mig0018_{os.getpid()}"
    admin = make_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    separator = "&" if "?" in database_url else "?"
    return make_engine(f"{database_url}{separator}options=-csearch_path%3D{schema}"), schema


def test_the_migration_encrypts_an_existing_database_and_downgrade_decrypts(database_url, tmp_path, settings, clock):
    engine, schema = _migration_engine(database_url, tmp_path)
    crypto.configure(Keyring(KEY_A))
    try:
        migrate(engine, "0009")
        with engine.begin() as conn:  # the rows an older version wrote, numbers in clear
            run = lambda sql, **kw: conn.execute(text(sql), kw)  # noqa: E731
            run("INSERT INTO unit (id, name, active) VALUES (1, '市住建局', true)")
            run("INSERT INTO cadre (id, name, unit_id, mobile, role, active, digests_muted) "
                "VALUES (1, '李明', 1, '13800000003', 'cadre', true, false)")
            for i in range(3):
                run("INSERT INTO household (address, name, phone, area_kind, cadre_id, active) "
                    "VALUES (:a, :n, :p, '居', 1, true)", a=f"幸福路{i}号", n=f"住户{i}", p=f"1390000100{i}")
            run("INSERT INTO serviceobject (name, workplace, phone, cadre_id, unit_id, active) "
                "VALUES ('对象', '某企业', '0571-86660001', 1, 1, true)")
            run("INSERT INTO problem (id, source, status, category, content, raiser_phone, created_at, updated_at, "
                "reopened, to_office) VALUES (1, 'rating', 'new', '干部作风', '差评', :p, :t, :t, 0, false)",
                p=RATER, t=clock())
            run("INSERT INTO evaluation_code (id, target_kind, cadre_id, version, issued_at) "
                "VALUES (1, 'cadre', 1, 1, :t)", t=clock())
            run("INSERT INTO rating (id, code_id, target_kind, cadre_id, unit_id, level, reasons, phone, channel, "
                "rater_key, rated_at, rated_on, misuse, problem_id, voided) VALUES (1, 1, 'cadre', 1, 1, 1, '[]', :p, "
                "'web', 'r', :t, '2026-11-20', false, 1, false)", p=RATER, t=clock())
            run("INSERT INTO callback_task (rating_id, problem_id, unit_id, phone, status, due_on, created_at) "
                "VALUES (1, 1, 1, :p, 'open', '2026-11-27', :t)", p=RATER, t=clock())
            run("INSERT INTO dialogue_state (channel, external_user_id, flow, step, data, version, updated_at) "
                "VALUES ('test', 'r', 'report', 'confirm', :d, 3, :t)", d=f'{{"phone": "{REPORTER}"}}', t=clock())
            run("INSERT INTO processed_inbound (channel, event_key, created_at, answer) VALUES ('test', 'e1', :t, :a)",
                t=clock(), a=f'{{"replies": [{{"text": "回访电话 {RATER}"}}]}}')
            run("INSERT INTO processed_inbound (channel, event_key, created_at, answer) VALUES ('test', 'e2', :t, :a)",
                t=clock(), a='{"replies": [{"text": "你好"}]}')
            run("INSERT INTO outbox (id, idempotency_key, kind, channel, recipient, body, payload, state, attempts, "
                "next_attempt_at, created_at, interrupted) VALUES (1, 'k1', 'reply', 'wecom', 'head', :b, :p, 'pending', "
                "0, :t, :t, 0)", b=f"回访电话 {RATER}", p=f'{{"wecom": [{{"text": "{RATER}"}}]}}', t=clock())
            run("INSERT INTO outbox_attachment (message_id, filename, content_type, content) "
                "VALUES (1, 'a.txt', 'text/plain', :c)", c=f"住户 {REPORTER}".encode())
        old = ["13900001000", "13900001001", "13900001002", "0571-86660001", RATER, REPORTER]
        assert in_clear(engine, old) == old

        upgrade(engine)  # what every command does at start
        assert in_clear(engine, old) == []
        with session_scope(engine) as s:
            assert sorted(h.phone for h in s.exec(select(Household))) == old[:3]
            obj = s.exec(select(ServiceObject)).one()
            assert (obj.phone, obj.phone_hash) == ("0571-86660001", crypto.keyring().hash("0571-86660001"))
            assert s.get(CallbackTask, 1).phone == s.get(Problem, 1).raiser_phone == s.get(Rating, 1).phone == RATER
            assert s.get(Rating, 1).phone_hash == crypto.keyring().hash(RATER)
            assert s.get(DialogueState, ("test", "r")).data == {"phone": REPORTER}
            assert s.get(ProcessedInbound, ("test", "e1")).answer["replies"][0]["text"] == f"回访电话 {RATER}"
            assert s.get(ProcessedInbound, ("test", "e2")).answer == {"replies": [{"text": "你好"}]}
            message = s.get(OutboxMessage, 1)
            assert (message.body, message.payload) == (f"回访电话 {RATER}", {"wecom": [{"text": RATER}]})
            assert s.exec(select(OutboxAttachment)).one().content == f"住户 {REPORTER}".encode()
            s.add(ServiceObject(name="对象2", workplace="x", phone="13700000001", cadre_id=1, unit_id=1))
        with pytest.raises(IntegrityError):  # uniqueness moved to the hash
            with session_scope(engine) as s:
                s.add(ServiceObject(name="对象", workplace="y", phone="0571-86660001", cadre_id=1, unit_id=1))

        migrate(engine, "0009", down=True)
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT phone FROM household")).scalars()) == old[:3]
            assert conn.execute(text("SELECT phone FROM callback_task")).scalar_one() == RATER
            assert REPORTER in conn.execute(text("SELECT CAST(data AS TEXT) FROM dialogue_state")).scalar_one()
            assert bytes(conn.execute(text("SELECT content FROM outbox_attachment")).scalar_one()) == \
                f"住户 {REPORTER}".encode()
    finally:
        engine.dispose()
        if schema:
            admin = make_engine(database_url)
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            admin.dispose()


def test_a_backup_restored_under_another_key_says_which_key_it_needs(db, settings, database_url, monkeypatch,
                                                                     capsys, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL round trip is tests/test_backup.py's; the key check is the same")
    crypto.configure(Keyring(KEY_A))
    make_roster(db)
    _configure(monkeypatch, settings, KEY_A)
    assert cli_main(["backup", str(tmp_path / "backup.db")]) == 0
    capsys.readouterr()
    _configure(monkeypatch, settings, KEY_B)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'restored.db'}")
    assert cli_main(["restore", str(tmp_path / "backup.db")]) == 0  # restored all the same
    err = capsys.readouterr().err
    assert err.startswith("提醒：") and f"编号 {Keyring(KEY_A).current.kid}" in err and "DATA_KEY_OLD" in err
    _configure(monkeypatch, settings, KEY_A)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'restored.db'}")
    assert cli_main(["migrate"]) == 0  # with the key it was made under, it opens
    get_settings.cache_clear()
