"""A small Redis client for the redis kind: one connection, RESP2, the few commands it sends.

redis-py (62 modules with every command mixin, cluster, sentinel and cryptography: 6.9 MiB
of RSS) did this before; the probe needs a connection it keeps, AUTH, CLIENT SETNAME,
SELECT, one command at a time and one pipeline. hiredis, the C parser redis-py itself can
use, parses the replies (`hiredis.Reader`) and encodes the commands (`hiredis.pack_command`)
over asyncio streams. It is imported by the first connection, so a config without a redis
target never loads it.

Every network step (connect and TLS handshake, each command's round trip, the pipeline)
is bounded by the connection's timeout, and a peer that is not Redis fails with a
`ProtocolError` instead of a hang. No exception text repeats the URL or the password.

The exceptions (`RedisError` and below) keep redis-py's names and messages where the probe
or its readers rely on them: an error reply's first word chooses the class and is dropped
from the text as redis-py drops it ("NOPERM this user has no permissions..." is a
`NoPermissionError` "this user has no permissions...").

    RedisError
    ├── RedisConnectionError   connect failed, the connection closed or broke (see __cause__)
    ├── ProtocolError          the peer does not speak RESP, or its reply is too large
    └── ResponseError          an error reply
        ├── AuthenticationError  WRONGPASS, NOAUTH, a password the server does not expect
        ├── NoPermissionError    NOPERM: the ACL forbids the command
        ├── BusyLoadingError     LOADING: the server is loading its dataset
        └── MaxClientsError      ERR max number of clients reached
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import hiredis

DEFAULT_PORT = 6379
# Bytes a reply may take before it is whole: INFO everything is tens of KiB, so a peer that
# streams more than this is no Redis the probe can use (and memory stays bounded).
MAX_REPLY_BYTES = 16 * 1024 * 1024
READ_CHUNK = 65536
# The query options a URL may carry (redis-py's names); any other is refused, since what
# redis-py did with it (timeouts, retries, TLS checks) is decided by the target's config here.
URL_OPTIONS = frozenset({"db", "username", "password"})

Arg = str | bytes | int | float
Command = Sequence[Arg]


class RedisError(Exception):
    """Anything this client raises, beside TimeoutError (a bound was reached)."""


class RedisConnectionError(RedisError):
    """The connection could not be opened, or closed or broke; `__cause__` holds the socket's
    own error (refused, reset, TLS, DNS) when there was one."""


class ProtocolError(RedisError):
    """The peer's bytes are no RESP reply: it is not Redis (or not Redis on this port)."""


class ResponseError(RedisError):
    """An error reply: the server refused a command. `code` is its first word (ERR, NOPERM...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(ResponseError):
    """The server refused the login: a wrong password or user, or none sent when one is needed."""


class NoPermissionError(ResponseError):
    """NOPERM: the ACL user may not run this command (or read this key)."""


class BusyLoadingError(ResponseError):
    """LOADING: the server is loading its dataset and answers nothing else."""


class MaxClientsError(ResponseError):
    """The server is at maxclients: it says so to a new connection and closes it."""


class _AuthArgumentsError(ResponseError):
    """AUTH with a user name on a server before 6.0, which takes the password alone."""


class InvalidURL(ValueError):
    """A redis:// or rediss:// URL this client cannot use; the text never repeats the URL."""


# An error reply's first word, and the class it makes; the word is dropped from the message
# for these, as redis-py does. Others (WRONGTYPE, MOVED...) keep their whole text.
_CODES: dict[str, type[ResponseError]] = {
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
    "NOPERM": NoPermissionError,
    "LOADING": BusyLoadingError,
    "ERR": ResponseError,
}
# Messages after ERR that are no plain command error.
_ERR_MESSAGES: dict[str, type[ResponseError]] = {
    "max number of clients reached": MaxClientsError,
    "invalid password": AuthenticationError,
    "Client sent AUTH, but no password is set": AuthenticationError,  # before Redis 6
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?": AuthenticationError,
    "wrong number of arguments for 'auth' command": _AuthArgumentsError,
    "wrong number of arguments for 'AUTH' command": _AuthArgumentsError,
}


def error_reply(text: str) -> ResponseError:
    """The exception for an error reply's text (without its leading '-')."""
    code, _, rest = text.partition(" ")
    cls = _CODES.get(code)
    if cls is None:
        return ResponseError(text, code if code.isupper() else "")
    if code == "ERR":
        cls = _ERR_MESSAGES.get(rest, ResponseError)
    return cls(rest, code)


@dataclass(frozen=True)
class Address:
    """Where and as whom to connect, from a URL; `repr` leaves the password out."""

    host: str
    port: int
    db: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"Address({scheme}://{self.host}:{self.port}/{self.db})"


def parse_url(url: str) -> Address:
    """redis://[[user]:password@]host[:port][/db][?db=N] (rediss:// for TLS), read as redis-py's
    from_url reads it: userinfo percent-decoded, localhost:6379/0 by default, a path that is
    no number ignored. Raises InvalidURL."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InvalidURL("the URL's port is not a number from 0 to 65535") from None
    if parts.scheme not in ("redis", "rediss"):
        raise InvalidURL("the URL must start with redis:// or rediss://")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - URL_OPTIONS)
    if unknown:
        raise InvalidURL(
            f"the URL's query option {', '.join(unknown)} is not supported "
            f"(only {', '.join(sorted(URL_OPTIONS))}; the rest is the target's config)"
        )
    db_text = query.get("db") or unquote(parts.path).replace("/", "")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        if "db" in query:
            raise InvalidURL("the URL's db option is not a number") from None
        db = 0  # as redis-py: a path that is no database number is ignored
    return Address(
        host=unquote(parts.hostname or "") or "localhost",
        port=port,
        db=db,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else query.get("username"),
        password=unquote(parts.password) if parts.password else query.get("password"),
    )


class Connection:
    """One connection to a Redis server, speaking RESP2, one request at a time.

    Any failure mid-request (a timeout, a closed socket, a reply that is no RESP) leaves the
    stream in an unknown state, so the connection marks itself broken and refuses further
    use; the caller opens a new one.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: hiredis.Reader,
        pack: Callable[..., Any],  # hiredis.pack_command, whose stub says a 1-tuple
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._pack = pack
        self.timeout = timeout
        self.client_name: str | None = None
        self.db = 0
        self._broken: BaseException | None = None

    async def execute(self, *args: Arg) -> Any:
        """One command and its reply; an error reply raises its ResponseError."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Commands sent at once, and their replies in order, an error reply in its own slot
        as a ResponseError (not raised): one key the ACL denies leaves the others read."""
        if self._broken is not None:
            raise RedisConnectionError("the connection is closed") from self._broken
        try:
            async with asyncio.timeout(self.timeout):
                self._writer.write(b"".join(bytes(self._pack(tuple(c))) for c in commands))
                await self._writer.drain()
                return [await self._read() for _ in commands]
        except BaseException as exc:
            self._broken = exc
            raise

    async def _read(self) -> Any:
        while True:
            try:
                reply = self._parser.gets()
            except _NotRESP as exc:
                raise ProtocolError(f"the peer's reply is no RESP: {exc}") from None
            if reply is not False:
                return error_reply(str(reply)) if isinstance(reply, _ReplyError) else reply
            if self._parser.len() > MAX_REPLY_BYTES:
                raise ProtocolError(f"a reply larger than {MAX_REPLY_BYTES >> 20} MiB")
            try:
                data = await self._reader.read(READ_CHUNK)
            except OSError as exc:
                raise RedisConnectionError(f"connection lost: {exc}") from exc
            if not data:
                raise RedisConnectionError("Connection closed by server.")
            self._parser.feed(data)

    async def aclose(self) -> None:
        """Close the socket, raising nothing and waiting at most the timeout: Redis has no
        goodbye, and a frozen TLS peer must not hold the caller."""
        self._broken = self._broken or RedisConnectionError("closed by the client")
        with contextlib.suppress(Exception):
            self._writer.close()
            async with asyncio.timeout(self.timeout):
                await self._writer.wait_closed()
            return
        # not closed in time (a TLS peer that never answers the close): dropped now, rather
        # than held for the event loop's own TLS shutdown timeout
        self._writer.transport.abort()


class _ReplyError(Exception):
    """What the parser makes of an error reply; turned into a ResponseError by `error_reply`."""


class _NotRESP(Exception):
    """What the parser raises for bytes that are no RESP."""


async def connect(
    address: Address,
    *,
    seconds: float,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    username: str | None = None,
    password: str | None = None,
    client_name: str | None = None,
) -> Connection:
    """A connection made ready as redis-py's was, with no HELLO (servers before Redis 6 do not
    know it): AUTH when there is a password (the URL's credentials win over the arguments),
    CLIENT SETNAME, SELECT when the database is not 0. A SETNAME the ACL forbids (NOPERM) is
    dropped: `client_name` of the result says whether the connection is named. The connect,
    the TLS handshake and each step are bounded by `seconds` (the target's timeout)."""
    import hiredis

    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(
                address.host,
                address.port,
                ssl=tls if address.tls else None,
                server_hostname=(server_hostname or address.host) if address.tls else None,
                limit=READ_CHUNK,
            )
    except TimeoutError:
        raise
    except OSError as exc:
        where = f"{address.host}:{address.port}"
        raise RedisConnectionError(f"Error connecting to {where}: {exc}") from exc
    parser = hiredis.Reader(protocolError=_NotRESP, replyError=_ReplyError)
    connection = Connection(reader, writer, parser, hiredis.pack_command, seconds)
    try:
        await _setup(connection, address, username, password, client_name)
    except BaseException:
        await connection.aclose()
        raise
    return connection


async def _setup(
    connection: Connection,
    address: Address,
    username: str | None,
    password: str | None,
    client_name: str | None,
) -> None:
    username = address.username or username
    password = address.password or password
    if password:
        await _auth(connection, username, password)
    if client_name:
        try:
            await connection.execute("CLIENT", "SETNAME", client_name)
            connection.client_name = client_name
        except NoPermissionError:
            pass  # an ACL without +client|setname: go on unnamed
    if address.db:
        await connection.execute("SELECT", address.db)
        connection.db = address.db


async def _auth(connection: Connection, username: str | None, password: str) -> None:
    """AUTH [user] password; a server before Redis 6 takes the password alone."""
    try:
        await connection.execute("AUTH", *((username,) if username else ()), password)
    except _AuthArgumentsError:
        if not username:
            raise AuthenticationError("the server refused AUTH's arguments") from None
        await connection.execute("AUTH", password)


def parse_info(text: str | bytes) -> dict[str, Any]:
    """INFO's text as redis-py's parse_info makes it: `# Section` lines skipped, `key:value`
    lines, numbers as int or float, `k=v,k=v` values (db0:keys=1,expires=0, slave0:ip=...)
    as dicts of the same, `a,b` values as lists, `module:` lines under "modules"."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    info: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            info.setdefault("__raw__", []).append(line)
            continue
        key, value = line.split(":", 1)
        if key == "cmdstat_host":  # the only key with a ':' in it
            key, value = line.rsplit(":", 1)
        if key == "module":
            info.setdefault("modules", []).append(_info_value(value))
        else:
            info[key] = _info_value(value)
    return info


def _info_value(value: str) -> Any:
    if "," not in value and "=" not in value:
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return value
    if "=" not in value:
        return [_info_value(v) for v in value.split(",") if v]
    fields: dict[str, Any] = {}
    for item in value.split(","):
        if not item:
            continue
        if "=" in item:
            name, found = item.rsplit("=", 1)
            fields[name] = _info_value(found)
        else:
            fields[item] = True
    return fields


def config_pairs(reply: Any) -> dict[str, str]:
    """CONFIG GET's reply (name, value, name, value...) as a dict of text."""
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))
