"""Supervisors' tools (作风办): the report forms 附件1–5, rankings, spot-checks by phone.

    forms      the five forms of seed 004 as XLSX workbooks (openpyxl), one sheet per unit
    rankings   units and cadres by satisfaction, visit completion and ledger timeliness, in SQL
               aggregates, with the bottom (末位) named and a PNG chart
    spotcheck  电话随机访问: a seeded, reproducible sample of visits per cadre, outcomes, summary
    commands   /export and /ranking in chat (the spot-check flow is bot.core.flows.spotcheck)
    cli        the operator commands: export, ranking, spot-check, import-hotline

The hotline import (12345/89000 items in the 附件5 layout) is bot.imports.hotline.
"""
