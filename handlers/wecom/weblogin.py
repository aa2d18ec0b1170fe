"""WeCom's web login (企业微信登录) into the web console: where the browser is sent, and the code it
brings back turned into the member's userid.

Two pages of WeCom log a member in, both ending in a redirect to ``redirect_uri?code=CODE&state=STATE``
(no code when the member declined):

- outside WeCom, the QR login page (企业微信Web登录): ``<WECOM_LOGIN_BASE_URL>/wwlogin/sso/login?
  login_type=CorpApp&appid=<corp id>&agentid=<agent id>&redirect_uri=<url>&state=<state>``; the member
  scans it with WeCom on the phone, or confirms in the desktop client;
- inside the WeCom client (its browser's User-Agent says ``wxwork``), OAuth2 silent authorisation
  (网页授权登录): ``<WECOM_OAUTH_BASE_URL>/connect/oauth2/authorize?appid=<corp id>&redirect_uri=<url>
  &response_type=code&scope=snsapi_base&state=<state>&agentid=<agent id>#wechat_redirect``.

政务微信 and other private deployments serve both pages on hosts of their own (the two settings).
The redirect URI's host must be the app's trusted domain (可信域名 / 授权回调域) in WeCom's admin.

The code is turned into the member's userid by ``WeComApi.login_userid`` (``auth/getuserinfo``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from bot.config import Settings


def in_wecom_client(user_agent: str | None) -> bool:
    """The WeCom (政务微信) client's own browser: it logs the member in without a QR code."""
    return "wxwork" in (user_agent or "").lower()


def login_url(settings: Settings, redirect_uri: str, state: str, *, in_client: bool) -> str:
    """Where to send the browser: WeCom's OAuth2 page inside its client, its QR login page elsewhere."""
    if in_client:
        query = urlencode({"appid": settings.wecom_corp_id, "redirect_uri": redirect_uri, "response_type": "code",
                           "scope": "snsapi_base", "state": state, "agentid": settings.wecom_agent_id})
        return f"{settings.wecom_oauth_base_url.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"
    query = urlencode({"login_type": "CorpApp", "appid": settings.wecom_corp_id, "agentid": settings.wecom_agent_id,
                       "redirect_uri": redirect_uri, "state": state})
    return f"{settings.wecom_login_base_url.rstrip('/')}/wwlogin/sso/login?{query}"
