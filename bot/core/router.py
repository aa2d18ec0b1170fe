"""Routing one event inside its unit of work: to a command, the current flow, or a short answer.

The router reads the feature list (bot/core/features.py) for which feature a command or a typed word
names and who may use it; a user in the middle of a flow has what they type taken as the flow's
answer, and sees where they are after any command. Role checks happen here, once, so no feature
checks them again.
"""

from __future__ import annotations

from dataclasses import replace

from bot import texts
from bot.config import Settings
from bot.core import commands
from bot.core.dialogue import Context, Flow
from bot.core.features import REGISTRY, Registry
from bot.core.feature import RANK, rank


def _say_typed(ctx: Context, button_text: str, typed_text: str, **kwargs) -> None:
    ctx.say(button_text if ctx.inbound.buttons else typed_text, **kwargs)


class Router:
    """Carries out one event against the user's dialogue, given the features."""

    def __init__(self, settings: Settings, registry: Registry = REGISTRY):
        self.registry = registry
        self.flows: dict[str, Flow] = {f.name: f.flow(settings) for f in registry if f.flow is not None}
        self.long_flows = frozenset(f.name for f in registry if f.flow is not None and f.long)

    # -- before the transaction: where the event runs ----------------------------------------------

    def feature_named(self, inbound) -> str:
        """The feature a command or a leading word of the event names ("" for none): the dispatch
        decision is taken on it before the user's state is read."""
        name = inbound.command
        if name is None:
            found = self.registry.command_of(inbound.text)
            name = found[0] if found else None
        return (name or "").lower()

    def is_long(self, inbound) -> bool:
        feature = self.registry.get(self.feature_named(inbound))
        return feature is not None and feature.long

    def reads_only(self, inbound) -> bool:
        feature = self.registry.get(self.feature_named(inbound))
        return feature is not None and feature.reads_only

    # -- in the transaction ---------------------------------------------------------------------

    def route(self, ctx: Context) -> None:
        inbound = ctx.inbound
        flow = self.flows.get(ctx.dialogue.flow or "")
        if ctx.dialogue.flow is not None and (flow is None or ctx.dialogue.step not in flow.steps
                                              or (flow.requires_cadre and ctx.cadre is None)):
            # A flow that no longer exists after an upgrade, or a binding removed mid-flow.
            ctx.end_flow()
            flow = None
        command, args = inbound.command, inbound.args
        if command is None and ctx.dialogue.flow is None:
            found = self.registry.command_of(inbound.text)
            if found is not None:
                command, args = found
        if command is not None:
            if args != inbound.args or command != inbound.command:
                ctx.inbound = inbound = replace(inbound, command=command, args=args, text=None)
            return self._command(ctx, command.lower())

        if flow is not None:
            return flow.feed(ctx)
        if inbound.contact is not None:
            return commands.bind_by_contact(ctx)
        if inbound.token is not None:
            ctx.stale = True
            return _say_typed(ctx, texts.STALE_BUTTON, texts.STALE_OPTION_TYPED)
        if ctx.cadre is None:
            return self.not_bound(ctx)
        ctx.say(texts.UNKNOWN_INPUT)

    @staticmethod
    def not_bound(ctx: Context) -> None:
        ctx.say(texts.NOT_BOUND if ctx.inbound.share_contact else texts.NOT_BOUND_TYPED, request_contact=True)

    def _command(self, ctx: Context, name: str) -> None:
        flow = self.flows.get(ctx.dialogue.flow or "")
        title = texts.FLOW_NAMES.get(flow.name, "") if flow is not None else ""
        if name == "cancel":
            if flow is None:
                return ctx.say(texts.NOTHING_TO_CANCEL)
            ctx.end_flow()
            return ctx.say(texts.CANCELLED.format(flow=title))
        if name == "resume":
            if flow is None:
                return ctx.say(texts.NOTHING_TO_CANCEL)
            ctx.say(texts.RESUME.format(flow=title))
            return flow.prompt(ctx)

        feature = self.registry.get(name)
        if feature is None or not feature.command:
            ctx.say(texts.UNKNOWN_COMMAND.format(command=name[:30]))
        elif feature.role is not None and ctx.cadre is None:
            return self.not_bound(ctx)
        elif rank(ctx.cadre) < RANK[feature.role]:
            ctx.say(texts.ROLE_FORBIDDEN.format(command=name, role=texts.ROLE_NAMES[feature.role]))
        elif feature.flow is not None:
            if flow is None:
                return self.flows[name].start(ctx)
            if flow.name == name:
                ctx.say(texts.RESUME.format(flow=title))
            else:
                ctx.say(texts.FLOW_BUSY.format(flow=title))
        else:
            feature.run(ctx)
            if flow is not None and name == "help":
                _say_typed(ctx, texts.HELP_IN_FLOW.format(flow=title), texts.HELP_IN_FLOW_TYPED.format(flow=title))
        # Whatever was said, a user in the middle of a flow sees where they are.
        if flow is not None and ctx.dialogue.flow == flow.name:
            flow.prompt(ctx)
