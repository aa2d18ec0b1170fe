"""WeCom / 政务微信 (企业微信自建应用) channel.

Modules: ``crypto`` checks and seals what crosses the wire (signature, timestamp, AES with the corp
id, XML without DTDs); ``channel`` is the callback URL, translating callbacks into the core's
``Inbound``; ``render`` turns replies into button cards or text; ``api`` calls the WeCom API with
one access token shared through the database; ``transport`` delivers outbox rows within WeCom's
per-member limits; ``directory`` syncs the directory to the roster and builds the app's menu.
"""

from handlers.wecom.api import WeComApi, WeComApiError
from handlers.wecom.channel import WeComChannel
from handlers.wecom.transport import MemberLimiter, WeComTransport
from storage.wecom import CHANNEL

__all__ = ["CHANNEL", "MemberLimiter", "WeComApi", "WeComApiError", "WeComChannel", "WeComTransport"]
