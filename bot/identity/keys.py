"""The operator's identity key: one secret file, two sub-keys (the blind index, the attributes).

The platform learns that a person was verified, never who: a subject (an ID number, an external
ID) is kept only as an HMAC-SHA256 "blind index" under a key the database does not hold, so the
same person verified twice is recognised (accounts per person, the blacklist) while a copy of the
database alone reveals nothing. Attributes an operator must keep for the authority are encrypted
with AES-GCM, the user ID bound in as associated data so a ciphertext moved to another account's
row fails to decrypt.

Separate sub-keys are derived with HKDF, so the index and the cipher never share key material.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits, the size AES-GCM is made for
_INDEX_INFO = b"rulesbot identity blind-index v1"
_CIPHER_INFO = b"rulesbot identity attributes v1"
# What the database keeps to recognise its key: derived, so it reveals nothing of the key itself.
_FINGERPRINT_INFO = b"rulesbot identity key fingerprint v1"


class KeyFileError(Exception):
    """The key file cannot be used; the message says which file and what to do."""


class AttributesUnreadable(Exception):
    """A ciphertext that does not decrypt under this key and user (tampered, moved or another key)."""


# Characters that change a subject's spelling, not the person: every format character (category
# Cf: zero-width space, soft hyphen, word joiner, BOM), whitespace, and dashes (Pd, and the minus
# sign, which NFKC keeps). An identity service that forwards an ID number as typed would otherwise
# give the same person a new index, dodging the blacklist and the accounts-per-person limit.
_MINUS_SIGNS = frozenset("\u2212\u2796")


def _spelling_only(char: str) -> bool:
    category = unicodedata.category(char)
    return category in ("Cf", "Pd") or char.isspace() or char in _MINUS_SIGNS


def canonical_subject(subject: str, *, fold_case: bool = True) -> str:
    """The form a person-typed subject (an ID number) is indexed in: the same person typed with
    full-width or Arabic-Indic digits, spaces or dashes inside, invisible characters, or another
    letter case gives the same index. ``fold_case=False`` for a subject whose case is part of it
    (an OIDC ``sub`` is case-sensitive: 'AbC' and 'abc' are two people)."""
    kept = []
    for char in unicodedata.normalize("NFKC", subject):
        if _spelling_only(char):
            continue
        # NFKC leaves non-ASCII decimal digits (Arabic-Indic, Devanagari...) as they are.
        kept.append(str(unicodedata.decimal(char)) if unicodedata.category(char) == "Nd" else char)
    text = "".join(kept)
    return text.casefold() if fold_case else text


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


class IdentityKeys:
    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise KeyFileError(f"an identity key is {KEY_BYTES} bytes, not {len(master)}")
        self._index_key = _derive(master, _INDEX_INFO)
        self._cipher = AESGCM(_derive(master, _CIPHER_INFO))
        self.fingerprint = _derive(master, _FINGERPRINT_INFO)[:16].hex()

    @classmethod
    def load_or_create(cls, path: Path) -> "IdentityKeys":
        """The key in ``path``, created 0600 with fresh random bytes if the file does not exist.

        A file that others can read, or of the wrong size, is refused rather than used or
        replaced: a readable key voids the blind index, and a new key would orphan every index
        and ciphertext already recorded. Whether a new key may be made at all (nothing recorded
        under an old one) is for the caller to decide: Identity.open checks the database first.
        """
        path = Path(path)
        if path.exists():
            return cls(_read_private(path))
        return cls.create(path)

    @classmethod
    def create(cls, path: Path) -> "IdentityKeys":
        """A new key written to ``path`` whole or not at all, or the key another process put there
        first. The bytes go to a private temporary file, are synced, and are then hard-linked into
        place: a second starter never reads a half-written (empty) file, and a crash mid-write
        leaves only a temporary file, never an empty key that blocks every later start."""
        path = Path(path)
        master = os.urandom(KEY_BYTES)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
        try:
            os.write(fd, master)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(temporary, path)  # fails, unlike rename, when another process won the race
            except FileExistsError:
                return cls(_read_private(path))
            _sync_directory(path.parent)
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(temporary)
        return cls(master)

    @classmethod
    def load(cls, path: Path) -> "IdentityKeys":
        """The existing key in ``path`` (never a new one: a new key reads nothing recorded)."""
        path = Path(path)
        if not path.exists():
            raise KeyFileError(f"{path} does not exist: no identity key to read the records with (identity.key_file)")
        return cls(_read_private(path))

    def blind_index(self, subject: str, *, exact: bool = False) -> str:
        """HMAC-SHA256 of the subject's canonical form, hex: equal for the same person, opaque.

        ``exact``: a machine-issued subject (SSO's provider:external_id), indexed as it is, since
        dropping its case or dashes could merge two people's IDs."""
        text = subject if exact else canonical_subject(subject)
        return hmac.new(self._index_key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def encrypt(self, user_id: str, attributes: dict[str, Any]) -> bytes:
        """nonce || AES-GCM(canonical JSON of ``attributes``), bound to ``user_id``."""
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(attributes, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return nonce + self._cipher.encrypt(nonce, plain, user_id.encode("utf-8"))

    def decrypt(self, user_id: str, blob: bytes) -> dict[str, Any]:
        try:
            plain = self._cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], user_id.encode("utf-8"))
        except (InvalidTag, ValueError):
            raise AttributesUnreadable(
                f"the kept attributes of {user_id} do not decrypt: altered, moved from another account,"
                " or written under another key file"
            ) from None
        return json.loads(plain)


def _sync_directory(directory: Path) -> None:
    """Make a new directory entry (the key's link) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_private(path: Path) -> bytes:
    """The bytes of a secret file that only its owner may read; KeyFileError otherwise."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"{path} is readable by others (mode {mode:04o}); it must be 0600. Run `chmod 600 {path}` and,"
            " since others may have read it, treat the key as exposed"
        )
    if len(data) != KEY_BYTES:
        raise KeyFileError(
            f"{path} holds {len(data)} bytes, but an identity key is {KEY_BYTES}; restore the original file"
            " (a new key would make every recorded index and kept attribute unreadable)"
        )
    return data


def read_secret(path: Path) -> bytes:
    """A shared secret file (the assertion secret): 0600, at least 32 bytes; surrounding whitespace
    is dropped so a file written with ``echo`` works."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode:04o}); it must be 0600 (chmod 600 {path})")
    if len(data) < KEY_BYTES:
        raise KeyFileError(f"{path} holds {len(data)} bytes; an assertion secret needs at least {KEY_BYTES}")
    return data
