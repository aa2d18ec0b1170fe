"""WeChat Official Account (公众号) channel.

Modules: ``crypto`` checks and seals what crosses the wire (signatures, timestamps, safe-mode AES,
XML without DTDs or entities, CDATA escaping); ``channel`` is the webhook, translating messages
into the core's ``Inbound`` and its replies into XML; ``api`` calls the WeChat API with one access
token shared through the database; ``transport`` delivers outbox rows (template or
customer-service messages, the 48-hour window); ``account`` creates scene QR codes and the menu.
"""

from handlers.wechat.api import WeChatApi, WeChatApiError
from handlers.wechat.channel import CHANNEL, WeChatChannel
from handlers.wechat.transport import WeChatTransport

__all__ = ["CHANNEL", "WeChatApi", "WeChatApiError", "WeChatChannel", "WeChatTransport"]
