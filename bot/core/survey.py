"""The survey (调查卷) and the difficulty categories (问题类型), loaded from data, checked on load."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bot.errors import SettingFileError

DEFAULT_SURVEY = Path(__file__).resolve().parent.parent / "data" / "survey.toml"

# 问题类型 by the household's kind, as listed in the campaign documents (附件2 / 附件4).
CATEGORIES = {
    "居": ("城建", "环保", "物业", "治安", "教育", "医疗", "文体活动", "干部作风"),
    "村": ("治安", "教育", "医疗", "文化生活", "居住环境", "干部作风"),
}


class SurveyFileError(SettingFileError, ValueError):
    """The survey file is malformed; the message names the question and the field."""


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    kind: str  # "choice" or "text"
    options: tuple[str, ...] = ()
    optional: bool = False
    label: str = ""  # short name for summaries and forms; the text when not given


def parse_survey(raw: dict, source: str = "survey") -> tuple[Question, ...]:
    items = raw.get("question")
    if not isinstance(items, list) or not items:
        raise SurveyFileError(f"{source}: 至少需要一个 [[question]]")
    questions: list[Question] = []
    seen: set[str] = set()
    for n, item in enumerate(items, 1):
        where = f"{source}: 第{n}题"
        if not isinstance(item, dict):
            raise SurveyFileError(f"{where}: 应是 [[question]] 表，实为 {item!r}")
        qid, text, kind = item.get("id"), item.get("text"), item.get("kind", "choice")
        if not isinstance(qid, str) or not qid.strip():
            raise SurveyFileError(f"{where}: 缺少 id")
        if qid in seen:
            raise SurveyFileError(f"{where}: id “{qid}” 重复")
        if not isinstance(text, str) or not text.strip():
            raise SurveyFileError(f"{where}（{qid}）: 缺少 text")
        if kind not in ("choice", "text"):
            raise SurveyFileError(f"{where}（{qid}）: kind 只能是 choice 或 text")
        options = item.get("options", [])
        if kind == "choice" and (not isinstance(options, list) or len(options) < 2
                                 or not all(isinstance(o, str) and o.strip() for o in options)):
            raise SurveyFileError(f"{where}（{qid}）: choice 题需要至少两个 options")
        seen.add(qid)
        questions.append(Question(qid, text.strip(), kind, tuple(o.strip() for o in options) if kind == "choice" else (),
                                  bool(item.get("optional", False)), str(item.get("label") or text).strip()))
    return tuple(questions)


@lru_cache(maxsize=4)
def load_survey(path: Path | None = None) -> tuple[Question, ...]:
    path = Path(path) if path else DEFAULT_SURVEY
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SurveyFileError(f"SURVEY_FILE 指向的文件不存在：{path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SurveyFileError(f"{path}: TOML 格式错误：{exc}") from exc
    return parse_survey(raw, str(path))


def categories_for(area_kind: str) -> tuple[str, ...]:
    return CATEGORIES.get(area_kind, CATEGORIES["居"])
