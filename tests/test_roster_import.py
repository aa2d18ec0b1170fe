"""The roster import against a real, migrated database: counts, idempotence, edits, deactivation,
every kind of bad row reported at once with nothing written, CSV folders, structural errors."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from sqlmodel import select

from storage.db import session_scope
from storage.example_roster import HEADERS, example_rows, write_example_workbook
from storage.models import Cadre, Household, ServiceObject, Unit
from bot.imports.roster import (
    ImportReport,
    RosterDeactivationRefused,
    RosterError,
    RosterIssue,
    import_roster,
    read_roster,
    validate,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "roster.xlsx"


@pytest.fixture
def engine(db):
    """conftest's migrated database (SQLite file, or PostgreSQL with TEST_DATABASE_URL), emptied."""
    return db


@pytest.fixture
def rows() -> dict[str, list[list[str]]]:
    return copy.deepcopy(example_rows())


def write_book(path: Path, sheets: dict[str, list[list[str]]], headers: dict[str, list[str]] = HEADERS) -> Path:
    """A plain workbook with the given rows under the given headers; row i of a list is sheet row i + 2."""
    workbook = Workbook()
    workbook.remove(workbook.active)
    for name, body in sheets.items():
        worksheet = workbook.create_sheet(name)
        worksheet.append(headers[name])
        for values in body:
            worksheet.append(values)
    workbook.save(path)
    return path


def write_csv_folder(folder: Path, sheets: dict[str, list[list[str]]], encodings: dict[str, str]) -> Path:
    folder.mkdir()
    for name, body in sheets.items():
        with open(folder / f"{name}.csv", "w", encoding=encodings[name], newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADERS[name])
            writer.writerows(body)
    return folder


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every roster row, ids included, so 'nothing written' and 'updated in place' can be checked."""
    with session_scope(engine) as session:
        return {
            model.__name__: sorted(tuple(sorted(r.model_dump().items())) for r in session.exec(select(model)).all())
            for model in (Unit, Cadre, Household, ServiceObject)
        }


def counts(report: ImportReport) -> dict[str, tuple[int, int, int, int]]:
    return {sheet: (c.created, c.updated, c.unchanged, c.deactivated) for sheet, c in report.by_sheet.items()}


def located(error: RosterError) -> set[tuple[str, int | None, str | None]]:
    return {(i.sheet, i.row, i.column) for i in error.issues}


def test_shipped_example_is_what_the_generator_writes(tmp_path):
    fresh = write_example_workbook(tmp_path / "roster.xlsx")
    assert read_roster(fresh).issues == []
    shipped, regenerated = read_roster(EXAMPLE), read_roster(fresh)
    for kind in ("units", "cadres", "households", "objects", "windows"):
        assert getattr(shipped, kind) == getattr(regenerated, kind)


def test_example_imports_with_counts_and_warning(engine):
    report = import_roster(engine, EXAMPLE)

    assert counts(report) == {"单位": (3, 0, 0, 0), "干部": (6, 0, 0, 0), "联户": (20, 0, 0, 0),
                              "服务对象": (41, 0, 0, 0), "窗口": (2, 0, 0, 0)}
    assert report.warnings == ["干部 赵敏（13800000006）服务对象 8 名，少于 10 名"]
    assert "服务对象：新增 41" in report.summary() and "赵敏" in report.summary()
    with session_scope(engine) as session:
        cadres = {c.mobile: c for c in session.exec(select(Cadre)).all()}
        units = {u.id: u for u in session.exec(select(Unit)).all()}
        assert cadres["13800000001"].role == "admin"
        assert cadres["13800000002"].role == "supervisor"
        assert units[cadres["13800000002"].unit_id].name == "市作风办"
        assert {cadres[f"1380000000{i}"].role for i in range(3, 7)} == {"cadre"}
        assert {u.name: u.kind for u in units.values()}["城关街道"] == "镇街区"
        households = session.exec(select(Household)).all()
        assert {h.area_kind for h in households} == {"村", "居"}
        assert all(h.area_name for h in households)
        objects = session.exec(select(ServiceObject)).all()
        by_id = {c.id: c for c in cadres.values()}
        # An object belongs to its cadre's unit: that is the unit "listed twice in one unit" is about.
        assert all(o.unit_id == by_id[o.cadre_id].unit_id for o in objects)
        assert any("-" in o.phone for o in objects)  # landlines are accepted for objects


def test_reimport_changes_nothing(engine):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)

    report = import_roster(engine, EXAMPLE)

    assert counts(report) == {"单位": (0, 0, 3, 0), "干部": (0, 0, 6, 0), "联户": (0, 0, 20, 0),
                              "服务对象": (0, 0, 41, 0), "窗口": (0, 0, 2, 0)}
    assert not report.changed
    assert snapshot(engine) == before


def test_edited_copy_updates_in_place(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    with session_scope(engine) as session:
        ids = {(h.address, h.name): h.id for h in session.exec(select(Household)).all()}
    rows["联户"][0][2] = "13912345678"  # phone changed
    rows["联户"][1][5] = "13800000005"  # moved from 王立新 to 刘海涛
    rows["干部"][2][4] = "城建科副科长"

    report = import_roster(engine, write_book(tmp_path / "edited.xlsx", rows))

    assert counts(report)["联户"] == (0, 2, 18, 0)
    assert counts(report)["干部"] == (0, 1, 5, 0)
    with session_scope(engine) as session:
        households = {(h.address, h.name): h for h in session.exec(select(Household)).all()}
        liu = session.exec(select(Cadre).where(Cadre.mobile == "13800000005")).one()
    first, second = (households[(r[0], r[1])] for r in rows["联户"][:2])
    assert first.phone == "13912345678" and first.id == ids[(first.address, first.name)]
    assert second.cadre_id == liu.id and second.id == ids[(second.address, second.name)]


def test_removed_row_is_deactivated_and_reactivated_when_back(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    gone_household = rows["联户"].pop(3)
    gone_object = rows["服务对象"].pop(0)

    report = import_roster(engine, write_book(tmp_path / "fewer.xlsx", rows))

    assert counts(report)["联户"] == (0, 0, 19, 1)
    assert counts(report)["服务对象"] == (0, 0, 40, 1)
    with session_scope(engine) as session:
        household = session.exec(select(Household).where(Household.address == gone_household[0],
                                                         Household.name == gone_household[1])).one()
        obj = session.exec(select(ServiceObject).where(ServiceObject.name == gone_object[0])).one()
        assert not household.active and not obj.active  # kept, since visits may point at them

    report = import_roster(engine, EXAMPLE)
    assert counts(report)["联户"] == (0, 1, 19, 0)
    assert counts(report)["服务对象"] == (0, 1, 40, 0)
    with session_scope(engine) as session:
        assert session.get(Household, household.id).active


def test_removed_cadre_is_deactivated_with_their_rows(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    mobile = "13800000006"
    rows["干部"] = [r for r in rows["干部"] if r[2] != mobile]
    rows["联户"] = [r for r in rows["联户"] if r[5] != mobile]
    rows["服务对象"] = [r for r in rows["服务对象"] if r[3] != mobile]
    rows["窗口"][1][2] = "13800000005"  # 赵敏 no longer on duty at the window

    report = import_roster(engine, write_book(tmp_path / "fewer.xlsx", rows))

    assert counts(report)["干部"] == (0, 0, 5, 1)
    assert counts(report)["联户"] == (0, 0, 15, 5)
    assert counts(report)["服务对象"] == (0, 0, 33, 8)
    assert counts(report)["窗口"] == (0, 1, 1, 0)  # the window's staff changed
    assert report.warnings == []


def test_every_bad_row_is_reported_and_nothing_is_written(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)
    households, objects = rows["联户"], rows["服务对象"]
    wang_household = households[0]  # 王立新's (13800000003)
    households[1][5] = "13800009999"  # row 3: unknown cadre
    households[2][2] = "1380000"  # row 4: malformed phone
    households[3][3] = "镇"  # row 5: bad 村/居
    households.append(list(households[4]))  # row 22: duplicate of row 6
    objects[0][0] = ""  # row 2: missing field
    objects[1] = [wang_household[1], "某公司", wang_household[2], "13800000003", ""]  # row 3: own household
    # row 4: 陈静 is in 王立新's unit (市住建局) and lists his object of row 5 again
    objects[2] = [objects[3][0], objects[3][1], objects[3][2], "13800000004", ""]
    bad = write_book(tmp_path / "bad.xlsx", rows)

    with pytest.raises(RosterError) as caught:
        import_roster(engine, bad)

    assert located(caught.value) == {
        ("联户", 3, "干部手机号"),
        ("联户", 4, "联系电话"),
        ("联户", 5, "村/居"),
        ("联户", 22, "住址"),
        ("服务对象", 2, "姓名"),
        ("服务对象", 3, "姓名"),
        ("服务对象", 5, "姓名"),  # the second listing is the duplicate, whichever cadre has it
    }
    text = str(caught.value).splitlines()
    assert text[0] == "名册有 7 处错误，未导入任何数据："
    assert text[1:] == [str(i) for i in caught.value.issues]
    assert [(i.sheet, i.row) for i in caught.value.issues] == sorted(
        [(i.sheet, i.row) for i in caught.value.issues], key=lambda k: (["联户", "服务对象"].index(k[0]), k[1]))
    assert "联户 第4行 联系电话：号码格式不正确（“1380000”）" in text
    reasons = {(i.sheet, i.row): i.reason for i in caught.value.issues}
    assert "13800009999" in reasons[("联户", 3)]
    assert "与第6行重复" in reasons[("联户", 22)]
    assert "必填" in reasons[("服务对象", 2)]
    assert "联户" in reasons[("服务对象", 3)] and "第2行" in reasons[("服务对象", 3)]
    assert "市住建局" in reasons[("服务对象", 5)] and "第4行" in reasons[("服务对象", 5)]
    assert snapshot(engine) == before


def test_bad_rows_on_an_empty_database_write_nothing(engine, rows, tmp_path):
    rows["联户"][0][2] = "12345"
    with pytest.raises(RosterError):
        import_roster(engine, write_book(tmp_path / "bad.xlsx", rows))
    assert snapshot(engine) == {"Unit": [], "Cadre": [], "Household": [], "ServiceObject": []}


def test_unit_and_cadre_errors(engine, rows, tmp_path):
    rows["单位"].append(["市住建局", "市直部门"])  # row 5: duplicate unit
    rows["单位"].append(["市水利局", "部委"])  # row 6: bad kind
    rows["干部"][0][5] = "很长" * 200  # row 2: over-long 职责 (at most 300)
    rows["干部"][2][1] = "市交通局"  # row 4: unknown unit
    rows["干部"][4][3] = "局长"  # row 6: bad role
    rows["干部"].append(["重复者", "市住建局", "138 0000 0003", "", "", ""])  # row 8: same mobile as row 4
    rows["干部"].append(["新人", "市住建局", "1380000000", "", "", ""])  # row 9: 10 digits

    with pytest.raises(RosterError) as caught:
        import_roster(engine, write_book(tmp_path / "bad.xlsx", rows))

    assert located(caught.value) == {
        ("单位", 5, "单位名称"), ("单位", 6, "类型"), ("干部", 2, "职责"), ("干部", 4, "单位"),
        ("干部", 6, "角色"), ("干部", 8, "手机号"), ("干部", 9, "手机号"),
    }
    assert [str(i) for i in caught.value.issues] == [
        "单位 第5行 单位名称：与第2行重复（“市住建局”）",
        "单位 第6行 类型：只能填 市直部门 或 镇街区（“部委”）",
        "干部 第2行 职责：内容过长：400 字，最多 300 字",
        "干部 第4行 单位：单位“市交通局”不在“单位”表中，系统里也没有",
        "干部 第6行 角色：只能填 干部、主管、作风办 或 管理员（“局长”）",
        "干部 第8行 手机号：与第4行重复（13800000003）",
        "干部 第9行 手机号：不是有效的手机号（“1380000000”）",
    ]
    assert snapshot(engine)["Cadre"] == []


def test_roles_and_area_kinds_accept_their_aliases(engine, rows, tmp_path):
    rows["干部"][0][3] = "admin"
    rows["干部"][1][3] = "主管"  # 作风办 has its own role since issue #11 (tests/test_haochaping.py)
    rows["干部"][2][3] = ""  # blank is a plain cadre
    rows["联户"][0][3] = "社区"
    rows["联户"][1][3] = "行政村"
    import_roster(engine, write_book(tmp_path / "aliases.xlsx", rows))
    with session_scope(engine) as session:
        roles = {c.mobile: c.role for c in session.exec(select(Cadre)).all()}
        kinds = {h.address: h.area_kind for h in session.exec(select(Household)).all()}
    assert roles["13800000001"] == "admin" and roles["13800000002"] == "supervisor"
    assert roles["13800000003"] == "cadre"
    assert kinds[rows["联户"][0][0]] == "居" and kinds[rows["联户"][1][0]] == "村"


def test_csv_folders_import_the_same_as_the_workbook(engine, rows, tmp_path):
    utf8 = write_csv_folder(tmp_path / "utf8", rows, dict.fromkeys(HEADERS, "utf-8-sig"))
    gbk = write_csv_folder(tmp_path / "gbk", rows, dict.fromkeys(HEADERS, "gbk"))
    mixed = write_csv_folder(tmp_path / "mixed", rows,
                             {"单位": "utf-8", "干部": "gbk", "联户": "utf-8-sig", "服务对象": "gb18030", "窗口": "gbk"})
    assert (gbk / "联户.csv").read_bytes()[:3] != b"\xef\xbb\xbf"

    report = import_roster(engine, utf8)
    assert counts(report) == {"单位": (3, 0, 0, 0), "干部": (6, 0, 0, 0), "联户": (20, 0, 0, 0),
                              "服务对象": (41, 0, 0, 0), "窗口": (2, 0, 0, 0)}
    assert report.warnings == ["干部 赵敏（13800000006）服务对象 8 名，少于 10 名"]
    before = snapshot(engine)
    for source in (EXAMPLE, gbk, mixed):
        assert not import_roster(engine, source).changed, source
    assert snapshot(engine) == before


def test_missing_sheet_and_missing_column_are_reported(engine, rows, tmp_path):
    path = write_example_workbook(tmp_path / "broken.xlsx")
    workbook = load_workbook(path)
    del workbook["服务对象"]
    workbook["联户"].delete_cols(3)  # 联系电话
    workbook.save(path)

    with pytest.raises(RosterError) as caught:
        import_roster(engine, path)

    # Without the phone column the 联户 rows are not checked one by one: the header is the problem.
    assert located(caught.value) == {("联户", 1, "联系电话"), ("服务对象", None, None)}
    assert "联户 第1行 联系电话：缺少必填列“联系电话”" in str(caught.value)
    assert "服务对象：缺少工作表“服务对象”" in str(caught.value)
    assert snapshot(engine)["Unit"] == []

    folder = write_csv_folder(tmp_path / "csv", {k: v for k, v in rows.items() if k != "单位"},
                              dict.fromkeys(HEADERS, "utf-8"))
    with pytest.raises(RosterError) as caught:
        import_roster(engine, folder)
    assert located(caught.value) == {("单位", None, None)}
    assert "单位.csv" in str(caught.value)


def test_headers_are_matched_by_name_order_and_width_free(engine, rows, tmp_path):
    headers = dict(HEADERS)
    headers["联户"] = [" 干部手机号 ", "村（社区）名称", "村/居", "联系电话", "姓名", "住址*"]
    headers["服务对象"] = ["姓名", "工作单位（住址）", "联系电话", "干部手机号"]  # no 备注: optional
    rows["联户"] = [list(reversed(r[:6])) for r in rows["联户"]]  # and no 经度, 纬度, 坐标系: optional
    rows["服务对象"] = [r[:4] for r in rows["服务对象"]]
    rows["联户"].insert(3, [""] * 6)  # a blank row is skipped, later rows keep their numbers
    report = import_roster(engine, write_book(tmp_path / "shuffled.xlsx", rows, headers))
    assert counts(report)["联户"] == (20, 0, 0, 0)
    # The same rows again with 备注 and the coordinates present: they fill in, nothing else moves.
    report = import_roster(engine, EXAMPLE)
    assert counts(report)["联户"] == (0, 16, 4, 0)  # four of the twenty have no coordinates
    assert counts(report)["服务对象"][0] == 0 and counts(report)["服务对象"][3] == 0


def test_rows_may_refer_to_a_cadre_already_in_the_database(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    # A later file that lists 王立新's households but not 王立新 himself nor his unit.
    rows["单位"] = [u for u in rows["单位"] if u[0] != "市住建局"]
    rows["干部"] = [c for c in rows["干部"] if c[1] != "市住建局"]
    rows["服务对象"] = [o for o in rows["服务对象"] if o[3] != "13800000004"]
    rows["联户"] = [h for h in rows["联户"] if h[5] != "13800000004"]
    rows["窗口"] = [w for w in rows["窗口"] if w[1] != "市住建局"]

    report = import_roster(engine, write_book(tmp_path / "partial.xlsx", rows))

    # 王立新 and his unit stay active because rows still point at them; 陈静 goes.
    assert counts(report)["干部"] == (0, 0, 4, 1)
    assert counts(report)["单位"] == (0, 0, 2, 0)
    with session_scope(engine) as session:
        active = {c.mobile for c in session.exec(select(Cadre).where(Cadre.active == True)).all()}  # noqa: E712
    assert "13800000003" in active and "13800000004" not in active


def test_validate_reports_without_writing(engine, rows, tmp_path):
    rows["服务对象"][0][2] = "abc"
    data = read_roster(write_book(tmp_path / "bad.xlsx", rows))
    with session_scope(engine) as session:
        errors, warnings = validate(data, session, minimum=12)
    assert errors == [RosterIssue("服务对象", 2, "联系电话", "号码格式不正确（“abc”）")]
    assert len(warnings) == 3  # 11, 10 and 8 objects are fewer than 12; 12 is enough
    assert snapshot(engine)["Unit"] == []


def test_progress_bar_goes_to_stderr(engine, capsys):
    import_roster(engine, EXAMPLE, progress=True)
    captured = capsys.readouterr()
    assert "校验名册" in captured.err and "写入数据库" in captured.err
    assert captured.out == ""
    import_roster(engine, EXAMPLE, progress=False)
    assert capsys.readouterr().err == ""


def test_unreadable_files_are_reported(tmp_path):
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "fake.xlsx").write_text("not a zip")
    for name in ("old.xls", "fake.xlsx", "absent.xlsx"):
        data = read_roster(tmp_path / name)
        assert len(data.issues) == 1 and data.issues[0].sheet == ""


def test_windows_with_their_cadres_on_duty(engine, rows, tmp_path):
    from storage.models import ServiceWindow, WindowDuty

    import_roster(engine, EXAMPLE)
    with session_scope(engine) as session:
        cadres = {c.id: c.mobile for c in session.exec(select(Cadre)).all()}
        windows = {w.name: w for w in session.exec(select(ServiceWindow)).all()}
        duty = {(d.window_id, cadres[d.cadre_id]) for d in session.exec(select(WindowDuty)).all()}
    assert set(windows) == {"不动产登记窗口", "便民服务中心综合窗口"}
    assert {m for w, m in duty if w == windows["不动产登记窗口"].id} == {"13800000003", "13800000004"}

    # Without the 窗口 sheet the windows stay as they are; an emptied sheet deactivates them.
    without = {k: v for k, v in rows.items() if k != "窗口"}
    assert counts(import_roster(engine, write_book(tmp_path / "no-windows.xlsx", without)))["窗口"] == (0, 0, 0, 0)
    rows["窗口"] = rows["窗口"][:1]
    assert counts(import_roster(engine, write_book(tmp_path / "one.xlsx", rows)))["窗口"] == (0, 0, 1, 1)

    rows["窗口"] = [["不动产登记窗口", "市住建局", "13800000003，13899999999"],
                   ["不动产登记窗口", "市住建局", ""],
                   ["", "市住建局", ""],
                   ["综合窗口", "不存在的局", "abc"]]
    with pytest.raises(RosterError) as caught:
        import_roster(engine, write_book(tmp_path / "bad-windows.xlsx", rows))
    assert located(caught.value) == {("窗口", 2, "在岗干部手机号"), ("窗口", 3, "窗口名称"), ("窗口", 4, "窗口名称"),
                                     ("窗口", 5, "单位"), ("窗口", 5, "在岗干部手机号")}


# -- a bad parent row is reported once; an import that would empty the roster stops -----------


def _cli(monkeypatch, database_url: str, *argv: str) -> int:
    from bot.cli import main as cli_main
    from bot.config import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOAD_EXAMPLE_ROSTER", "false")
    get_settings.cache_clear()
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


def test_rows_of_a_cadre_whose_mobile_is_wrong_are_reported_once_pointing_at_it(engine, rows, tmp_path):
    rows["干部"][2][2] = "1380000003"  # row 4, 王立新: a digit dropped; his rows still say 13800000003
    rows["联户"][2][5] = "15912345678"  # row 4: a number like no cadre's, an error of its own
    with pytest.raises(RosterError) as caught:
        import_roster(engine, write_book(tmp_path / "bad.xlsx", rows))

    assert [str(i) for i in caught.value.issues] == [
        "干部 第4行 手机号：不是有效的手机号（“1380000003”）",
        "联户 第2–3、5–6行 干部手机号：见 干部 第4行的错误（“13800000003”）",
        "联户 第4行 干部手机号：找不到手机号为 15912345678 的干部：“干部”表中没有，系统里也没有在册的",
        "服务对象 第2–12行 干部手机号：见 干部 第4行的错误（“13800000003”）",
        "窗口 第2行 在岗干部手机号：见 干部 第4行的错误（“13800000003”）",
    ]
    assert str(caught.value).splitlines()[0] == "名册有 5 处错误，未导入任何数据："
    assert snapshot(engine) == {"Unit": [], "Cadre": [], "Household": [], "ServiceObject": []}


def test_the_cli_prints_the_failure_header_once_and_no_follow_on_errors(engine, rows, tmp_path, monkeypatch,
                                                                      capsys, database_url):
    rows["干部"][3][2] = "1380000004x"  # row 5, 陈静
    bad = write_book(tmp_path / "bad.xlsx", rows)

    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(bad)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "导入失败，未写入任何数据。名册有 4 处错误："
    assert sum("未写入任何数据" in line or "未导入任何数据" in line for line in err) == 1
    assert err[1:] == ["干部 第5行 手机号：不是有效的手机号（“1380000004x”）",
                       "联户 第7–11行 干部手机号：见 干部 第5行的错误（“13800000004”）",
                       "服务对象 第13–24行 干部手机号：见 干部 第5行的错误（“13800000004”）",
                       "窗口 第2行 在岗干部手机号：见 干部 第5行的错误（“13800000004”）"]
    assert not any("找不到手机号" in line for line in err)


def test_a_workbook_of_headers_only_deactivates_nothing_without_the_operators_consent(engine, tmp_path):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)
    empty = write_book(tmp_path / "empty.xlsx", {sheet: [] for sheet in HEADERS})

    with pytest.raises(RosterDeactivationRefused) as caught:
        import_roster(engine, empty)

    assert caught.value.sheets == [("单位", 3, 3), ("干部", 6, 6), ("联户", 20, 20), ("服务对象", 41, 41),
                                   ("窗口", 2, 2)]
    assert "联户：将停用 20 条，占现有在册 20 条的 100%" in str(caught.value)
    assert snapshot(engine) == before


def test_deactivating_up_to_the_share_goes_through_and_beyond_it_stops(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)
    rows["联户"] = rows["联户"][:10]  # 10 of 20 households dropped: exactly half

    report = import_roster(engine, write_book(tmp_path / "half.xlsx", rows), max_deactivate_share=0.5)
    assert counts(report)["联户"] == (0, 0, 10, 10)

    rows["联户"] = rows["联户"][:4]  # 6 of the 10 still active: more than half
    with pytest.raises(RosterDeactivationRefused) as caught:
        import_roster(engine, write_book(tmp_path / "fewer.xlsx", rows), max_deactivate_share=0.5)
    assert caught.value.sheets == [("联户", 6, 10)]
    assert snapshot(engine) != before  # the first import did change things ...
    with session_scope(engine) as session:  # ... and the refused one nothing: 10 still active
        assert sum(h.active for h in session.exec(select(Household)).all()) == 10


def test_the_cli_stops_with_exit_2_and_deactivates_with_allow_deactivate(engine, tmp_path, monkeypatch, capsys,
                                                                        database_url):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)
    empty = write_book(tmp_path / "empty.xlsx", {sheet: [] for sheet in HEADERS})

    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(empty)) == 2
    err = capsys.readouterr().err
    assert "未写入任何数据" in err and "干部：将停用 6 条，占现有在册 6 条的 100%" in err
    assert "ROSTER_MAX_DEACTIVATE_SHARE" in err and "--allow-deactivate" in err
    assert snapshot(engine) == before

    monkeypatch.setenv("ROSTER_MAX_DEACTIVATE_SHARE", "1")  # the setting raises the share for everyone
    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(empty)) == 0
    assert "停用 20" in capsys.readouterr().out
    import_roster(engine, EXAMPLE)  # back

    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", "--allow-deactivate", str(empty)) == 0
    with session_scope(engine) as session:
        assert not any(c.active for c in session.exec(select(Cadre)).all())


def test_a_share_outside_0_to_1_is_an_operator_error(engine, tmp_path, monkeypatch, capsys, database_url):
    monkeypatch.setenv("ROSTER_MAX_DEACTIVATE_SHARE", "1.5")
    assert _cli(monkeypatch, database_url, "import-roster", "--quiet", str(EXAMPLE)) == 2
    assert "roster_max_deactivate_share" in capsys.readouterr().err.lower()


# ---------------------------------------------------------------------------------------------
# Coordinates: 经度, 纬度, 坐标系 (optional), stored in WGS-84


def _household(engine, row: list) -> Household:
    with session_scope(engine) as session:
        return session.exec(select(Household).where(Household.address == row[0], Household.name == row[1])).one()


def test_coordinates_are_stored_in_wgs84_whatever_the_datum(engine, rows, tmp_path):
    from bot.core.geo import BD09, GCJ02, Point, distance_m, to_wgs84

    gcj, wgs, bd, blank = rows["联户"][0], rows["联户"][1], rows["联户"][2], rows["联户"][4]
    wgs[6:9] = [121.4737, 31.2304, "WGS-84"]
    bd[6:9] = ["116.404", "39.915", "百度坐标"]
    import_roster(engine, write_book(tmp_path / "datums.xlsx", rows))
    stored = _household(engine, gcj)
    assert gcj[8] == "GCJ-02" and stored.coord_source == "surveyed"
    expected = to_wgs84(gcj[7], gcj[6], GCJ02)
    assert (stored.latitude, stored.longitude) == (pytest.approx(expected.latitude), pytest.approx(expected.longitude))
    assert distance_m(Point(stored.latitude, stored.longitude), Point(gcj[7], gcj[6])) > 300  # converted
    assert (_household(engine, wgs).latitude, _household(engine, wgs).longitude) == (31.2304, 121.4737)
    assert _household(engine, bd).latitude == pytest.approx(to_wgs84(39.915, 116.404, BD09).latitude)
    assert (_household(engine, blank).latitude, _household(engine, blank).coord_source) == (None, None)


def test_bad_coordinates_are_reported_in_place_and_nothing_is_written(engine, rows, tmp_path):
    import_roster(engine, EXAMPLE)
    before = snapshot(engine)
    households = rows["联户"]
    households[0][6] = "东经120度"  # row 2: not a number
    households[1][6] = ""  # row 3: a latitude without longitude
    households[2][6:9] = [2.3522, 48.8566, "WGS-84"]  # row 4: Paris
    households[3][6:9] = [30.2745, 120.162, "GCJ-02"]  # row 5: latitude and longitude swapped
    households[5][8] = "北京54"  # row 7: no such datum here
    households[6][8] = ""  # row 8: no datum, and no ROSTER_COORD_DATUM
    households[7][6] = "nan"  # row 9: a number, but not one
    with pytest.raises(RosterError) as caught:
        import_roster(engine, write_book(tmp_path / "bad.xlsx", rows))
    reasons = {(i.sheet, i.row, i.column): i.reason for i in caught.value.issues}
    assert set(reasons) == {("联户", 2, "经度"), ("联户", 3, "经度"), ("联户", 4, "经度"), ("联户", 5, "经度"),
                            ("联户", 7, "坐标系"), ("联户", 8, "坐标系"), ("联户", 9, "经度")}
    assert reasons[("联户", 2, "经度")] == "不是以度为单位的数字（“东经120度”），例如 121.4737"
    assert reasons[("联户", 3, "经度")].startswith("填写了纬度，也须填写经度")
    assert reasons[("联户", 4, "经度")] == "坐标不在中国境内（经度 2.3522，纬度 48.8566）"
    assert reasons[("联户", 5, "经度")].startswith("经度、纬度可能填反了")
    assert reasons[("联户", 7, "坐标系")] == "只能填 WGS-84、GCJ-02 或 BD-09（“北京54”）"
    assert "ROSTER_COORD_DATUM" in reasons[("联户", 8, "坐标系")]
    assert "联户 第4行 经度：坐标不在中国境内" in str(caught.value)
    assert snapshot(engine) == before


def test_the_datum_setting_serves_rows_that_leave_it_blank(engine, rows, tmp_path):
    from bot.config import Settings
    from bot.core.geo import GCJ02, to_wgs84

    for row in rows["联户"]:
        row[8] = ""
    book = write_book(tmp_path / "no-datum.xlsx", rows)
    with pytest.raises(RosterError) as caught:
        import_roster(engine, book)
    assert {(i.row, i.column) for i in caught.value.issues} == {(n, "坐标系") for n in (2, 3, 4, 5, 7, 8, 9, 10, 12,
                                                                                     13, 14, 15, 17, 18, 19, 20)}
    import_roster(engine, book, settings=Settings.model_construct(roster_coord_datum="gcj02"))
    first = rows["联户"][0]
    assert _household(engine, first).latitude == pytest.approx(to_wgs84(first[7], first[6], GCJ02).latitude)


def _far_flags(engine) -> dict[int, str]:
    from sqlmodel import select

    from storage.models import VisitFlag

    with session_scope(engine) as s:
        return {f.visit_id: f.reason for f in s.exec(select(VisitFlag).where(VisitFlag.kind == "far")).all()}


def test_learned_coordinates_give_way_to_surveyed_ones_and_never_the_reverse(engine, rows, tmp_path, settings):
    """A household without coordinates learns them from its first household-confirmed visit with a
    location; a roster with coordinates replaces learned ones (and the visits are checked again); a
    roster without them leaves learned ones alone; a confirmed visit never moves surveyed ones."""
    from datetime import datetime, timezone

    from bot.config import Settings
    from bot.core import evidence
    from bot.core.geo import GCJ02, Point, distance_m, to_gcj02
    from storage.models import Visit

    import_roster(engine, EXAMPLE)
    bare, surveyed = rows["联户"][4], rows["联户"][0]  # 王立新's fifth household has no coordinates
    home = _household(engine, bare)
    assert home.latitude is None
    doorstep, elsewhere = Point(30.2801, 120.1702), Point(30.2981, 120.1702)  # WGS-84, 2 km apart
    at = datetime(2026, 9, 1, 2, tzinfo=timezone.utc)
    with session_scope(engine) as s:
        visits = [Visit(cadre_id=home.cadre_id, household_id=home.id, half="2026H2", visited_at=at, card_left=True,
                        survey={}, leaflet_given=True, channel="test", latitude=p.latitude, longitude=p.longitude)
                  for p in (doorstep, elsewhere)]
        other = _household(engine, surveyed)
        visits.append(Visit(cadre_id=other.cadre_id, household_id=other.id, half="2026H2", visited_at=at,
                            card_left=True, survey={}, leaflet_given=True, channel="test",
                            latitude=elsewhere.latitude, longitude=elsewhere.longitude))
        s.add_all(visits)
        s.flush()
        ids = [v.id for v in visits]
    with session_scope(engine) as s:
        evidence.household_confirmed(s, s.get(Visit, ids[0]), settings, at)
        evidence.household_confirmed(s, s.get(Visit, ids[2]), settings, at)  # has surveyed coordinates
    learned = _household(engine, bare)
    assert (learned.latitude, learned.longitude, learned.coord_source) == (doorstep.latitude, doorstep.longitude,
                                                                           "learned")
    assert _household(engine, surveyed).coord_source == "surveyed"
    assert _household(engine, surveyed).latitude != elsewhere.latitude  # a visit never moves a surveyed home

    # The roster again, this household's cells still blank: the learned coordinates stay.
    report = import_roster(engine, write_book(tmp_path / "same.xlsx", rows))
    assert counts(report)["联户"] == (0, 0, 20, 0)
    assert _household(engine, bare).coord_source == "learned"

    # The second visit was judged 2 km from the learned doorstep: "far" with VISIT_FAR_KM=1.
    near_km = Settings.model_construct(visit_far_km=1)
    with session_scope(engine) as s:
        evidence.relocate(s, [home.id], near_km)
    assert _far_flags(engine) == {ids[1]: "走访位置距该户约 2.0 公里"}

    # Surveyed 40 m from the learned spot, typed from a Chinese map (GCJ-02): they replace the learned.
    lat, lng = to_gcj02(Point(elsewhere.latitude + 40 / 111_195, elsewhere.longitude))
    bare[6:9] = [lng, lat, "GCJ-02"]
    report = import_roster(engine, write_book(tmp_path / "surveyed.xlsx", rows), settings=near_km)
    # Judged again by the surveyed home: the second visit is near it now, the first 2 km away.
    assert _far_flags(engine) == {ids[0]: "走访位置距该户约 2.0 公里"}
    assert counts(report)["联户"] == (0, 1, 19, 0) and report.relocated == 2
    assert "重新核对 2 次走访" in report.summary()
    home = _household(engine, bare)
    assert home.coord_source == "surveyed"
    assert distance_m(Point(home.latitude, home.longitude), elsewhere) == pytest.approx(40, abs=1)
    with session_scope(engine) as s:
        first, second = s.get(Visit, ids[0]), s.get(Visit, ids[1])
        assert first.evidence == evidence.CONFIRMED  # the household's own scan stays the strongest
        assert second.distance_m == pytest.approx(40, abs=1) and second.evidence == evidence.LOCATION

    # Blank cells now take back the roster's own coordinates (no visit had taught them).
    bare[6:9] = ["", "", ""]
    import_roster(engine, write_book(tmp_path / "cleared.xlsx", rows))
    assert (_household(engine, bare).latitude, _household(engine, bare).coord_source) == (None, None)
