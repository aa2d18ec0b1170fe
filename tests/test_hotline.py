"""The hotline import (12345/89000 items in the 附件5 layout): good files, bad files, re-imports."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import openpyxl
import pytest
from sqlmodel import select

from bot.cli import main as cli_main
from bot.reports import forms
from storage.db import session_scope
from bot.imports.hotline import HotlineError, import_hotline
from storage.models import Problem, ProblemEvent, Unit
from tests.utils import make_roster

COLUMNS = ("反映人姓名", "联系电话", "问题内容", "办理情况", "责任单位", "备注")
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)


def write_book(path, rows, *, title: bool = True, sheet: str = "附件5", header=COLUMNS):
    """A workbook in the seed's layout: title, 单位(公章) line, header, rows, note (or just header and rows)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    if title:
        ws.append(["89000民生热线、网上民声交办问题统计表"])
        ws.append(["单位(公章)：89000民生服务中心"])
    ws.append(list(header))
    for row in rows:
        ws.append(list(row))
    if title:
        ws.append(["注:1.只填报交办给各镇街区、市直各部门的政务类事项"])
    wb.save(path)
    return path


GOOD = [
    ("张三", "13912345678", "小区门口路灯坏了三个月", "办理中", "市住建局", ""),
    ("", "0535-6543210", "咨询公租房申请条件", "已办结，已电话答复", "市住建局", "网上民声"),
    ("李四", "139 1234 5679", "噪音扰民", "", "第一镇", ""),
]


@pytest.fixture
def units(db):
    make_roster(db)
    with session_scope(db) as s:
        s.add(Unit(name="第一镇", kind="镇街区"))


def _problems(db):
    with session_scope(db) as s:
        return s.exec(select(Problem).order_by(Problem.id)).all()


def test_a_good_file_becomes_ledger_items_and_a_second_import_changes_nothing(db, units, tmp_path):
    path = write_book(tmp_path / "hotline.xlsx", GOOD)
    report = import_hotline(db, path, now=NOW)
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    first, second, third = _problems(db)
    assert (first.source, first.category, first.status) == ("hotline", "热线", "new")
    assert (first.raiser_name, first.raiser_phone, first.hotline_status) == ("张三", "13912345678", "办理中")
    assert (second.raiser_name, second.status, second.result) == (None, "closed", "已办结，已电话答复")
    assert second.note == "网上民声" and second.closed_at is not None
    assert third.raiser_phone == "13912345679"
    with session_scope(db) as s:
        assert {u.name for u in s.exec(select(Unit)).all() if u.id == third.responsible_unit_id} == {"第一镇"}
        events = s.exec(select(ProblemEvent).order_by(ProblemEvent.id)).all()
        assert [(e.action, e.to_status) for e in events] == [("create", "new"), ("create", "closed"), ("create", "new")]

    again = import_hotline(db, path, now=NOW)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert "无变化" in again.summary()
    assert len(_problems(db)) == 3


def test_an_edited_file_updates_in_place_but_leaves_an_assigned_items_unit(db, units, tmp_path):
    import_hotline(db, write_book(tmp_path / "a.xlsx", GOOD), now=NOW)
    with session_scope(db) as s:
        third = s.exec(select(Problem).where(Problem.content == "噪音扰民")).one()
        third.status = "assigned"
        s.add(third)
    edited = [GOOD[0][:3] + ("已交办住建局", "市住建局", "加急"), GOOD[1], GOOD[2][:4] + ("市住建局", "")]
    report = import_hotline(db, write_book(tmp_path / "b.xlsx", edited), now=NOW)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 2)
    assert "已交办给“第一镇”，责任单位未改" in report.summary()
    first = _problems(db)[0]
    assert (first.hotline_status, first.note) == ("已交办住建局", "加急")


def test_every_bad_row_is_reported_and_nothing_is_written(db, units, tmp_path):
    rows = GOOD + [
        ("王五", "12345", "电话不对", "", "市住建局", ""),
        ("赵六", "13900000001", "", "", "不存在的局", ""),
        ("张三", "13912345678", "小区门口路灯坏了三个月", "", "市住建局", ""),  # row 4 again
        ("孙七", "", "没留电话", "", "", "x" * 201),
    ]
    with pytest.raises(HotlineError) as caught:
        import_hotline(db, write_book(tmp_path / "bad.xlsx", rows), now=NOW)
    assert [str(i) for i in caught.value.issues] == [
        "附件5 第7行 联系电话：号码格式不正确（“12345”）",
        "附件5 第8行 问题内容：必填，不能为空",
        "附件5 第8行 责任单位：没有名为“不存在的局”的单位：请填写系统中单位的全称",
        "附件5 第9行 问题内容：与第4行重复（同一反映人、同一问题）",
        "附件5 第10行 联系电话：必填，不能为空",
        "附件5 第10行 责任单位：必填，不能为空",
        "附件5 第10行 备注：内容过长：201 字，最多 200 字",
    ]
    assert str(caught.value).startswith("热线文件有 7 处错误，未导入任何数据：")
    assert _problems(db) == []


def test_files_without_the_form_or_of_another_kind_are_refused(db, units, tmp_path):
    with pytest.raises(HotlineError, match="没有附件5格式的表"):
        import_hotline(db, write_book(tmp_path / "x.xlsx", [("a", "b")], header=("姓名", "电话")), now=NOW)
    with pytest.raises(HotlineError, match="缺少列“责任单位”"):
        import_hotline(db, write_book(tmp_path / "y.xlsx", [], header=COLUMNS[:4]), now=NOW)
    (tmp_path / "z.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(HotlineError, match="另存为 .xlsx"):
        import_hotline(db, tmp_path / "z.xls", now=NOW)
    with pytest.raises(HotlineError, match="找不到文件"):
        import_hotline(db, tmp_path / "missing.xlsx", now=NOW)


def test_a_csv_file_in_gbk_as_excel_saves_it(db, units, tmp_path):
    lines = [",".join(COLUMNS)] + [",".join(row) for row in GOOD]
    (tmp_path / "hotline.csv").write_bytes("\r\n".join(lines).encode("gbk"))
    assert import_hotline(db, tmp_path / "hotline.csv", now=NOW).created == 3


def test_an_exported_form5_reads_back_unchanged(db, units, settings, tmp_path):
    import_hotline(db, write_book(tmp_path / "a.xlsx", GOOD, title=False), now=NOW)
    with session_scope(db) as s:
        [file] = forms.export(s, [5], "2026H2", forms.units_for(s, None), settings)
    wb = openpyxl.load_workbook(io.BytesIO(file.content))
    assert wb.sheetnames == ["汇总", "市住建局", "第一镇"]
    rows = [tuple(c or "" for c in row) for row in wb["市住建局"].iter_rows(min_row=4, max_row=5, values_only=True)]
    assert rows == [("张三", "13912345678", "小区门口路灯坏了三个月", "办理中", "市住建局", ""),
                    ("", "0535-6543210", "咨询公租房申请条件", "已办结，已电话答复", "市住建局", "网上民声")]
    (tmp_path / "export.xlsx").write_bytes(file.content)
    report = import_hotline(db, tmp_path / "export.xlsx", now=NOW)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 3)


def test_the_cli_imports_and_reports_errors_with_exit_codes(db, units, settings, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert cli_main(["import-hotline", "--quiet", str(write_book(tmp_path / "good.xlsx", GOOD))]) == 0
    assert "新增 3" in capsys.readouterr().out
    bad = write_book(tmp_path / "bad.xlsx", [("a", "1", "x", "", "无此单位", "")])
    assert cli_main(["import-hotline", "--quiet", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "导入失败，未写入任何数据" in err and "第4行 联系电话" in err and "第4行 责任单位" in err
