"""The shipped example roster (examples/roster.xlsx): a small fictional city that shows every column
of the import format (the service windows of sheet 窗口 too), and one cadre short of service objects
so the import's warning shows.

Regenerate with ``python -m storage.example_roster [path]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

UNITS = [
    ("市住建局", "市直部门"),
    ("城关街道", "镇街区"),
    ("市作风办", "市直部门"),
]

# (姓名, 单位, 手机号, 角色, 职务, 职责)
CADRES = [
    ("林晓明", "市作风办", "13800000001", "管理员", "信息科科员", "系统管理、名册导入、绑定码发放"),
    ("周建华", "市作风办", "13800000002", "主管", "作风办主任", "督查督办、问题交办、抽查回访"),
    ("王立新", "市住建局", "13800000003", "干部", "城建科科长", "联系东门社区、东岭村；城建、物业问题"),
    ("陈静", "市住建局", "13800000004", "干部", "物业科副科长", "联系南苑社区、西坡村；物业、居住环境问题"),
    ("刘海涛", "城关街道", "13800000005", "干部", "社会事务办主任", "联系东门社区、东岭村；民生保障问题"),
    ("赵敏", "城关街道", "13800000006", "干部", "党政办科员", "联系南苑社区、西坡村；综合协调"),
]

# (窗口名称, 单位, 在岗干部手机号): service windows, rated like cadres through their own cards.
WINDOWS = [
    ("不动产登记窗口", "市住建局", "13800000003、13800000004"),
    ("便民服务中心综合窗口", "城关街道", "13800000005、13800000006"),
]

# Where each village and community lies (GCJ-02, as 高德 or 腾讯 maps show it): the households' 经度/纬度.
_AREA_COORDS = {"东门社区": (120.1620, 30.2745), "东岭村": (120.2010, 30.3050), "南苑社区": (120.1750, 30.2580),
                "西坡村": (120.1300, 30.2400)}

# Each cadre's households: (村/居, 村(社区)名称, 住址前缀)
_AREAS = {
    "13800000003": [("居", "东门社区", "城关街道东门社区人民路"), ("村", "东岭村", "城关街道东岭村")],
    "13800000004": [("居", "南苑社区", "城关街道南苑社区南苑小区"), ("村", "西坡村", "城关街道西坡村")],
    "13800000005": [("居", "东门社区", "城关街道东门社区解放路"), ("村", "东岭村", "城关街道东岭村")],
    "13800000006": [("居", "南苑社区", "城关街道南苑社区花园巷"), ("村", "西坡村", "城关街道西坡村")],
}
_OBJECT_COUNTS = {"13800000003": 11, "13800000004": 12, "13800000005": 10, "13800000006": 8}

_SURNAMES = "张李王赵钱孙周吴郑冯陈褚卫蒋沈韩杨朱秦许何吕施孔曹严华金魏陶姜"
_HOUSEHOLD_GIVEN = ["秀英", "建国", "桂兰", "志强", "玉梅", "国庆", "淑珍", "德明", "春花", "永福",
                    "凤英", "长江", "美兰", "文华", "小红", "家宝", "素芬", "振华", "翠花", "有才"]
_OBJECT_GIVEN = ["宇航", "欣怡", "浩然", "梓涵", "子轩", "诗琪", "俊杰", "雨桐", "博文", "佳怡",
                 "明远", "思远", "若曦", "晨阳", "嘉豪", "雅婷", "天佑", "一鸣", "梦琪", "昊天",
                 "紫萱", "宏伟", "静怡", "志远", "晓彤", "鹏飞", "安琪", "铭泽", "悦然", "乐天",
                 "子涵", "浩宇", "可欣", "文博", "雨萱", "俊熙", "思琪", "泽宇", "心怡", "皓轩", "佳琪"]
# (工作单位(住址), 备注): the kinds of people the campaign names: patients, parents, firms, farmers...
_OBJECT_KINDS = [
    ("恒基建材有限公司", "企业负责人"),
    ("市实验小学（学生家长）", "学生家长"),
    ("市人民医院（住院患者家属）", "患者家属"),
    ("城关街道东岭村5组", "种植户"),
    ("安居物业服务有限公司", "物业项目经理"),
    ("城关街道人民路便民超市", "个体工商户"),
    ("新城花园业主委员会", "业委会主任"),
    ("宏达建筑工程有限公司", "施工企业安全员"),
    ("城关街道西坡村2组", "养殖户"),
    ("市第二中学（学生家长）", ""),
    ("南苑农贸市场", "摊位经营户"),
    ("顺通货运有限公司", "企业职工"),
]

HEADERS = {
    "单位": ["单位名称", "类型"],
    "干部": ["姓名", "单位", "手机号", "角色", "职务", "职责"],
    "联户": ["住址", "姓名", "联系电话", "村/居", "村(社区)名称", "干部手机号", "经度", "纬度", "坐标系"],
    "服务对象": ["姓名", "工作单位(住址)", "联系电话", "干部手机号", "备注"],
    "窗口": ["窗口名称", "单位", "在岗干部手机号"],
}
_WIDTHS = {
    "单位": [20, 12],
    "干部": [10, 14, 15, 8, 16, 40],
    "联户": [34, 10, 15, 8, 14, 15, 12, 12, 10],
    "服务对象": [10, 30, 15, 15, 16],
    "窗口": [24, 14, 30],
}
_PHONE_COLUMNS = {"手机号", "联系电话", "干部手机号", "在岗干部手机号"}

_GUIDE = [
    ("名册导入说明", "", "", ""),
    ("本工作簿供管理员导入单位、干部、联户和服务对象。除本“说明”页外，请保留四个工作表的名称和第1行表头；"
     "列的顺序可以调整。整行空白的行会被跳过。", "", "", ""),
    ("导入时先检查全部行：任何一行有错，整份名册都不导入，并列出每一处错误（工作表、行号、列名、原因）。"
     "重复导入同一份名册不会产生变化；名册中删去的行会被停用（不删除，走访记录仍保留）。", "", "", ""),
    ("手机号、联系电话请设为“文本”格式，以免 Excel 把号码变成科学计数法。", "", "", ""),
    ("", "", "", ""),
    ("工作表", "列名", "是否必填", "说明"),
    ("单位", "单位名称", "必填", "市直部门或镇街区的全称，同一名称只能出现一次"),
    ("单位", "类型", "选填", "市直部门 或 镇街区"),
    ("干部", "姓名", "必填", "干部姓名"),
    ("干部", "单位", "必填", "须是“单位”表中的单位名称（或系统中已有的单位）"),
    ("干部", "手机号", "必填", "11 位手机号，用于识别干部和绑定聊天账号，不能重复"),
    ("干部", "角色", "必填列，可留空", "干部、主管（作风办）或 管理员；留空按“干部”处理"),
    ("干部", "职务", "选填", "印在联系卡上"),
    ("干部", "职责", "选填", "印在联系卡上，例如联系的村（社区）和负责的问题"),
    ("联户", "住址", "必填", "住户的详细住址；住址 + 姓名 确定一户，不能重复"),
    ("联户", "姓名", "必填", "户主或联系人姓名"),
    ("联户", "联系电话", "必填", "手机号或固定电话（如 0571-87654321）"),
    ("联户", "村/居", "必填", "村 或 居（也可写 社区、居委会、行政村）；村、居分开统计"),
    ("联户", "村(社区)名称", "选填", "所在的村或社区"),
    ("联户", "干部手机号", "必填", "负责联系这一户的干部的手机号，须在“干部”表中"),
    ("联户", "经度", "选填", "该户的经度（度，如 120.1620）；与纬度同填或同空。干部走访时发送的位置与之相距不超过 300 米即为“位置相符”"),
    ("联户", "纬度", "选填", "该户的纬度（度，如 30.2745）。未填坐标的户，在住户第一次扫码确认走访时以当时的位置为准（记为“走访得出”）"),
    ("联户", "坐标系", "选填", "WGS-84（GPS、天地图）、GCJ-02（高德、腾讯、微信地图）或 BD-09（百度地图）；"
                             "留空时按设置 ROSTER_COORD_DATUM，未设置则有坐标的行必须填写"),
    ("服务对象", "姓名", "必填", "服务对象（非公务人员）的姓名或企业名称"),
    ("服务对象", "工作单位(住址)", "必填", "工作单位或住址"),
    ("服务对象", "联系电话", "必填", "手机号或固定电话；同一单位内 姓名 + 电话 不能重复"),
    ("服务对象", "干部手机号", "必填", "联系这一对象的干部的手机号；服务对象不能是该干部的联户"),
    ("服务对象", "备注", "选填", "例如 企业负责人、学生家长、患者家属"),
    ("窗口", "窗口名称", "必填", "服务窗口的名称；单位 + 窗口名称 不能重复。整个“窗口”表可以不要：那时已导入的窗口保持不变"),
    ("窗口", "单位", "必填", "窗口所属单位，须是“单位”表中的单位名称（或系统中已有的单位）"),
    ("窗口", "在岗干部手机号", "必填列，可留空", "在该窗口值守的干部手机号，多个用顿号或逗号隔开；他们不能评价本窗口"),
    ("", "", "", ""),
    ("每名干部应联系不少于 10 名服务对象；不足时导入仍会完成，但会给出提醒。", "", "", ""),
    ("每名干部和每个窗口都有评价二维码：python -m bot qr-cards 打印评价卡。", "", "", ""),
]


def example_rows() -> dict[str, list[list[str]]]:
    """The example's rows per sheet (without headers), as text."""
    households, objects = [], []
    person = 0
    for mobile, areas in _AREAS.items():
        for n in range(5):
            kind, area, prefix = areas[n % 2]
            house = 10 + person * 3  # distinct per household, so no two families share an address
            address = f"{prefix}{n + 3}组{house}号" if kind == "村" else f"{prefix}{house}号{n + 1}单元{201 + n}室"
            name = _SURNAMES[person % len(_SURNAMES)] + _HOUSEHOLD_GIVEN[person % len(_HOUSEHOLD_GIVEN)]
            row = [address, name, f"139{person + 1:08d}", kind, area, mobile]
            if n < 4:  # the fifth household of each cadre has no coordinates: they are optional
                lng, lat = _AREA_COORDS[area]
                row += [round(lng + 0.0004 * person, 6), round(lat + 0.0003 * n, 6), "GCJ-02"]
            else:
                row += ["", "", ""]
            households.append(row)
            person += 1
    index = 0
    for mobile, count in _OBJECT_COUNTS.items():
        for n in range(count):
            workplace, note = _OBJECT_KINDS[n % len(_OBJECT_KINDS)]
            name = _SURNAMES[(index * 7 + 3) % len(_SURNAMES)] + _OBJECT_GIVEN[index % len(_OBJECT_GIVEN)]
            # A few landlines, since objects are often reached at their workplace.
            phone = f"0571-8{index + 1:07d}" if n % 5 == 4 else f"1380001{index + 1:04d}"
            objects.append([name, workplace, phone, mobile, note])
            index += 1
    return {
        "单位": [list(u) for u in UNITS],
        "干部": [list(c) for c in CADRES],
        "联户": households,
        "服务对象": objects,
        "窗口": [list(w) for w in WINDOWS],
    }


def write_example_workbook(path: str | Path) -> Path:
    """Writes the example workbook (a 说明 sheet, then 单位, 干部, 联户, 服务对象, 窗口) to ``path``."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bold = Font(bold=True)
    workbook = Workbook()

    guide = workbook.active
    guide.title = "说明"
    for row in _GUIDE:
        guide.append(list(row))
    guide["A1"].font = Font(bold=True, size=14)
    header_row = next(i for i, row in enumerate(_GUIDE, start=1) if row[0] == "工作表")
    for cell in guide[header_row]:
        cell.font = bold
    for column, width in zip("ABCD", (12, 16, 16, 60)):
        guide.column_dimensions[column].width = width
    for row in guide.iter_rows(min_row=header_row + 1):
        row[3].alignment = Alignment(wrap_text=True)

    for sheet, rows in example_rows().items():
        worksheet = workbook.create_sheet(sheet)
        headers = HEADERS[sheet]
        worksheet.append(headers)
        for cell in worksheet[1]:
            cell.font = bold
        phone_indexes = [i for i, h in enumerate(headers) if h in _PHONE_COLUMNS]
        for values in rows:
            worksheet.append(values)
            # Text, not numbers: Excel shows 11-digit numbers as 1.38E+10 and drops landlines' leading 0.
            for i in phone_indexes:
                worksheet.cell(row=worksheet.max_row, column=i + 1).number_format = "@"
        for i, width in enumerate(_WIDTHS[sheet], start=1):
            worksheet.column_dimensions[get_column_letter(i)].width = width
        worksheet.freeze_panes = "A2"

    workbook.save(path)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/roster.xlsx")
    print(write_example_workbook(target))
