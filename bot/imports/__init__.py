"""Operator imports (导入): the roster (名册: 单位, 干部, 联户, 服务对象, 窗口) and hotline items (附件5).

Application code, not storage: they check rows against the domain's rules (phones, roles, the
ledger's states) and write through the models; ``storage`` stays the tables and the engine.
"""
