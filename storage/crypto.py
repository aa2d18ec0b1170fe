"""Citizens' phone numbers at rest (数据加密): the cipher, the keyed hash, and the column types.

PIPL and 等保 2.0 ask that citizens' phone numbers be protected in storage. Every column that holds
one (a household's, a service object's, a 差评 rater's, a /report or hotline raiser's, a call-back
task's) is an ``EncryptedString``: the ORM and Core statements read and write the number in clear,
the database holds a token, and a keyed hash sits in a column beside it for lookups and the
uniqueness that ciphertext cannot give (random nonces make two encryptions of one number differ).

**The token**: ``v1:<key id>:<base64 of nonce + ciphertext + tag>``. ``v1`` is this format; the key
id (8 hex digits) names the key *and* the cipher that sealed the value, so ``rotate-key`` can tell
what is still under an old key and a wrong key is named, never decrypted into garbage (GCM's tag
fails first). Ciphers: AES-256-GCM (default) or SM4-GCM (``DATA_CIPHER=sm4-gcm``, GB/T 32907, where
a 密评 asks for the national algorithm; it needs an OpenSSL with SM4, which the ``cryptography``
wheels carry). Both from the ``cryptography`` package; 12-byte random nonces, 16-byte tags.

**The keys**: ``DATA_KEY`` is a random string of at least 32 characters (not the key itself: the
cipher key, the key id and the hash key are derived from it with HKDF-SHA256, each for its own
purpose). ``DATA_KEY_OLD`` lists keys still accepted for reading (comma-separated), during a
rotation. Every key is registered under both ciphers, so changing only ``DATA_CIPHER`` also works
(``rotate-key`` then re-seals everything under the new cipher).

**The keyed hash**: HMAC-SHA256 of the number as stored (the doors normalise it first:
bot.core.phones), hex, under a hash key derived from the *current* ``DATA_KEY``. It is not kept
stable across rotations on purpose: phone numbers are a small space, so anyone holding the hash key
and the database can reverse every hash by enumeration; a rotation after a leak must re-key the
hashes too. ``rotate-key`` rewrites each hash with its ciphertext, and lookups during a rotation use
``Keyring.hashes`` (one hash per configured key).

**Sealed free text**: a phone number also reaches rest inside text: a flow's state while the user
is still answering (dialogue_state.data), the answer kept with an event for redelivery
(processed_inbound.answer: a supervisor's call-back list shows full numbers), a reply queued in the
outbox (its body, and the WeCom API calls in its payload). ``SealedJSON`` and ``SealedText`` store
such a value sealed whole (``{"$sealed": token}``, or the token) when it carries anything shaped
like a phone number (``carries_phone``), and as it is otherwise: nothing to pay on the events that
carry none. Outbox attachments (``SealedBytes``) are always sealed: an exported form sent by chat
lists every number of a unit, inside a compressed workbook no pattern can look into.

**Where the key comes from**: the program installs the keyring built from its settings
(``configure``, by bot.cli before anything touches the database). Unconfigured (tests, a bare
Alembic run), it is read from the environment (DATA_KEY, DATA_KEY_OLD, DATA_CIPHER), and without
DATA_KEY it is the public development key, with a warning: production refuses that at start
(bot.config). The layer rule holds: nothing here imports bot/.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import pickle
import re
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import JSON, LargeBinary, String, Text, event, inspect
from sqlalchemy.sql import operators
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

VERSION = "v1"
AES_GCM, SM4_GCM = "aes-256-gcm", "sm4-gcm"
CIPHERS = (AES_GCM, SM4_GCM)
# Used when DATA_KEY is unset outside production: public, so it protects nothing; production refuses it.
DEVELOPMENT_DATA_KEY = "development-only-data-key-public-never-use-in-production"
MIN_KEY_LENGTH = 32
TOKEN_LENGTH = 128  # the phone columns: a 30-character number makes a 92-character token
HASH_LENGTH = 64
SEAL = "$sealed"
_NONCE = 12
_TAG = 16
_SALT = b"zuofeng-bot data at rest"
# Anything shaped like a mainland mobile or a landline, not inside a longer run of digits. (The same as
# ``(?<![0-9])(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})(?![0-9])``, with each branch's first digit before
# its look-behind: the regular expression engine then skips to a 0 or a 1 rather than trying every place.)
_PHONE_IN_TEXT = re.compile(r"(?:1(?<![0-9]1)[3-9][0-9]{9}|0(?<![0-9]0)[0-9]{2,3}-?[0-9]{7,8})(?![0-9])")


class DataKeyError(RuntimeError):
    """A value at rest the configured keys cannot open (sealed under another key, or damaged), or a
    key that cannot be used; the message says which key id and what to set."""


def _derive(secret: str, purpose: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=purpose.encode()).derive(secret.encode())


def sm4_available() -> bool:
    """Whether this OpenSSL can do SM4-GCM (the ``cryptography`` wheels can; some system builds cannot)."""
    try:
        Cipher(algorithms.SM4(bytes(16)), modes.GCM(bytes(_NONCE))).encryptor()
    except UnsupportedAlgorithm:
        return False
    return True


class _Key:
    """One DATA_KEY under one cipher: its id and its cipher key."""

    __slots__ = ("kid", "cipher", "key", "_aead")

    def __init__(self, secret: str, cipher: str):
        self.kid = _derive(secret, f"key id {cipher}", 4).hex()
        self.cipher = cipher
        self.key = _derive(secret, f"cipher key {cipher}", 32 if cipher == AES_GCM else 16)
        # Built once: making an AESGCM costs some 25 times what one number's decryption does.
        self._aead = AESGCM(self.key) if cipher == AES_GCM else None

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        if self._aead is not None:
            return nonce + self._aead.encrypt(nonce, data, None)
        encryptor = Cipher(algorithms.SM4(self.key), modes.GCM(nonce)).encryptor()
        return nonce + encryptor.update(data) + encryptor.finalize() + encryptor.tag

    def open(self, blob: bytes) -> bytes:
        nonce, body = blob[:_NONCE], blob[_NONCE:]
        if self._aead is not None:
            return self._aead.decrypt(nonce, body, None)
        decryptor = Cipher(algorithms.SM4(self.key), modes.GCM(nonce, body[-_TAG:])).decryptor()
        return decryptor.update(body[:-_TAG]) + decryptor.finalize()


class Keyring:
    """The current key (which seals and hashes) and the old ones (which still open, during a rotation)."""

    def __init__(self, key: str, old: Sequence[str] = (), cipher: str = AES_GCM):
        if cipher not in CIPHERS:
            raise DataKeyError(f"DATA_CIPHER={cipher!r} 不受支持：请填 {AES_GCM}（默认）或 {SM4_GCM}。")
        if cipher == SM4_GCM and not sm4_available():
            raise DataKeyError("DATA_CIPHER=sm4-gcm：本机的 OpenSSL 不支持 SM4-GCM。请安装带 SM4 的 cryptography 版本，"
                               f"或改用 {AES_GCM}。")
        given = [key, *dict.fromkeys(k for k in old if k and k != key)]
        self.cipher = cipher
        self.current = _Key(key, cipher)
        self.prefix = f"{VERSION}:{self.current.kid}:"
        self._keys = {self.current.kid: self.current}
        for secret in given:
            for other in CIPHERS:
                found = _Key(secret, other)
                self._keys.setdefault(found.kid, found)
        self._macs = [_derive(secret, "phone hash", 32) for secret in given]
        self.development = key == DEVELOPMENT_DATA_KEY

    @property
    def known_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def encrypt(self, text: str | None) -> str | None:
        """The token of ``text`` under the current key; None and "" are stored as they are."""
        if not text:
            return text
        blob = self.current.seal(text.encode())
        return self.prefix + base64.b64encode(blob).decode()

    def decrypt(self, token: str | None) -> str | None:
        """The text a token holds. A value that is not a token (None, "", a number written before the
        encryption migration) is returned as it is. Raises ``DataKeyError`` for a token of a key not
        configured, or one that does not authenticate (damaged, or a key id collision)."""
        if not token or not token.startswith(VERSION + ":"):
            return token
        _version, kid, body = (token.split(":", 2) + ["", ""])[:3]
        key = self._keys.get(kid)
        if key is None:
            raise DataKeyError(unknown_key_message(kid))
        try:
            return key.open(base64.b64decode(body, validate=True)).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise DataKeyError(f"密钥编号 {kid} 的密文无法通过校验（数据已损坏，或密钥不对）。") from exc

    def is_current(self, token: str | None) -> bool:
        return bool(token) and token.startswith(self.prefix)

    def hash(self, phone: str | None) -> str | None:
        """The keyed hash of a number under the current key (None for no number)."""
        return _mac(self._macs[0], phone)

    def hashes(self, phone: str | None) -> tuple[str, ...]:
        """The number's hash under every configured key, current first: what a lookup matches while a
        rotation is under way (rows not yet rotated carry the old key's hash)."""
        if not phone or not phone.strip():
            return ()
        return tuple(_mac(mac, phone) for mac in self._macs)

    def encrypt_bytes(self, data: bytes | None) -> bytes | None:
        """Bytes sealed under the current key: ``v1:<key id>:`` then nonce, ciphertext and tag, raw."""
        if not data:
            return data
        return self.prefix.encode() + self.current.seal(data)

    def decrypt_bytes(self, blob: bytes | None) -> bytes | None:
        """What ``encrypt_bytes`` sealed; bytes without the prefix (from before 0018) as they are."""
        if not blob or not blob.startswith(b"v1:"):
            return blob
        _version, kid, body = (bytes(blob).split(b":", 2) + [b"", b""])[:3]
        key = self._keys.get(kid.decode("ascii", "replace"))
        if key is None:
            raise DataKeyError(unknown_key_message(kid.decode("ascii", "replace")))
        try:
            return key.open(body)
        except (InvalidTag, ValueError) as exc:
            raise DataKeyError(f"密钥编号 {kid.decode('ascii', 'replace')} 的密文无法通过校验（数据已损坏，或密钥不对）。") from exc

    def seal_json(self, value: Any) -> Any:
        return {SEAL: self.encrypt(json.dumps(value, ensure_ascii=False, separators=(",", ":")))}

    def open_json(self, value: Any) -> Any:
        if type(value) is dict and SEAL in value and len(value) == 1:
            return json.loads(self.decrypt(value[SEAL]))
        return value


def _mac(key: bytes, phone: str | None) -> str | None:
    if phone is None:
        return None
    text = phone.strip()
    return hmac.digest(key, text.encode(), "sha256").hex() if text else None


def unknown_key_message(kid: str) -> str:
    return (f"数据库中的电话号码由另一个密钥（编号 {kid}）加密，当前的 DATA_KEY 无法解密。请把 DATA_KEY 设回加密时的密钥；"
            "若正在更换密钥，把旧密钥写入 DATA_KEY_OLD 后运行 python -m bot rotate-key。")


_search = _PHONE_IN_TEXT.search


def carries_phone(value: Any) -> bool:
    """Whether a value (text, or JSON: dicts, lists, strings) holds anything shaped like a phone number.

    On every dialogue save and every kept answer. A value with no seven digits in a row anywhere cannot
    hold one, and that is seen at C speed (``_seven_digits``) for most of them; the others are walked:
    strings searched by one compiled pattern, numbers, booleans and dict keys passed over."""
    if isinstance(value, str):
        return _search(value) is not None
    if not isinstance(value, (dict, list, tuple)) or not _seven_digits(value):
        return False
    return _walk(value)


def _walk(value: dict | list | tuple) -> bool:
    if isinstance(value, dict):
        value = value.values()
    for item in value:
        if isinstance(item, str):
            if _search(item) is not None:
                return True
        elif isinstance(item, (dict, list, tuple)) and _walk(item):
            return True
    return False


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    """Pickles exact dicts, lists, tuples, strings, bytes, numbers, booleans and None, which the C
    pickler writes without asking this; anything else (a str subclass, an enum, a date) refuses."""

    def reducer_override(self, obj):
        raise _NotPlain()


_DIGIT_BYTES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))  # an ASCII digit: "1", else "0"
_SEVEN = b"1" * 7
_picklers = threading.local()


def _seven_digits(value: dict | list | tuple) -> bool:
    """False only when no phone number can be in the value (True: walk it).

    The value is pickled (protocol 3, no framing: each string's UTF-8 whole and in one piece, where an
    ASCII digit is a digit of the text and nothing else) and the bytes looked at for seven ASCII digits
    in a row, which every number ``_PHONE_IN_TEXT`` finds has; the pickle's own bytes (lengths, opcodes,
    numbers, keys) can only add runs, never break one. A value holding anything but plain types says
    True. Measured on a visit's dialogue row and answer: 25 K instructions against 55 K for the walk."""
    state = getattr(_picklers, "state", None)
    if state is None:
        written: list[bytes] = []  # the C pickler writes a whole protocol-3 pickle in one call, at the end
        state = _picklers.state = (written, _PlainPickler(_Sink(written.append), protocol=3))
    written, pickler = state
    try:
        pickler.dump(value)
        return _SEVEN in b"".join(written).translate(_DIGIT_BYTES)
    except Exception:  # not plain (_NotPlain), or not picklable: the walk decides
        return True
    finally:
        pickler.clear_memo()  # holds the value's parts otherwise
        written.clear()


class _Sink:
    __slots__ = ("write",)

    def __init__(self, write):
        self.write = write


# -- the process's keyring ------------------------------------------------------------------------

_configured: Keyring | None = None


def configure(keyring: Keyring | None) -> None:
    """Installs the process's keyring (bot.cli, from the settings); None: back to the environment's."""
    global _configured
    _configured = keyring


def keyring() -> Keyring:
    """The process's keyring: the one configured, else the environment's (see the module docstring)."""
    global _configured
    if _configured is None:
        _configured = from_environment()
    return _configured


_warned = False


def from_environment(environ=os.environ) -> Keyring:
    global _warned
    key = (environ.get("DATA_KEY") or "").strip()
    old = [part.strip() for part in (environ.get("DATA_KEY_OLD") or "").split(",") if part.strip()]
    if not key:
        if not _warned:
            log.warning("未设置 DATA_KEY：群众的电话号码用公开的开发密钥加密，只能试用（生产环境会拒绝启动）。")
            _warned = True
        key = DEVELOPMENT_DATA_KEY
    return Keyring(key, old, (environ.get("DATA_CIPHER") or AES_GCM).strip())


# -- the column types -----------------------------------------------------------------------------

_COMPARISONS = {operators.eq, operators.ne, operators.in_op, operators.not_in_op, operators.like_op,
                operators.not_like_op, operators.ilike_op, operators.not_ilike_op, operators.startswith_op,
                operators.endswith_op, operators.contains_op, operators.lt, operators.le, operators.gt, operators.ge}


class EncryptedString(TypeDecorator):
    """A phone number: clear in Python, a token (see above) in the database.

    Comparing the column with a value in SQL is refused (the token differs at every write): compare
    its keyed hash column with ``keyring().hashes(number)`` instead. ``IS NULL`` is fine."""

    impl = String
    cache_ok = True

    def __init__(self, length: int = TOKEN_LENGTH):
        super().__init__(length)

    class Comparator(TypeDecorator.Comparator):
        def operate(self, op, *other, **kwargs):
            if op in _COMPARISONS and not (len(other) == 1 and other[0] is None):
                raise TypeError("an encrypted phone column cannot be compared in SQL: compare its *_hash column "
                                "with storage.crypto.keyring().hashes(number)")
            return super().operate(op, *other, **kwargs)

    comparator_factory = Comparator

    def process_bind_param(self, value, dialect):
        return keyring().encrypt(value)

    def process_result_value(self, value, dialect):
        return keyring().decrypt(value)


class SealedJSON(TypeDecorator):
    """JSON stored as it is, unless it carries a phone number: then sealed whole, ``{"$sealed": token}``."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and carries_phone(value):
            return keyring().seal_json(value)
        return value

    def process_result_value(self, value, dialect):
        return keyring().open_json(value)


class SealedText(TypeDecorator):
    """Text stored as it is, unless it carries a phone number: then the token of the whole text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value and carries_phone(value):
            return keyring().encrypt(value)
        return value

    def process_result_value(self, value, dialect):
        return keyring().decrypt(value)


class SealedBytes(TypeDecorator):
    """A file at rest, always sealed (``encrypt_bytes``): an outbox attachment may be an exported form
    with every household's number in it, and a compressed workbook cannot be searched for one."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return keyring().encrypt_bytes(value)

    def process_result_value(self, value, dialect):
        return keyring().decrypt_bytes(value)


def keep_hash(model, attribute: str, hash_attribute: str) -> None:
    """Keeps ``model.<hash_attribute>`` the keyed hash of ``model.<attribute>`` on every ORM insert and
    update. Core statements that write the number give the hash themselves (``keyring().hash``)."""

    def on_insert(_mapper, _connection, target) -> None:
        setattr(target, hash_attribute, keyring().hash(getattr(target, attribute)))

    def on_update(_mapper, _connection, target) -> None:
        if inspect(target).attrs[attribute].history.has_changes():
            setattr(target, hash_attribute, keyring().hash(getattr(target, attribute)))

    event.listen(model, "before_insert", on_insert)
    event.listen(model, "before_update", on_update)


# -- what holds phones at rest, for rotate-key and the startup check (storage.rekey) -------------------

@dataclass(frozen=True)
class PhoneColumn:
    table: str
    column: str
    hash_column: str


@dataclass(frozen=True)
class SealedColumn:
    table: str
    column: str
    kind: str  # "json" (SealedJSON), "text" (SealedText) or "bytes" (SealedBytes)


PHONE_COLUMNS: tuple[PhoneColumn, ...] = (
    PhoneColumn("household", "phone", "phone_hash"),
    PhoneColumn("serviceobject", "phone", "phone_hash"),
    PhoneColumn("problem", "raiser_phone", "raiser_phone_hash"),
    PhoneColumn("rating", "phone", "phone_hash"),
    PhoneColumn("callback_task", "phone", "phone_hash"),
)
SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn("dialogue_state", "data", "json"),
    SealedColumn("processed_inbound", "answer", "json"),
    SealedColumn("outbox", "body", "text"),
    SealedColumn("outbox", "payload", "json"),  # a WeCom reply's API calls carry its text
    SealedColumn("outbox_attachment", "content", "bytes"),
)


def token_key_id(token: str | None) -> str | None:
    """The key id of a token, or None for a value that is not one."""
    if not token or not token.startswith(VERSION + ":"):
        return None
    return token.split(":", 2)[1]

