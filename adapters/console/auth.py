"""Signing in to the console with the API token, signing out, and the check every other
console page makes first (without a session: 303 to the sign-in page)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery
from litestar.response import Redirect

from .context import ConsoleContext
from .rendering import page
from .session import COOKIE, same_origin

log = structlog.get_logger("voxledger.console")

LOGIN = "/console/login"
HOME = "/console/conversations"


class SignIn(msgspec.Struct, frozen=True, kw_only=True):
    """The sign-in form: the API token, and the console page to go on to."""

    token: str = ""
    next: str = HOME


def own_origin(request: Request[Any, Any, Any]) -> str:
    """scheme://host[:port] of this server as the browser addressed it."""
    url = request.base_url
    return f"{url.scheme}://{url.netloc}"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page on this server, never elsewhere."""
    if not target:
        return HOME
    parts = urlsplit(target)
    path_ok = parts.path.startswith("/console/") and not parts.path.startswith(LOGIN)
    if parts.scheme or parts.netloc or not path_ok or "\\" in target:
        return HOME
    return target


def session_cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    """The session cookie: script cannot read it, other sites' requests do not carry it,
    and over https it travels over https only."""
    return Cookie(
        key=COOKIE,
        value=value,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=max_age,
    )


def require_session(console: ConsoleContext, request: Request[Any, Any, Any]) -> Response | None:
    """None for a request with a valid session; else a 303 to the sign-in page that comes
    back here afterwards."""
    if console.sessions.valid(request.cookies.get(COOKIE)):
        return None
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"{LOGIN}?next={quote(here, safe='')}", status_code=303)


@get("/login", include_in_schema=False, sync_to_thread=False)
def login_page(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    next: FromQuery[str | None] = None,
) -> Response:
    """The sign-in form (or straight on, with a valid session)."""
    target = safe_next(next)
    if console.sessions.valid(request.cookies.get(COOKIE)):
        return Redirect(target, status_code=303)
    return _form(request, console, target)


@post("/login", include_in_schema=False, sync_to_thread=False)
def login(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    data: Annotated[SignIn, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response:
    """Check the token; on a match start a session and go on to the page asked for."""
    target = safe_next(data.next)
    if not _from_console(request):
        return _form(
            request, console, target, "Refused: the form was not sent from this console.", 403
        )
    if not console.sessions.enabled:
        return _form(request, console, target, status_code=403)
    if not console.sessions.token_matches(data.token.strip()):
        log.warning("console.sign_in_refused", client=_client(request))
        return _form(request, console, target, "That is not the API token.", 401)
    log.info("console.signed_in", client=_client(request))
    lifetime = int(console.sessions.lifetime.total_seconds())
    response = Redirect(target, status_code=303)
    response.set_cookie(session_cookie(request, console.sessions.issue(), lifetime))
    return response


@post("/logout", include_in_schema=False, sync_to_thread=False)
def logout(request: Request[Any, Any, Any], console: NamedDependency[ConsoleContext]) -> Response:
    """End the session in this browser and return to the sign-in page."""
    if not _from_console(request):
        return page(
            request,
            "error.html",
            403,
            title="Refused",
            message="The form was not sent from this console.",
        )
    response = Redirect(LOGIN, status_code=303)
    response.set_cookie(session_cookie(request, "", 0))
    return response


def _form(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    target: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    response = page(
        request,
        "login.html",
        status_code,
        title="Sign in",
        next=target,
        error=error,
        enabled=console.sessions.enabled,
    )
    return response


def _from_console(request: Request[Any, Any, Any]) -> bool:
    # With SameSite=Strict the cookie already stays home; this refuses forms posted from
    # other sites (signing a victim into the attacker's session, or out of their own).
    return same_origin(
        request.headers.get("origin"), request.headers.get("referer"), own_origin(request)
    )


def _client(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None
