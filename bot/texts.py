"""Every user-facing sentence, in one place, so it can be reviewed and translated.

Placeholders use str.format names. Keep messages short: they are read on a phone in a doorway.
"""

# Navigation labels (also accepted when typed)
BACK = "⬅ 上一步"
CANCEL = "✖ 取消"
SKIP = "跳过"
YES = "是"
NO = "否"
NEXT_PAGE = "下一页 ▶"
PREV_PAGE = "◀ 上一页"
CONFIRM = "✅ 确认提交"

# Greetings, help, binding
WELCOME_UNBOUND = (
    "您好！这里是干部作风建设助手，供干部登记入户走访（四个一）、日常走访和查看进度。\n"
    "您的账号尚未绑定干部身份。请向管理员索取绑定码后发送“/bind 绑定码”，"
    "或点击下方按钮分享本人手机号完成绑定。"
)
NOT_BOUND = (
    "抱歉，此功能仅供已绑定的干部使用。请向管理员索取绑定码后发送“/bind 绑定码”，"
    "或点击下方按钮分享本人手机号。"
)
# The same for channels with no button to share one's phone (WeChat, WeCom, the console).
WELCOME_UNBOUND_TYPED = (
    "您好！这里是干部作风建设助手，供干部登记入户走访（四个一）、日常走访和查看进度。\n"
    "您的账号尚未绑定干部身份。请向管理员索取绑定码后回复“绑定 绑定码”，例如：绑定 ABCD2345。"
)
NOT_BOUND_TYPED = "抱歉，此功能仅供已绑定的干部使用。请向管理员索取绑定码后回复“绑定 绑定码”。"
SHARE_CONTACT_BUTTON = "📱 分享手机号绑定"
WELCOME_BOUND = "{name}您好（{unit}）！"
BOUND_OK = "✅ 绑定成功：{name}（{unit}）。\n发送 /help 查看可用功能。"
BIND_USAGE = "请发送“/bind 绑定码”，绑定码由管理员提供（8位字母数字）。"
BIND_CODE_INVALID = "绑定码无效、已使用或已过期，请向管理员重新索取。"
CONTACT_NOT_OWN = "请通过按钮分享您本人的联系方式，不能使用他人的名片。"
CONTACT_UNKNOWN = "未在花名册中找到手机号 {phone}。请确认号码，或向管理员索取绑定码。"
ALREADY_BOUND = "您已绑定为 {name}（{unit}），无需重复绑定。"

HELP_HEADER = "可用命令："
# One help line per feature (bot.core.features derives /help and the command menus from them).
HELP_BIND = "/bind 绑定码 — 绑定干部身份"
HELP_VISIT = "/visit — 开始入户走访（四个一）"
HELP_CONTACT = "/contact — 登记日常走访（电话、节日走访、座谈）"
HELP_PROGRESS = "/progress — 本半年走访进度"
HELP_UNIT = "/unit — 本单位干部走访进度"
HELP_MUTE = "/mute、/unmute — 暂停、恢复日报周报"
HELP_CANCEL = "/cancel — 取消当前操作"
HELP_HELP = "/help — 帮助"
HELP_TODO = "/todo — 我负责的台账问题"
HELP_LEDGER = "/ledger — 问题台账：交办、督办、回访"
HELP_REPORT = "/report — 反映问题"
HELP_MINE = "/mine — 我反映的问题"
HELP_RATINGS_LINE = "/ratings [单位名或干部姓名] — 群众评价统计与差评"
HELP_CALLBACKS = "/callbacks — 待回访的差评"
HELP_RATINGS = HELP_RATINGS_LINE + "\n" + HELP_CALLBACKS  # the two lines as /help shows them
HELP_EXPORT = "/export [1-5|all] [单位] — 导出报表附件1–5（Excel）"
HELP_RANKING = "/ranking [满意度|走访|时效] — 单位和干部排名（末位）及图表"
HELP_SPOTCHECK = "/spotcheck — 电话随机访问：抽取走访记录、逐条记录核实结果；/spotcheck 汇总"
HELP_ADMIN = "/bindcode 手机号 — 为干部生成绑定码"
HELP_IN_FLOW = "当前正在进行：{flow}。可点按钮作答，也可回复选项编号；发送 /cancel 取消。"

# Generic answers to unexpected input
UNKNOWN_INPUT = "没有理解您的意思。发送 /help 查看可用命令。"
UNKNOWN_COMMAND = "没有这个命令：/{command}。发送 /help 查看可用命令。"
ROLE_FORBIDDEN = "“/{command}”仅限{role}使用。发送 /help 查看您可用的命令。"
STALE_BUTTON = "这个按钮已失效（该步骤已回答或已取消），请使用最新消息中的按钮。"
NOTHING_TO_CANCEL = "当前没有进行中的操作。"
CANCELLED = "已取消{flow}，未保存任何内容。"
PICK_AN_OPTION = "请点击按钮选择，或回复选项编号（1–{count}）。"
FILES_NOT_RESENT = "（此前的 {count} 个文件未能送达，请重新发送该命令获取。）"
PICK_AN_OPTION_TYPED = "请回复选项编号（1–{count}）或选项文字。"
STALE_OPTION_TYPED = "这个选项已失效（该步骤已回答或已取消），请按最新一条消息中的编号回复。"
HELP_IN_FLOW_TYPED = "当前正在进行：{flow}。请回复选项编号或文字作答；回复“取消”退出。"
TEXT_TOO_LONG = "内容过长（{length}字），请精简到{limit}字以内后重新发送。"
TEXT_EMPTY = "请用文字描述（不能只发表情或符号）。"
NEED_TEXT = "此步骤请输入文字。"
NEED_PHOTO = "此步骤请发送一张照片，或选择“跳过”。"
NEED_LOCATION = "此步骤请发送位置（或输入“纬度,经度”），或选择“跳过”。"
LOCATION_INVALID = "位置格式不对，请发送位置，或按“纬度,经度”输入，例如 31.23,121.47。"
NOT_EXPECTED_HERE = "此时不需要{what}。"
WHAT_PHOTO = "照片"
WHAT_LOCATION = "位置"
WHAT_CONTACT = "联系人名片"
FLOW_BUSY = "您有未完成的{flow}，请先完成或发送 /cancel 取消。"
RESUME = "继续未完成的{flow}："

FLOW_NAMES = {"visit": "入户走访", "contact": "日常走访登记", "object": "联系服务对象", "ledger": "问题台账", "todo": "台账办理", "mine": "我的反映", "report": "反映问题", "rating": "服务评价",
              "spotcheck": "电话随机访问", "appeal": "差评申诉"}
ROLE_NAMES = {"cadre": "干部", "supervisor": "主管（作风办）", "office": "作风办", "admin": "管理员"}

# Visit (四个一)
NO_HOUSEHOLDS = "您名下没有分配联户，请联系管理员导入花名册。"
PICK_HOUSEHOLD = "请选择本次走访的住户（未走访的排在前面，✅ 表示本半年已走访）："
PICK_HOUSEHOLD_PAGE = "（第{page}/{pages}页）"
HOUSEHOLD_LABEL = "{mark}{name} · {address}"
LOOKBACK_NONE = "🔎 回头看：{name}（{address}）此前没有反映过问题。"
LOOKBACK_HEADER = "🔎 回头看：{name}（{address}）此前反映的问题："
LOOKBACK_ITEM = "• [{category}] {content} — {status}（{date}）"
LOOKBACK_AREA = "同一{area}另有 {count} 项问题尚未办结。"
STATUS_NAMES = {
    "new": "待交办",
    "solved": "已当场解决",
    "assigned": "已交办",
    "in_progress": "整改中",
    "closed": "已办结（销号）",
    "answered": "已回访",
}
ASK_CARD = "①留下一张联系卡：是否已留下联系卡（姓名、单位、电话、职责）？"
SURVEY_INTRO = "②填好一张调查卷（共{count}题）"
SURVEY_QUESTION = "调查 {index}/{count}：{text}"
ASK_DIFFICULTY_CATEGORY = "③解决一件困难事：请选择困难或诉求的类型："
NO_DIFFICULTY = "本次无困难诉求"
ASK_DIFFICULTY_CONTENT = "请简要描述困难或诉求（{limit}字以内）："
ASK_DIFFICULTY_SOLVED = "这件事是否已当场解决？"
SOLVED_YES = "已当场解决"
SOLVED_NO = "未解决，列入问题台账"
ASK_LEAFLET = "④发放一张宣传纸：是否已发放宣传资料？"
ASK_PHOTO = "可选：发送一张走访照片，或选择“跳过”。"
ASK_LOCATION = "可选：发送当前位置，或选择“跳过”。"
LOCATION_BUTTON = "📍 发送位置"
SUMMARY_HEADER = "请核对本次走访："
SUMMARY_LINES = (
    "住户：{household}\n"
    "①联系卡：{card}\n"
    "②调查卷：{survey}\n"
    "③困难事：{difficulty}\n"
    "④宣传纸：{leaflet}\n"
    "照片：{photo}　位置：{location}"
)
SUMMARY_NO_DIFFICULTY = "无"
SUMMARY_DIFFICULTY = "[{category}] {content}（{solved}）"
SUMMARY_SURVEY_ITEM = "\n　· {text}：{answer}"
PRESENT = "已提供"
ABSENT = "无"
VISIT_SAVED = "✅ 走访已登记。本半年已走访 {done}/{total} 户。"
VISIT_OFFER_CONFIRMATION = "📱 请住户确认本次走访：发送 /serviceqr 生成一次性评价二维码，请住户用自己的手机扫码评价（一次有效）。"
VISIT_PROBLEM_LEDGER = "困难事已列入问题台账（编号 #{id}），将跟踪办理。"
VISIT_PROBLEM_SOLVED = "困难事已记录为当场解决（编号 #{id}）。"
HOUSEHOLD_GONE = "该住户已不在您的联户名单中，请重新选择。"

# Everyday contact (日常走访)
ASK_CONTACT_KIND = "日常走访：请选择方式："
CONTACT_KINDS = {"phone": "电话联系", "holiday": "节日走访", "meeting": "座谈会议", "other": "其他"}
ASK_CONTACT_WHO = "联系的是哪一户？"
CONTACT_NO_HOUSEHOLD = "不针对具体住户（如居委会、座谈会）"
ASK_CONTACT_NOTE = "简要记录内容（{limit}字以内），或选择“跳过”："
CONTACT_SAVED = "✅ 已记录日常走访：{kind}{who}。本半年共 {count} 次日常走访。"

# Progress
PROGRESS = (
    "📊 {half_label}走访进度：已走访 {done}/{total} 户{bar}\n"
    "日常走访 {contacts} 次；服务对象 {objects} 名。"
)
PROGRESS_REMAINING = "尚未走访："
PROGRESS_ALL_DONE = "本半年联户已全部走访，辛苦了！"
PROGRESS_OBJECTS_LOW = "⚠ 服务对象少于{minimum}名，请补充。"
UNIT_PROGRESS_HEADER = "📊 {unit} {half_label}走访进度："
UNIT_PROGRESS_LINE = "{name}：{done}/{total} 户，服务对象 {objects} 名{flag}"
UNIT_BEHIND = " ⚠"
ALL_UNITS_HEADER = "📊 各单位{half_label}走访进度："
ALL_UNITS_LINE = "{unit}：{done}/{total} 户（干部 {cadres} 名）{flag}"
ALL_UNITS_BEHIND = " ⚠ {count} 名未完成"

# Admin
BINDCODE_USAGE = "用法：/bindcode 干部手机号"
BINDCODE_UNKNOWN = "花名册中没有手机号为 {mobile} 的干部。"
BINDCODE_ISSUED = "{name}（{unit}）的绑定码：{code}\n有效期至 {expires}。{link}"
BINDCODE_LINK = "\nTelegram 绑定链接：{link}"

# Citizen evaluation (好差评): the chat flow, the web page and the supervisor's views
RATING_LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
RATING_LEVEL_ICONS = {5: "😄", 4: "🙂", 3: "😐", 2: "🙁", 1: "😣"}
RATING_REASONS = ("态度生硬", "办事拖拉", "推诿扯皮", "业务不熟", "不按规定办事", "吃拿卡要", "其他")
RATING_TARGET_CADRE = "{name}（{unit}{post}）"
RATING_TARGET_WINDOW = "{name}（{unit}）"
RATING_CODE_INVALID = "这个评价码无效或已停用（卡片可能已挂失重印），请扫描工作人员现在出示的二维码。"
RATING_SELF = "您不能评价自己（或自己在岗的窗口）。"
RATING_ASK_LEVEL = "您正在评价：{target}\n请对本次服务作出评价："
RATING_SERVICE_TARGET = "{target} · 本次服务（一次有效）"
RATING_ASK_REASONS = "很抱歉让您不满意。请选择原因（可多选，选好后点“{done}”）："
RATING_REASONS_DONE = "选好了 ▶"
RATING_PICKED = "☑ "
RATING_ASK_COMMENT = "请简要说明情况（{limit}字以内），或选择“跳过”："
RATING_ASK_PHONE = "如需回访，请留下您的手机号或电话（仅用于回访，严格保密），或选择“跳过”："
RATING_PICK_LEVEL = "请选择一个评价等级。"
RATING_BAD_REASON = "原因选项不正确，请重新选择。"
RATING_BAD_PHONE = "电话号码格式不正确，请填写11位手机号或带区号的固定电话，也可以不填。"
RATING_THANKS = "✅ 感谢您的评价！"
RATING_THANKS_REPLACED = "✅ 感谢您的评价！您今天已评价过，本次评价已替换之前的评价。"
RATING_FOLLOW_UP_CALL = "我们已将您反映的问题交有关单位核实整改，将在 {days} 个工作日内电话回访您。"
RATING_FOLLOW_UP_NO_PHONE = "我们已将您反映的问题交有关单位核实整改。如需回访，可再次扫码并留下电话。"
RATING_PROBLEM = "群众评价“{level}”：{target}"
RATING_PROBLEM_REASONS = "原因：{reasons}"
RATING_BUSY = "您有未完成的{flow}，请先完成或发送 /cancel 取消后再扫码评价。"

# The rating web page (bot/templates/rating)
PAGE_TITLE = "服务评价"
PAGE_INTRO = "请对本次服务作出评价"
PAGE_WHO = "您正在评价"
PAGE_BAD_SECTION = "很抱歉让您不满意，请告诉我们原因"
PAGE_REASONS = "原因（可多选）"
PAGE_PHONE = "联系电话（选填，仅用于回访，严格保密）"
PAGE_SUBMIT = "提交评价"
PAGE_PRIVACY = "评价匿名提交；工作人员不得诱导或干预您的评价。"
PAGE_THANKS_TITLE = "评价已提交"
PAGE_NOT_FOUND_TITLE = "评价码无效"
PAGE_EXPIRED_TITLE = "页面已过期"
PAGE_EXPIRED = "页面已过期或来源不明，提交未被接受。请重新扫码后再评价。"
PAGE_TOO_LARGE_TITLE = "内容过长"
PAGE_TOO_LARGE = "提交的内容过长，未被接受。请精简后重新扫码评价。"
PAGE_TOO_MANY_TITLE = "提交过于频繁"
PAGE_TOO_MANY = "同一网络提交过于频繁，请稍后再试。"
PAGE_ERROR_TITLE = "提交未成功"
PAGE_FIELD_TOO_LONG = "“{field}”过长，请精简到{limit}字以内。"
PAGE_BAD_FORM = "提交的内容不完整或格式不对，未被接受。请重新扫码后再评价。"
PAGE_RESCAN = "重新打开评价页"

# Supervisor views of the ratings
RATINGS_HEADER = "⭐ 群众评价（{half_label}）"
RATINGS_UNIT_LINE = "{name}：{total} 条，满意率 {rate}，差评 {bad}"
RATINGS_COUNTS = "{counts}"
RATINGS_NONE = "暂无评价。"
RATINGS_TARGET_LINE = "• {name}：{total} 条，满意率 {rate}，差评 {bad}"
RATINGS_BAD_HEADER = "差评（最近 {count} 条）："
RATINGS_BAD_LINE = "• {date} {target} {level}{reasons}{comment}{phone}{problem}"
RATINGS_MISUSE = "另有 {count} 条疑似刷评（同一网络短时间内多次评价），未计入统计。"
RATINGS_UNKNOWN = "没有找到“{query}”：请发送单位全称或干部姓名。"
RATINGS_FORBIDDEN_UNIT = "您只能查看本单位的评价。"
RATINGS_RATE_NOTE = "满意率 =（非常满意 + 满意 + 基本满意）÷ 评价总数。"
CALLBACKS_HEADER = "📞 待回访的差评（{count} 条）："
CALLBACKS_NONE = "没有待回访的差评。"
CALLBACKS_LINE = "• #{problem} {target} {level}：回访电话 {phone}，{due}前回访{comment}"

# Supervisors' tools: report forms 附件1-5, rankings, spot-checks (电话随机访问), hotline import
# The forms as in seed 004: title, subtitle (form 4's is per sheet), columns, and the note whose
# dates and phone come from the settings (DEADLINE_FORM*, REPORT_CONTACT_PHONE).
REPORT_FORMS = {
    1: {"title": "走访村民(居民)情况统计表", "subtitle": None,
        "columns": ("村(居)民住址", "村(居)民姓名", "联系电话", "备注"),
        "note": "注:1.请于每年{dates}前报送市作风办(电子版、纸质版同时报送),联系电话:{phone};"
                "2.走访农村群众、社区居民分别上报。"},
    2: {"title": "村民(居民)反映的问题分类统计表", "subtitle": "(公共方面)",
        "columns": ("村(居)民姓名", "村(居)民住址", "联系电话", "问题类型", "问题内容", "备注"),
        "note": "注:1.问题类型,城市社区主要包括城建、环保、物业、治安、教育、医疗、文体活动、干部作风等。"
                "农村主要包括治安、教育、医疗、文化生活、居住环境、干部作风等;"
                "2.请于每年{dates}前报送市作风办(电子版、纸质版同时报送),联系电话:{phone}。"},
    3: {"title": "干部联系服务对象情况统计表", "subtitle": None,
        "columns": ("服务对象姓名", "工作单位(住址)", "联系电话", "备注"),
        "note": "注:请于每年{dates}前报送市作风办(电子版、纸质版同时报送),联系电话:{phone}。"},
    4: {"title": "干部联系服务对象反映的问题分类统计表", "subtitle": "({part})",
        "columns": ("服务对象姓名", "工作单位(住址)", "联系电话", "问题类型", "问题内容", "备注"),
        "note": "注:1.公共方面问题类型主要包括城建、环保、物业、治安、教育、医疗、文体活动、干部作风等。"
                "行业领域问题类型是指属于本部门职能和业务范围内且可自行整改解决的问题;"
                "2.请于每年{dates}前报送市作风办(电子版、纸质版同时报送),联系电话:{phone};"
                "3.行业领域和公共方面问题分别统计上报。"},
    5: {"title": "89000民生热线、网上民声交办问题统计表", "subtitle": None,
        "columns": ("反映人姓名", "联系电话", "问题内容", "办理情况", "责任单位", "备注"),
        "note": "注:1.只填报交办给各镇街区、市直各部门的政务类事项,主要包括各类咨询、求助、建议和投诉等相关问题;"
                "2.请于每年{dates}前报送市作风办(电子版、纸质版同时报送),联系电话:{phone}。"},
}
REPORT_UNIT_LINE = "单位(公章)：{unit}"
REPORT_PARTS = {"村": "村民", "居": "居民", "行业领域": "行业领域", "公共方面": "公共方面"}
REPORT_DATE = "{month}月{day}日"
REPORT_VISITED_BY = "{cadre} {date}走访"
REPORT_EVIDENCE = "凭证：{level}"  # the strongest evidence of the household's visits (附件1 备注)
REPORT_FLAGGED = "⚠ 疑似走过场：{kinds}"
REPORT_CADRE_EVIDENCE = "{cadre}本半年走访凭证：{shares}{flagged}"
REPORT_CADRE_FLAGGED = "，疑似走过场 {count} 次"
REPORT_CONTACT_CADRE = "联系干部：{cadre}"
REPORT_SUMMARY_SHEET = "汇总"
REPORT_SUMMARY_TITLE = "附件{form} {title} · 各单位汇总"
REPORT_SUMMARY_UNIT = "单位"
REPORT_SUMMARY_TOTAL = "合计"
REPORT_SUMMARY_ALL = "全部单位"
EXPORT_USAGE = "用法：/export [1-5|all] [单位名称]，例如 /export 1、/export all。默认导出全部五张表。"
EXPORT_UNKNOWN_UNIT = "没有找到单位“{unit}”：请发送单位全称。"
EXPORT_FORBIDDEN_UNIT = "您只能导出本单位的报表。"
EXPORT_READY = "📎 {half_label} {forms}：{units}。联系电话未打码（正式报表），请妥善保管。"
EXPORT_ALL_UNITS = "{count} 个单位（每个单位一张工作表）"

RANKING_METRICS = {"satisfaction": "满意度", "visits": "走访", "timeliness": "时效"}
RANKING_ALIASES = {"满意度": "satisfaction", "满意率": "satisfaction", "满意": "satisfaction", "评价": "satisfaction",
                   "走访": "visits", "走访完成率": "visits", "完成率": "visits", "时效": "timeliness",
                   "办结": "timeliness", "及时率": "timeliness", "台账": "timeliness"}
RANKING_USAGE = "用法：/ranking [满意度|走访|时效]，默认按满意度。"
RANKING_TITLES = {"satisfaction": "群众满意率", "visits": "联户走访完成率", "timeliness": "台账按期办结率"}
RANKING_HEADER = "🏆 {half_label} {who}{title}排名"
RANKING_UNITS = "各单位"
RANKING_CADRES = "干部"
RANKING_CADRES_OF = "{unit}干部"
RANKING_WHAT = {"units": "单位", "cadres": "干部"}
RANKING_LINE = "{rank}. {name}：{rate}（{detail}）"
RANKING_GAP = "……"
RANKING_DETAIL = {"satisfaction": "满意 {good}/{total} 条", "visits": "已走访 {good}/{total} 户",
                  "timeliness": "按期 {good}/{total} 件{overdue}"}
RANKING_OVERDUE = "，逾期未办 {count} 件"
RANKING_BOTTOM = "⚠ 末位：{names}"
RANKING_NONE = "暂无可排名的数据。"
RANKING_UNRANKED = {"satisfaction": "另有 {count} 个{what}评价不足 {minimum} 条，未参加排名。",
                    "visits": "另有 {count} 个{what}没有联户，未参加排名。",
                    "timeliness": "另有 {count} 个{what}本半年没有到期的台账事项，未参加排名。"}
RANKING_OWN_UNIT = "本单位在全部 {total} 个单位中排第 {rank} 名（{rate}）。"
RANKING_NOTES = {"satisfaction": "满意率 =（非常满意 + 满意 + 基本满意）÷ 评价总数，疑似刷评不计。",
                 "visits": "走访完成率 = 本半年已走访的联户 ÷ 联户总数。",
                 "timeliness": "按期办结率 = 按期办结 ÷（已办结 + 逾期未办结），以本半年到期的事项计。"}
RANKING_CHART_AXIS = {"satisfaction": "满意率 %", "visits": "走访完成率 %", "timeliness": "按期办结率 %"}
RANKING_CHART_TITLE = "{half_label} {who}{title}（末尾 {count} 名）"

SPOT_OUTCOMES = {"confirmed": "已核实走访", "not_reached": "未接通", "denied": "否认走访"}
SPOT_PENDING = "待核实"
SPOT_DRAW = "🎲 抽取样本"
SPOT_SUMMARY = "📊 汇总"
SPOT_MENU = ("📞 电话随机访问（{half_label}）：已抽取 {drawn} 条，待核实 {open} 条。\n"
             "请选择一条拨打核实，或抽取新样本（每名干部按 {share} 抽取，至少 1 条）。")
SPOT_ITEM_LABEL = "{mark}{household}（{cadre}）"
SPOT_RETRY_MARK = "↻ "
SPOT_ITEM = ("☎ 核实走访：\n住户：{household}\n住址：{address}\n电话：{phone}\n走访干部：{cadre}（{unit}）\n"
             "走访时间：{date}\n抽取原因：{why}\n\n请拨打电话，询问是否有干部上门走访（四个一），然后选择结果。")
SPOT_ITEM_GONE = "这条抽查记录已不存在或不在您的范围内。"
SPOT_ASK_NOTE = "请简要记录对方的说法（选填，{limit}字以内）："
SPOT_RECORDED = "已记录：{household} — {outcome}。"
SPOT_DRAWN = "已抽取 {new} 条新的走访记录（随机种子 {seed}）{again}。"
SPOT_DRAWN_AGAIN = "，另有 {count} 条此前已抽过"
SPOT_DRAWN_REASONS = "抽取原因：{parts}（凭证越弱、有走过场标记的走访越容易被抽到）。"
# Why a visit was drawn (bot/reports/spotcheck.py): the short names count a draw, the long ones an item.
SPOT_REASON_SHORT = {"flags": "有走过场标记", "none": "无佐证", "photo": "仅照片", "random": "随机"}
SPOT_REASONS = {"none": "无佐证", "photo": "仅照片", "random": "随机"}
SPOT_REASON_FLAGS = "有走过场标记：{kinds}"
SPOT_REASON_LEVEL = "（{level}）"
SPOT_NOTHING_TO_DRAW = "本半年范围内没有可抽查的走访记录。"
SPOT_NONE_OPEN = "没有待核实的抽查记录。"
SPOT_SUMMARY_HEADER = "📊 电话随机访问汇总（{half_label}）：抽查 {drawn} 条，已核实 {confirmed}，未接通 {not_reached}，否认 {denied}，待核实 {pending}。"
SPOT_SUMMARY_FLAGGED = "需关注的干部（否认走访或尚未核实）："
SPOT_SUMMARY_LINE = "• {cadre}（{unit}）：抽查 {drawn}，否认 {denied}，未核实 {unverified}"
SPOT_SUMMARY_CLEAN = "所有抽查均已核实，无否认走访。"
SPOT_LIST_HEADER = "抽查名单（{count} 条，电话未打码，仅供核实拨打）："
SPOT_LIST_LINE = "#{id} {cadre}（{unit}）→ {household}，{address}，{phone}，{date} 走访{outcome}；抽取原因：{why}"

HOTLINE_CATEGORY = "热线"
HOTLINE_IMPORT_ACTOR = "热线导入"
HOTLINE_ERRORS = "热线文件有 {count} 处错误，未导入任何数据："
HOTLINE_REPORT = "热线导入完成：{source}\n新增 {created}，更新 {updated}，未变 {unchanged}"
HOTLINE_REPORT_SAME = "热线导入完成（无变化）：{source}\n未变 {unchanged}"

# Reminders and digests (sent through the outbox)
DEADLINE_HEAD = "⏰ {form} 将于 {due} 截止（{left}）。"
DUE_TODAY = "今天截止"
DAYS_LEFT = "还有 {days} 天"
DEADLINE_VISITS = "本半年已走访 {done}/{total} 户，尚未走访："
DEADLINE_OBJECTS = "您的服务对象现有 {count} 名，少于 {minimum} 名，请尽快补充。"
DEADLINE_FORM5 = "请汇总本半年 12345/89000 热线问题的办理情况并按时报送。"
DEADLINE_BEHIND = "尚有 {count} 名干部未完成："
DEADLINE_ALL_DONE = "所辖干部均已完成，可导出报表报送。"
DIGEST_DAILY = "📰 {date} 作风工作日报"
DIGEST_WEEKLY = "📰 作风工作周报（截至 {date}）"
DIGEST_VISITS = "本期新增走访 {count} 次；本半年累计走访 {done}/{total} 户。"
DIGEST_BEHIND = "未完成走访的干部 {count} 名（进度最慢的在前）："
DIGEST_MORE = "…… 另有 {count} 名"
DIGEST_ALL_DONE = "所辖干部本半年走访均已完成。"
DIGEST_MUTE_HINT = "（发送 /mute 可暂停日报周报，截止提醒不受影响）"
DIGEST_NO_RATINGS = "本期无群众评价。"
EVIDENCE_TOTAL = "本半年走访 {total} 次的凭证：{shares}。"
EVIDENCE_FLAGGED_TOTAL = "疑似走过场 {count} 次，涉及 {cadres} 名干部（/flags 查看原因）。"
EVIDENCE_WEAK_HEADER = "凭证偏弱或有走过场标记的干部 {count} 名（⚠ 为疑似走过场次数）："
EVIDENCE_WEAK_LINE = "• {name}（{unit}）{shares}{flagged}"
EVIDENCE_NO_VISITS = "本半年尚无走访记录。"
EVIDENCE_WEAK_MORE = "…… 另有 {count} 名，全部干部见管理后台（控制台）的单位页面"
DIGEST_RATINGS = "本期群众评价 {total} 条，满意率 {rate}%（{levels}）。"
DIGEST_BAD = "差评 {count} 条："
CALLBACKS_DUE = "📞 {count} 项差评回访今明两天到期或已逾期："
CALLBACK_DUE_ON = "{due} 到期"
CALLBACK_OVERDUE = "⚠ 已逾期"
CALLBACKS_HINT = "发送 /callbacks 查看完整电话并回访。"
MUTED = "已暂停日报和周报。截止提醒照常发送。发送 /unmute 恢复。"
UNMUTED = "已恢复日报和周报。"

# Evaluation cards (评价卡, printed by `python -m bot qr-cards`)
CARD_TITLE_CADRE = "干部作风评价"
CARD_TITLE_WINDOW = "窗口服务评价"
CARD_DUTIES = "职责："
CARD_ON_DUTY = "在岗："
CARD_INSTRUCTION = "扫码评价我的服务"
CARD_FOOTER = "评价匿名提交 · 严禁诱导干预"

# Problem ledger (整改台账)
RAISER_LABEL = "群众"
LEDGER_ITEM_LINE = "#{id} [{category}] {content}"
LEDGER_NEED_TEXT = "请填写{what}。"
LEDGER_NO_ITEM = "没有编号为 #{id} 的问题。"
LEDGER_NOT_YOURS = "您无权对这一问题执行“{action}”。"
LEDGER_WRONG_STATE = "该问题当前为“{status}”，不能“{action}”。"
LEDGER_REOPEN_DEFAULT = "反映人对办理结果不满意"
LEDGER_NEED_UNIT = "请选择责任单位。"
LEDGER_UNIT_OUT_OF_SCOPE = "“{unit}”不在您的管辖范围内，不能交办。"
LEDGER_NEED_POST = "请从“{unit}”的在册干部中选择{post}责任人。"
LEDGER_SAME_AB = "A岗和B岗不能是同一人。"
LEDGER_PAST_DEADLINE = "办结时限 {date} 已过，请选择今天或以后的日期。"
LEDGER_ASSIGN_NOTE = "交办{unit}，A岗 {a}，B岗 {b}，限 {deadline} 前办结"
LEDGER_NOTICE_ASSIGNED = "📌 交办单 {slip}{again}\n{item}\n请于 {deadline} 前办结。发送 /todo 查看并办理。"
LEDGER_AGAIN = "（重新交办）"
LEDGER_NOTICE_CLOSED = "✅ 已办结：{item}\n办理结果：{result}"
LEDGER_TELL_RAISER = "您好！您反映的问题“{content}”已办结。\n办理结果：{result}\n如不满意，可发送 /mine 申请重新办理。"
LEDGER_ANSWERED_BY_CHAT = "已通过聊天告知反映人办理结果"
LEDGER_HANDOVER_NOTE = "A岗未按时处理，转请B岗办理"
LEDGER_NOTICE_HANDOVER = "🔁 AB岗提醒：{item}\nA岗 {hours} 小时未处理，请您（B岗）接手，限 {deadline} 前办结。发送 /todo 办理。"
LEDGER_NOTICE_DUE = "⏰ 明天到期：{item}\n办结时限 {deadline}。发送 /todo 办理。"
LEDGER_NOTICE_OVERDUE = "⚠ 逾期未办结（责任追究）：{item}\n时限 {deadline}，已超 {days} 个工作日。"
LEDGER_DETAIL_HEAD = "#{id} [{category}] {status}\n{content}"
LEDGER_DETAIL_RAISER = "反映人：{name} {phone}"
LEDGER_DETAIL_ASSIGNED = "交办单 {slip}：{unit}，A岗 {a}，B岗 {b}，限 {deadline} 前办结"
LEDGER_DETAIL_OVERDUE = "⚠ 已逾期"
LEDGER_DETAIL_RESULT = "办理结果：{result}"
LEDGER_DETAIL_ANSWER = "回访：{answer}"
LEDGER_HISTORY_HEAD = "#{id} 办理记录："
LEDGER_ACTION_LABELS = {"assign": "📌 交办", "progress": "📝 报告进展", "close": "✅ 办结销号", "answer": "📞 登记回访",
                        "reopen": "🔁 重新办理"}
LEDGER_SHOW_HISTORY = "📜 办理记录"
LEDGER_NOTE_PROMPTS = {
    "progress": "请简述整改进展（{limit}字以内）：",
    "close": "请填写办理结果（{limit}字以内），将告知反映人：",
    "answer": "请填写回访情况（如：已电话告知，群众满意；{limit}字以内）：",
    "reopen": "请说明需要重新办理的原因（{limit}字以内）：",
}
LEDGER_DONE = "已{action}：#{id}，当前状态：{status}。"
LEDGER_PICK_BUCKET = "📒 问题台账：请选择要查看的类别："
LEDGER_BUCKETS = {"new": "待交办 {count}", "open": "办理中 {count}", "overdue": "已逾期 {count}", "closed": "待回访 {count}"}
LEDGER_BUCKET_EMPTY = "这一类暂无问题，请选择其他类别。"
LEDGER_EMPTY = "台账中暂无问题。"
LEDGER_PICK_ITEM = "请选择问题："
LEDGER_PICK_UNIT = "交办给哪个责任单位？"
LEDGER_UNIT_TOO_SMALL = "该单位在册干部少于两人，无法设置A、B岗，请选择其他单位。"
LEDGER_PICK_A = "请选择A岗（主办）责任人："
LEDGER_PICK_B = "请选择B岗（备岗）责任人："
LEDGER_ASK_DEADLINE = "办结时限：默认 {days} 个工作日（已跳过节假日）；也可输入日期，如 12-15 或 2026-12-15。"
LEDGER_DEFAULT_DEADLINE = "默认：{date}"
LEDGER_BAD_DATE = "日期格式不对，请输入如 12-15 或 2026-12-15，或选择默认时限。"
LEDGER_CONFIRM_ASSIGN = "请确认交办：\n{item}\n责任单位：{unit}\nA岗：{a}　B岗：{b}\n办结时限：{deadline}"
TODO_PICK_ITEM = "您负责的问题（A岗或B岗）："
TODO_EMPTY = "您目前没有需要办理的问题。"
MINE_PICK_ITEM = "您反映过的问题："
MINE_EMPTY = "您还没有反映过问题。发送 /report 反映问题。"
REPORT_ASK_CATEGORY = "📮 反映问题：请选择问题类型："
REPORT_ASK_CONTENT = "请描述您反映的问题（{limit}字以内）："
REPORT_ASK_PHONE = "可选：留下联系电话，便于回访（仅经办人员可见），或选择“跳过”。"
REPORT_BAD_PHONE = "电话号码格式不对，请输入手机号或座机号（如 0571-87654321），或选择“跳过”。"
REPORT_SUMMARY = "请确认：\n类型：{category}\n内容：{content}\n电话：{phone}"
REPORT_SAVED = "✅ 已收到，编号 #{id}。我们将交相关部门办理，原则上 {days} 个工作日内答复。发送 /mine 查看进展。"

# WeChat (公众号): no buttons in a reply, so no contact or location button either
WECHAT_LOCATION_HINT = "（发送位置：点输入框旁的“+”，选择“位置”；或回复“纬度,经度”）"
WECHAT_FILES_NOT_SENT = "（另有 {count} 个文件，微信公众号暂不能发送，请在 Telegram 或控制台中获取。）"
WECHAT_UNSUPPORTED = "暂不支持这类消息，请发送文字、图片或位置。回复“帮助”查看可用功能。"
WECHAT_MENU = {"visit": "入户走访", "contact": "日常走访", "progress": "我的进度", "help": "帮助", "visits": "走访"}
WECHAT_TEMPLATE_KINDS = {"deadline": "报表截止提醒", "digest-daily": "每日简报", "digest-weekly": "每周简报",
                         "callbacks": "差评回访提醒", "reply": "消息回复"}
WECHAT_TEMPLATE_KIND_OTHER = "工作提醒"
WECHAT_OUTSIDE_WINDOW_WAIT = "微信 48 小时客服消息窗口已关闭（用户最后互动：{last}），等待用户再次发消息"
WECHAT_OUTSIDE_WINDOW_GAVE_UP = "微信 48 小时客服消息窗口已关闭（用户最后互动：{last}），等待超过 {hours} 小时，已放弃"
WECHAT_OUTSIDE_WINDOW_DROP = "微信 48 小时客服消息窗口已关闭（用户最后互动：{last}），按 WECHAT_OUTSIDE_WINDOW=drop 放弃"
WECHAT_NEVER = "从未"
CONTACT_ASK_PROBLEM = "对方是否反映了问题？如有，请选择问题类型："
CONTACT_NO_PROBLEM = "没有反映问题"
OBJECT_PICK = "联系了哪位服务对象？"
OBJECT_NONE = "您名下没有服务对象，请联系管理员在花名册中补充（每人至少10名）。"
OBJECT_ASK_PROBLEM = "对方是否反映了问题？行业领域指本单位职能范围内、可自行整改的问题；其余为公共方面。"
OBJECT_NO_PROBLEM = "没有反映问题"
OBJECT_ASK_CATEGORY = "请选择问题类型："
OBJECT_SAVED_NO_PROBLEM = "✅ 已记录与 {name} 的联系。"
OBJECT_SAVED = "✅ 已记录 {name} 反映的问题（{remit}），列入问题台账，编号 #{id}。"
HELP_OBJECT = "/object — 联系服务对象、记录其反映的问题"

# Evidence of visits (走访真实性, bot/core/evidence.py)
LOCATION_MATCHES = "📍 位置相符，距该户约 {distance}。"
LOCATION_FAR = "📍 位置与该户登记地址相距约 {distance}，不相符（不影响提交）。"
LOCATION_INACCURATE = "📍 定位精度约 {accuracy}，距该户约 {distance}，精度不足以核对（不影响提交）。"
LOCATION_NO_COORDS = "📍 已记录位置（该户尚无坐标，无法核对）。"
LOCATION_FORWARDED = "📍 这是转发的位置，不能作为走访凭证；请在该户门口发送您自己的当前位置。"
LOCATION_TYPED = "📍 已记录输入的坐标（手动输入的坐标不作为走访凭证）。"
EVIDENCE_NAMES = {"confirmed": "住户确认", "location": "位置相符", "photo": "照片", "none": "无凭证"}
FLAG_SAME_PHOTO = "照片与第 {other} 号走访（{date}）的照片相同"
FLAG_TOO_FAST = "与上一次走访（第 {other} 号）相距约 {distance}，仅隔 {minutes} 分钟"
FLAG_BURST = "{minutes} 分钟内确认了 {count} 次走访"
FLAG_FORWARDED = "位置或照片是从其他聊天转发的"
FLAG_FAR = "走访位置距该户约 {distance}"
FLAG_SAME_ANSWERS = "全部 {count} 次走访的调查卷答案完全相同"
FLAG_NAMES = {"same_photo": "重复照片", "too_fast": "行程过快", "burst": "集中确认", "forwarded": "转发凭证",
              "far": "位置过远", "same_answers": "答案雷同"}
HELP_FLAGS = "/flags — 走访凭证与疑似走过场的记录"
FLAGS_HEADER = "🔍 走访凭证（{half_label}）：每名干部的走访按凭证强弱计数，⚠ 为疑似走过场的次数"
FLAGS_HEADER_MANY = "🔍 走访凭证（{half_label}），{cadres} 名干部："
FLAGS_CADRE_LINE = "• {name}：{shares}{flagged}"
FLAGS_FLAGGED = " ⚠ {count}"
FLAGS_LIST_HEADER = "⚠ 疑似走过场（按干部）："
FLAGS_LIST_LINE = "  {name} 第{visit}号走访（{date}）{kind}：{reason}"
FLAGS_NONE = "本半年还没有走访记录。"
FLAGS_MORE = "……另有 {count} 条，请在管理后台（控制台）的单位页面查看全部。"
UNIT_EVIDENCE = "    凭证：{shares}"

# --- The domain in one voice (ledger creation history, roster import safety) ---
RATING_ACTOR = "群众（差评）"
LEDGER_DETAIL_UNIT_UNASSIGNED = "责任单位：{unit}（未经交办）"

# Hardening (安全加固): binding lockout
BIND_LOCKED = ("绑定码连续输错次数过多，已暂停绑定，请 {minutes} 分钟后再试。"
               "如确认绑定码无误仍不能绑定，请向管理员重新索取。")


# -- 好差评 by the national rules (issue #11): confidentiality, the 作风办, appeals, one rating per service --

RATING_NEED_REASON = "差评请至少选择一项原因，或简要说明情况，以便核实整改。"
LEDGER_POST_IS_SUBJECT = "{post}不能是{name}：这条差评评价的就是{name}本人，须回避，请另选他人。"
ROSTER_NO_OFFICE = ("名册中没有能查看全部单位的人员：请在“干部”表的“角色”列为作风办人员填写“作风办”。"
                    "否则差评涉及主管时无人受理，全市的评价、排名无人查看。")
SPOT_RULINGS = {"visit_stands": "走访属实，恢复计入", "denial_stands": "确认未走访，不予计入"}
SPOT_RULING_MARK = "⚖ 待裁定："
SPOT_DISPUTED = "该走访已标记为“有异议”，暂不计入进度、报表和排名，待您在抽查列表中裁定（标 ⚖ 的条目）。"
SPOT_ASK_RULING = ("⚖ 裁定有异议的走访：\n住户：{household}\n走访干部：{cadre}（{unit}）\n走访日期：{date}\n"
                   "住户的说法：{note}\n请核实后裁定：")
SPOT_RULED = "已裁定：{household} — {ruling}。"
SPOT_NOTICE_DISPUTED = ("📞 电话抽查：{household}（{address}）表示 {date} 未接受过走访。"
                        "这次走访暂不计入进度、报表和排名，待主管裁定；如有走访照片等佐证，请向主管说明。")
SPOT_NOTICE_RULED = "⚖ 您对 {household} 的走访，经抽查复核裁定：{ruling}。"
APPEAL_STATES = {"pending": "待复核", "upheld": "维持评价", "mistaken": "撤销（误评）", "malicious": "撤销（恶意评价）"}
APPEAL_USAGE = "申诉请发送：/appeal 评价号 申诉理由（例如 /appeal 12 当天系统故障，已当场说明），之后可附一张照片作为佐证"
APPEAL_NONE = "没有可申诉的差评（差评须在评价后规定的工作日内申诉）。"
APPEAL_LIST_HEADER = "⚖ 可申诉的差评（评价后 {days} 个工作日内）："
APPEAL_LIST_LINE = "• 评价号 {id}：{date} {level}，原因：{reasons}；{until} 前可申诉"
APPEAL_NEED_REASON = "请写明申诉理由。" + "\n" + APPEAL_USAGE
APPEAL_NOT_YOURS = "评价号 {id} 不是针对您的差评，不能申诉。"
APPEAL_ALREADY = "评价号 {id} 已申诉过，请等待作风办复核结果。"
APPEAL_TOO_LATE = "评价号 {id} 已超过申诉期限（评价后 {days} 个工作日，截至 {date}）。"
APPEAL_FILED = "已提交申诉（申诉号 {id}，评价号 {rating}），作风办复核后会通知您。评价人不会得知申诉人。"
APPEAL_FILED_PHOTO = "\n📎 佐证照片已随申诉提交。"
APPEAL_ASK_REASON = "请写明对评价号 {rating} 的申诉理由（{limit} 字以内）："
APPEAL_ASK_PHOTO = ("如有佐证，可发送一张照片（请直接拍摄或从相册选择；转发的照片不能作为佐证），"
                    "或回复“跳过”直接提交评价号 {rating} 的申诉。")
APPEAL_PHOTO_FORWARDED = "转发的照片不能作为佐证：请发送您自己拍摄的照片，或回复“跳过”。"
APPEAL_PHOTO_NOT_RECEIVED = "这张照片没能收到，请重新发送，或回复“跳过”。"
APPEAL_PHOTO_NOT_PICTURE = "收到的不是可识别的图片，请发送一张照片（JPG、PNG 等），或回复“跳过”。"
APPEAL_NOTICE_PHOTO = "📎 附照片 1 张（申诉人本人拍摄提交），请在控制台查看：{url}"
APPEAL_NOTICE_FILED = ("⚖ 新的差评申诉：申诉号 {id}（评价号 {rating}），申诉人 {cadre}，原评价“{level}”。\n"
                       "申诉理由：{reason}\n发送 /appeals 查看并复核。")
APPEAL_NOTICE_DECIDED = "⚖ 您的申诉（申诉号 {id}，评价号 {rating}）复核结果：{decision}{note}。"
APPEAL_OFFICE_ONLY = "申诉复核由作风办办理：您没有复核权限。"
APPEAL_NO_SUCH = "没有申诉号 {id}。"
APPEAL_DECIDED = "申诉号 {id} 已复核过，不能重复复核。"
APPEAL_OWN = "这条申诉涉及您本人，须回避，请由作风办其他人员复核。"
APPEAL_NEED_DECISION_REASON = "撤销评价须写明理由，例如：/appeals 3 误评 评价人选错了干部。"
APPEALS_NONE = "没有待复核的申诉。"
APPEALS_HEADER = "⚖ 待复核的申诉 {count} 条："
APPEALS_LINE = "• 申诉号 {id}（评价号 {rating}）{cadre}：原评价“{level}”，原因：{reasons}；说明：{comment}\n  申诉理由：{reason}"
CONSOLE_APPEAL_PICK = "请选择复核结果：维持、误评或恶意（撤销须写理由）。"
APPEALS_PHOTO = "\n  📎 附照片，请在控制台查看：{url}"
APPEALS_USAGE = "复核请发送：/appeals 申诉号 维持|误评|恶意 理由（撤销须写理由）"
APPEAL_DECIDED_OK = "已复核申诉号 {id}：{decision}。已通知申诉人。"
RATINGS_APPEAL_MARK = "【{state}】"
RATINGS_VOIDED = "另有 {count} 条经申诉复核撤销，不计入统计。"
HELP_SERVICE_QR = "/serviceqr — 一事一评：为刚完成的走访或服务生成一次性评价二维码"
HELP_STATUS = "/status 评价编号 — 查询评价的办理进度"
HELP_APPEAL = "/appeal 申诉 — 对针对您的差评提出申诉（评价后规定工作日内）"
HELP_APPEALS = "/appeals 复核 — 作风办复核干部的差评申诉"
PAGE_COMMENT = "情况说明（未选原因时必填，{limit}字以内）"  # a 差评 needs a reason or this
SUPERVISION_PHONE = "监督电话 {phone}"
RATING_NUMBER = "评价编号：{number}。凭此编号可查询办理进度：{url}（或在对话中发送 /status 编号）"
FOLLOW_UP_STAGES = ("受理", "已交办", "已整改", "已回访")
FOLLOW_UP_DONE = "✔"
FOLLOW_UP_TODO = "○"
FOLLOW_UP_HEAD = "评价编号 {number}：{date} 的评价“{level}”。"
FOLLOW_UP_NOW = "目前进度：{stage}。"
FOLLOW_UP_NONE_NEEDED = "感谢您的评价，此评价无需后续办理。"
FOLLOW_UP_UNKNOWN = "没有找到这个评价编号，请核对后重新输入（12位数字）。"
FOLLOW_UP_USAGE = "请发送：/status 评价编号（提交评价后显示的12位数字）"
PAGE_STATUS_TITLE = "评价办理进度"
PAGE_PRIVACY_TITLE = "个人信息说明"
PAGE_PRIVACY_LINK = "个人信息说明"
PAGE_PRIVACY_LINES = (
    "我们保存：您的评价等级、所选原因；您自愿填写的情况说明和联系电话。不保存您的姓名、微信号或网络地址（仅保存不可还原的校验值，用于防刷评）。",
    "谁能看到：联系电话仅向负责回访的工作人员完整显示，每次查看均记入审计日志；被评价的干部本人看不到您的电话和身份。",
    "保存多久：差评办结回访后 {days} 天，您的联系电话和情况说明即被删除，只保留评价等级和原因用于统计。",
    "您的权利：工作人员不得诱导、干预或打听您的评价；如遇此类情况，请拨打监督电话反映。",
)
SERVICE_QR_ISSUED = ("📱 一事一评：{service}的评价二维码（一次有效，{minutes} 分钟内、{until} 前）。\n"
                     "请群众用自己的手机扫码，或打开链接评价：{url}\n"
                     "请勿代为评价，也不要诱导评价内容。")
SERVICE_QR_TELEGRAM = "在 Telegram 中评价：{link}"
SERVICE_QR_FOR_VISIT = "对 {household} 的本次走访"
SERVICE_QR_FOR_CONTACT = "本次日常走访"
SERVICE_QR_WALK_IN = "本次服务"
PAGE_SERVICE_USED_TITLE = "已评价"
PAGE_SERVICE_USED = "这个服务评价码已经评价过了，一次服务只能评价一次。感谢您的参与！"
PAGE_SERVICE_EXPIRED_TITLE = "评价码已过期"
PAGE_SERVICE_EXPIRED = "这个服务评价码已过期。如需评价，请扫描工作人员的评价卡二维码。"
PAGE_SERVICE_INTRO = "本次服务的评价（一次有效）"
SPOT_HOUSEHOLD_CONFIRMED = "☑ 住户已扫码评价本次走访（住户确认）"
CARD_INSTRUCTION_WINDOW = "扫码评价本窗口服务"
CARD_NOT_SERVING = "{name} 是{role}，不直接服务群众，不印制评价卡（如在窗口值守或联系住户，请先在名册中登记）。"

# WeCom / 政务微信 (企业微信自建应用): button cards, the directory sync, the menu
WECOM_BIND_HINT = "（如通讯录未显示您的手机号，请向管理员索取绑定码，回复“绑定 绑定码”，例如：绑定 ABCD2345）"
WECOM_LOCATION_HINT = "（发送位置：点输入框旁的“+”，选择“位置”）"
WECOM_UNSUPPORTED = "暂不支持这类消息，请发送文字、图片或位置，或点卡片上的按钮。回复“帮助”查看可用功能。"
WECOM_CARD_TITLE = "请选择："
WECOM_CARD_DONE = "已处理"  # the grey text of a card's buttons once one was pressed
WECOM_CARD_CHOSEN = "➤ {label}"  # a pressed card's button, greyed out with the choice
WECOM_CARD_CHOSEN_SOURCE = "已选：{label}"  # the source line of the card that replaced a pressed one
WECOM_FILE_SENT = "（附件 {name}）"
WECOM_MENU_GROUPS = {"visits": "走访", "ledger": "台账", "more": "更多"}
WECOM_SYNC_HEADER = "通讯录同步：读取成员 {members} 人，匹配干部 {matched} 人（新绑定 {bound} 人）。"
WECOM_SYNC_MATCHED = "已匹配（按手机号，已自动绑定）："
WECOM_SYNC_ROSTER_ONLY = "名册中有、通讯录中没有（或手机号不一致）的干部："
WECOM_SYNC_DIRECTORY_ONLY = "通讯录中有、名册中没有的成员："
WECOM_SYNC_NO_MOBILE = "通讯录未提供手机号的成员（无法自动匹配，请发绑定码：python -m bot bind-code 手机号）："
WECOM_QUOTA_WAIT = "企业微信应用今日发送额度（WECOM_DAILY_QUOTA={quota}）已用完，明日继续发送"
WECOM_NOT_A_MEMBER = "该成员不在应用可见范围内或已离职"

# ---------------------------------------------------------------------------------------------
# The 作风办 web console (控制台): login from chat, and the pages' words
HELP_LOGIN = "/login — 登录电脑端控制台（发送“登录 123456”确认登录页上的验证码）"
LOGIN_LINK = ("🔐 控制台登录链接（{minutes} 分钟内有效，只能使用一次，请勿转发）：\n{url}\n"
              "在电脑上登录时，也可以打开 {page}，把页面上的 6 位数字发给我：登录 123456")
LOGIN_CODE_OK = "✅ 已确认，{name}。请回到电脑上的登录页，点击“我已发送，进入控制台”。"
LOGIN_CODE_WRONG = "验证码不对或已过期（{minutes} 分钟内有效）。请刷新登录页获取新的验证码再发送。"
LOGIN_TOO_MANY = "错误次数过多，请 {minutes} 分钟后再试。"
CONSOLE_TITLE = "干部作风建设控制台"
CONSOLE_NAV = {"overview": "总览", "units": "单位", "ledger": "台账", "ratings": "评价", "appeals": "申诉", "reports": "报表",
               "admin": "管理", "audit": "审计", "sessions": "我的登录", "spotchecks": "抽查"}
CONSOLE_LOGIN_INTRO = "本系统不设密码：用已绑定的聊天账号确认身份。"
CONSOLE_LOGIN_WAYS = ("方法一：在 Telegram 或微信中向机器人发送 /login（登录），打开它回复的链接。",
                      "方法二：点击下方按钮获取 6 位验证码，把“登录 验证码”发给机器人，再回到本页点击进入。")
CONSOLE_GET_CODE = "获取验证码"
CONSOLE_WECOM_LOGIN = "企业微信登录"
CONSOLE_WECOM_WAY = "企业微信（政务微信）成员：点击“企业微信登录”，用企业微信扫码，或在企业微信中打开本页直接确认，无需验证码。"
CONSOLE_WECOM_TITLE = "企业微信登录未完成"
CONSOLE_WECOM_STATE_INVALID = ("企业微信登录请求无效、已过期或已使用（须从本浏览器的登录页发起，{minutes} 分钟内完成，只能使用一次）。"
                               "请返回登录页重新点击“企业微信登录”。")
CONSOLE_WECOM_CODE_INVALID = "企业微信未能确认您的身份：登录凭据无效、已过期或已使用。请返回登录页重新点击“企业微信登录”。"
CONSOLE_WECOM_CANCELLED = "没有收到企业微信的授权（可能已取消）。请返回登录页重新点击“企业微信登录”。"
CONSOLE_WECOM_NOT_MEMBER = "只有本单位企业微信（政务微信）通讯录中的成员可以用企业微信登录。"
CONSOLE_WECOM_UNKNOWN_TITLE = "企业微信账号尚未关联干部"
CONSOLE_WECOM_UNKNOWN = ("您的企业微信账号（{userid}）还没有与名册中的干部关联，因此无法登录。",
                         "请联系管理员：运行 python -m bot wecom-sync 同步通讯录（按手机号与名册匹配）；通讯录未提供您的手机号时，"
                         "请管理员为您生成绑定码，在企业微信应用中发送“绑定 绑定码”后再登录。")
CONSOLE_WECOM_UNAVAILABLE = "暂时无法连接企业微信，未能完成登录。请稍后再试，或用本页的其他方法登录。"
CONSOLE_BACK_TO_LOGIN = "返回登录页"
CONSOLE_CODE_SHOWN = "请在 {minutes} 分钟内向机器人发送：登录 {code}"
CONSOLE_CODE_ENTER = "我已发送，进入控制台"
CONSOLE_CODE_WAITING = "还没有收到确认：请先把“登录 {code}”发给机器人。"
CONSOLE_CODE_EXPIRED = "验证码已过期或已使用，请重新获取。"
CONSOLE_LINK_CONFIRM = "点击下方按钮登录控制台。"
CONSOLE_LINK_BUTTON = "登录"
CONSOLE_LINK_INVALID = "登录链接无效、已过期或已使用（有效期 {minutes} 分钟，只能使用一次）。请在聊天中重新发送 /login。"
CONSOLE_TOO_MANY = "尝试次数过多，请 {minutes} 分钟后再试。"
CONSOLE_LOGGED_OUT = "已退出登录。"
CONSOLE_EXPIRED = "登录已过期或已退出，请重新登录。"
CONSOLE_NOT_FOUND = "页面不存在，或不在您的查看范围内。"
CONSOLE_CSRF = "表单已过期或来源不明，未做任何更改。请返回页面刷新后重试。"
CONSOLE_FORBIDDEN = "您没有使用这个页面的权限。"
CONSOLE_DONE = "已完成：{what}"
CONSOLE_ROLE_NAMES = {"cadre": "干部", "supervisor": "主管", "admin": "管理员"}
CONSOLE_BEHIND_LEGEND = {"visits": "入户走访未完成", "objects": "服务对象不足 {minimum} 名", "ok": "已完成"}
CONSOLE_BUCKETS = {"new": "待交办", "open": "办理中", "overdue": "已逾期", "closed": "待回访"}
CONSOLE_SOURCES = {"visit": "入户走访", "contact": "日常走访", "service_object": "服务对象", "rating": "群众评价",
                   "complaint": "群众反映", "hotline": "热线"}
CONSOLE_ROSTER_ERRORS = "名册有 {count} 处错误，未导入任何数据。请改正后重新上传："
CONSOLE_ROSTER_DONE = "名册已导入。"
CONSOLE_ROSTER_BAD_FILE = "请上传 .xlsx 格式的名册文件（可从“管理”页下载模板）。"
CONSOLE_REVEAL_REFUSED = "只有负责回访的人员可以查看完整号码。"
CONSOLE_BINDCODE_ISSUED = "{name}（{unit}）的绑定码：{code}，{expires} 前有效，只能使用一次。"
CONSOLE_REVOKED = "已作废 {name} 的评价卡，请重新印制。"
CONSOLE_TOTAL = "合计"
CONSOLE_MISSING_LEDGER = "台账未办结 {count} 项"
CONSOLE_MISSING_OBJECTS = "{count} 名干部服务对象不足 {minimum} 名"
CONSOLE_MISSING_VISITS = "还有 {count} 户未走访（{cadres} 名干部未完成）"
CONSOLE_NOT_FOUND_TITLE = "未找到"
CONSOLE_ERROR_TITLE = "未能完成"
CONSOLE_TOO_MANY_TITLE = "尝试过于频繁"
