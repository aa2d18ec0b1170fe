"""Our own message types: what any channel hands to the core, and what the core hands back.

The core never sees a Telegram Update or a WeChat XML message. A channel translates its inbound
event into an ``Inbound`` and renders each ``Reply``: options become inline buttons on Telegram,
numbered lines on WeChat and the console. Option tokens are opaque and short (well under
Telegram's 64-byte callback data); users may also answer with the option's number or its words.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SharedContact:
    """A contact card the user shared; ``user_id`` is whose card it is, if the channel knows."""

    phone: str
    user_id: str | None = None


@dataclass(frozen=True)
class Location:
    """A location the user sent, as the channel got it: its datum (Telegram: WGS-84; WeChat and WeCom:
    GCJ-02), the accuracy the phone reported (metres), and whether it is evidence at all: a location
    forwarded from another chat, or typed as numbers, is not."""

    latitude: float
    longitude: float
    accuracy: float | None = None
    datum: str = "wgs84"
    note: str | None = None  # "forwarded" or "typed"


@dataclass(frozen=True)
class Inbound:
    """One event from a user: a text, a command, a button press, a contact, a photo or a location."""

    channel: str
    user_id: str
    text: str | None = None
    command: str | None = None  # without the slash, lower case: "visit"
    args: str = ""
    token: str | None = None  # the opaque token of a pressed button
    contact: SharedContact | None = None
    photo_ref: str | None = None  # a channel-specific file reference, kept as is
    photo: bytes | None = None  # the picture itself, where the channel could fetch it (for its hashes)
    forwarded: bool = False  # the message was forwarded from another chat: not the user's own evidence
    location: Location | None = None
    event_key: str | None = None  # the channel's id for this event, to drop redeliveries
    display_name: str | None = None
    # What the channel can show, so answers name only what exists there: buttons to press (else
    # options are numbered lines), a button that shares the user's own phone number.
    buttons: bool = True
    share_contact: bool = True


@dataclass(frozen=True)
class Option:
    """A choice offered to the user: the label shown and the token a button sends back."""

    label: str
    token: str


@dataclass(frozen=True)
class File:
    """A document or picture sent with a reply (an exported form, a ranking chart)."""

    filename: str
    content_type: str
    content: bytes

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass
class Reply:
    """One message to the user. ``options`` are rows of choices, numbered 1..n in reading order;
    ``files`` go with the text (channels send them as documents or pictures)."""

    text: str
    options: list[list[Option]] = field(default_factory=list)
    request_contact: bool = False
    request_location: bool = False
    files: list[File] = field(default_factory=list)
    files_dropped: int = 0  # files this reply had when first sent, not kept for sending it again

    def flat_options(self) -> list[Option]:
        return [option for row in self.options for option in row]

    def numbered_text(self) -> str:
        """The text with options as numbered lines, for channels without buttons."""
        options = self.flat_options()
        if not options:
            return self.text
        lines = [f"{i}. {option.label}" for i, option in enumerate(options, 1)]
        return self.text + "\n\n" + "\n".join(lines) + "\n（回复编号或选项文字）"


@dataclass
class Outcome:
    """What the core decided for one inbound event.

    ``chosen`` is the label of the option a button press selected (a channel may mark the old
    message with it); ``stale`` says the press was for an outdated message; ``duplicate`` says the
    event was already handled: nothing new is to be said (``replies`` is empty), but ``resend`` holds
    the answer stored for it when no channel confirmed sending it (``Engine.confirm``): the first
    attempt died or could not reach the user, and this redelivery is the chance to send it.
    """

    replies: list[Reply] = field(default_factory=list)
    chosen: str | None = None
    stale: bool = False
    duplicate: bool = False
    resend: list[Reply] = field(default_factory=list)
    # Whether the user is bound after the event, and their role: a channel with per-user command
    # menus (Telegram) gives each the menu of their role. None for a redelivery.
    audience: tuple[bool, str | None] | None = None
    # The answer as a channel rendered it (WeChat's XML; "" for an answer sent another way), set by
    # its ``before_commit`` hook: kept with the event and given back on a redelivery, byte for byte.
    rendered: str | None = None
