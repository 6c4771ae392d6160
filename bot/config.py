"""Settings: a YAML file, overridden key by key by ``BOT__SECTION__KEY`` environment variables.

Everything is validated at start-up; an error names the key (``homeserver.url``) so the operator
knows what to fix. Secrets are ``SecretStr`` and never appear in logs or reprs.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit  # issue 11: database.url
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from bot.policy.news import NewsRules

USER_ID_RE = re.compile(r"^@[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
ROOM_ID_RE = re.compile(r"^![^:\s]+(:[A-Za-z0-9.\-\[\]:]+)?$")
ROOM_ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
LANGUAGES = ("zh-CN", "en")


class ConfigError(Exception):
    """A configuration problem, with a message that names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_user_id(value: str) -> str:
    if not USER_ID_RE.match(value):
        raise ValueError(f"{value!r} is not a Matrix user ID like @name:example.org")
    return value


def _check_room_ref(value: str) -> str:
    if not (ROOM_ID_RE.match(value) or ROOM_ALIAS_RE.match(value)):
        raise ValueError(f"{value!r} is not a room ID (!id:server) or alias (#name:server)")
    return value


UserId = Annotated[str, AfterValidator(_check_user_id)]
RoomRef = Annotated[str, AfterValidator(_check_room_ref)]


class HomeserverConfig(_Section):
    url: str
    user_id: UserId
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    admin_token: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> "HomeserverConfig":
        if self.password is None and self.access_token is None:
            raise ValueError("set homeserver.password or homeserver.access_token")
        return self

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]


# --- PostgreSQL URL check (issue 11 review, break 9) ---------------------------------------------
# What libpq/asyncpg accept for sslmode; anything else fails only at connect time, on the server.
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A password's characters that end its part of a URL unless percent-encoded (# starts a fragment,
# ? the query, / the path, @ the host): the usual reason a URL's port or host reads as nonsense.
_ENCODE_HINT = ("if the password holds # ? / or @, percent-encode them (%23 %3F %2F %40)")


def database_url_problem(text: str) -> str | None:
    """What is wrong with a database URL, in words that never repeat any part of it (it may hold
    a password), or None. ``database.url`` and ``migrate-db --from/--to`` both check with this, so
    a URL that passes here is one asyncpg can parse."""
    parsed = urlsplit(text)
    if parsed.scheme == "sqlite":
        if not text[len("sqlite://"):].strip("/"):
            return "names no file: sqlite:///var/lib/rulesbot/bot.db"
        return None
    if parsed.scheme not in ("postgresql", "postgres"):
        # The URL may hold a password: name the scheme only.
        return f"must start with postgresql:// or sqlite:///, not {parsed.scheme or '(none)'}://"
    if "#" in text:
        return f"holds a '#', which ends a URL: {_ENCODE_HINT}"
    try:
        parsed.port  # noqa: B018 -- urlsplit checks the port only when asked
    except ValueError:
        return f"has a port that is not a number from 1 to 65535 ({_ENCODE_HINT})"
    if not parsed.hostname and "host=" not in parsed.query:
        return "names no host: postgresql://user@host:5432/database"
    if not parsed.path.strip("/"):
        return f"names no database: postgresql://user@host:5432/database ({_ENCODE_HINT})"
    from urllib.parse import parse_qs

    query = parse_qs(parsed.query)
    for mode in query.get("sslmode", []):
        if mode not in _SSLMODES:
            return f"has an unknown sslmode (one of {', '.join(_SSLMODES)})"
    for timeout in query.get("connect_timeout", []):
        if not timeout.isdigit():
            return "has a connect_timeout that is not a whole number of seconds"
    return None
# --- end PostgreSQL URL check --------------------------------------------------------------------


class DatabaseConfig(_Section):
    path: Path = Path("bot.db")
    # --- PostgreSQL (issue 11) -------------------------------------------------------------------
    # postgresql://user[:password]@host[:port]/database (asyncpg's DSN; ?host=/run/postgresql for a
    # socket) selects PostgreSQL; sqlite:///path is SQLite like `path`. Both `url` and `path` set
    # is an error, not a guess. With PostgreSQL, `path` still names where the files that live
    # beside the database go (the audit head file, staged exports, the identity key).
    url: SecretStr | None = None
    # The password in a file of its own (0600), not in the URL, the YAML or the environment.
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        problem = database_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(f"database.url {problem}")
        return value

    @model_validator(mode="after")
    def _one_database(self) -> "DatabaseConfig":
        if self.url is None:
            if self.password_file is not None:
                raise ValueError("database.password_file is set, but database.url is not a postgresql:// URL")
            return self
        if "path" in self.model_fields_set:
            raise ValueError("database.path and database.url are both set: keep one"
                             " (url: sqlite:///path/bot.db or postgresql://…)")
        parsed = urlsplit(self.url.get_secret_value())
        if parsed.scheme == "sqlite":
            if self.password_file is not None:
                raise ValueError("database.password_file is set, but database.url is not a postgresql:// URL")
            from bot.store.db import sqlite_path

            self.path = sqlite_path(self.url.get_secret_value())
        elif self.password_file is not None and parsed.password:
            raise ValueError("database.url holds a password and database.password_file is set: keep one")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.url is not None and self.url.get_secret_value().startswith(("postgresql://", "postgres://"))

    def location(self) -> str | Path:
        """What ``Store.open`` takes: the PostgreSQL DSN (the password file's password put in), or
        the SQLite file. ConfigError if the password file cannot be read."""
        if not self.is_postgres:
            return self.path
        assert self.url is not None
        dsn = self.url.get_secret_value()
        if self.password_file is None:
            return dsn
        try:
            password = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"database.password_file: cannot read {self.password_file}: {exc.strerror}") from None
        parsed = urlsplit(dsn)
        user = quote(unquote(parsed.username or ""), safe="")
        host = parsed.netloc.rpartition("@")[2]
        return urlunsplit(parsed._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
    # --- end PostgreSQL ------------------------------------------------------------------------------


class GateConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    token: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    # --- active/standby (issue 11, bot.leader) ---
    # Where the other bot processes reach this one's gate once it is the active one (they follow
    # its state and send it what their gates saw). Default: http://<listen>.
    advertise_url: str | None = None

    @field_validator("advertise_url")
    @classmethod
    def _advertise_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return None if value is None else value.rstrip("/")

    @property
    def advertised(self) -> str:
        return self.advertise_url or f"http://{self.listen}"
    # --- end active/standby


class HaConfig(_Section):
    """Active and standby (issue 11, bot.leader): with PostgreSQL every bot process on the database
    takes part; one holds the lock and acts, the others' gates answer from its state."""

    poll_seconds: float = Field(default=1.0, gt=0, le=10)  # a standby asks for the lock this often
    heartbeat_seconds: float = Field(default=1.0, gt=0, le=10)  # the active checks its lock connection
    # A standby that has heard nothing from the active for this long (cut off from it, or no
    # active at all) reports "degraded" on /health (503) and stops deciding: its gate answers the
    # gated callbacks as a gate that cannot be reached, so synapse-http-antispam applies its
    # fail_open per callback (review 11, break 4).
    max_staleness_seconds: float = Field(default=60.0, gt=0)


class AgreementConfig(_Section):
    version: str = "1"
    # None: the shipped text for the configured language (bot/shipped/agreement.<language>.md).
    file: Path | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not value.strip() or len(value) > 64:
            raise ValueError("agreement.version must be 1 to 64 characters")
        return value.strip()


def _check_duration(value: str, *, permanent_ok: bool = True) -> str:
    from bot.policy.sanctions import parse_duration

    try:
        ms = parse_duration(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration like 30m, 12h, 7d, 4w or permanent") from None
    if ms is None and not permanent_ok:
        raise ValueError("a time window cannot be permanent")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
Window = Annotated[str, AfterValidator(lambda v: _check_duration(v, permanent_ok=False))]


class LadderStepConfig(_Section):
    """After ``after`` cases of kind ``of`` within ``within``, impose ``then`` for ``duration``."""

    after: int = Field(ge=1, le=100)
    of: Literal["warn", "restrict", "suspend"]
    within: Window
    then: Literal["restrict", "suspend", "close"]
    duration: Duration | None = None

    @model_validator(mode="after")
    def _duration_when_timed(self) -> "LadderStepConfig":
        if self.then != "close" and self.duration is None:
            raise ValueError(f"a step to {self.then} needs a duration")
        if self.then == "close" and self.duration is not None:
            raise ValueError("a closure has no duration")
        return self


DEFAULT_LADDER = [
    LadderStepConfig(after=3, of="warn", within="90d", then="restrict", duration="24h"),
    LadderStepConfig(after=2, of="restrict", within="180d", then="suspend", duration="7d"),
    LadderStepConfig(after=2, of="suspend", within="365d", then="close"),
]


class SanctionsConfig(_Section):
    ladder: list[LadderStepConfig] = Field(default_factory=lambda: list(DEFAULT_LADDER))
    # How long a closure the ladder proposes waits for a moderator's !confirm.
    proposal_valid_for: Window = "24h"


class RecordsConfig(_Section):
    # Message content copied as evidence (into cases and reports) is purged after this many days;
    # the records themselves are kept.
    evidence_days: int = Field(default=180, ge=1, le=36500)
    # How often to take in reports made with Matrix's own report button (needs the admin token).
    report_poll_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Append-only file of audit-log heads, so that cutting the newest rows is noticed; None: next
    # to the database (<database.path>.audit-head). Another file system is better still.
    audit_head_file: Path | None = None


DEFAULT_CATEGORIES = [
    "news-organisation", "news-website", "government", "enterprise", "institution", "self-media", "individual",
]
# The zh-CN names of the default categories; a category with no name of its own is shown by its key.
DEFAULT_CATEGORY_NAMES = {
    "news-organisation": "新闻单位", "news-website": "新闻网站", "government": "政府机关", "enterprise": "企业",
    "institution": "事业单位", "self-media": "自媒体", "individual": "个人",
}


class PublicAccountsConfig(_Section):
    """Article 7: public accounts are reviewed and filed by category."""

    categories: list[Annotated[str, AfterValidator(lambda v: _check_category(v))]] = Field(
        default_factory=lambda: list(DEFAULT_CATEGORIES), min_length=1
    )
    # Placeholders: {year}, {category} (the category's position, 1-based, as two digits) and {seq}
    # (the filing's sequence number); format specs work: {seq:06d}.
    filing_number_format: str = "IM{year}-{category}-{seq:06d}"
    # The name each category is shown and typed by in Chinese (`enterprise: 企业`), or in each
    # language (`enterprise: {zh-CN: 企业, en: Enterprise}`); the key stays what is stored and
    # exported. The default categories have Chinese names unless the operator gives others.
    category_names: dict[str, str | dict[Literal["zh-CN", "en"], str]] = Field(default_factory=dict)
    # The news rules; None: the shipped bot/shipped/rules.yaml.
    rules_file: Path | None = None
    # The tag a news account's channels' topics begin with; None: the language's default
    # (「时政新闻发布」 / [News publisher], 「时政新闻转载」 / [News reposter]).
    labels: dict[Literal["publisher", "reposter"], str] = Field(default_factory=dict)

    @field_validator("filing_number_format")
    @classmethod
    def _format(cls, value: str) -> str:
        try:
            sample = value.format(year=2026, category="01", seq=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a filing number format: {exc}") from None
        if sample == value.format(year=2026, category="01", seq=2):
            raise ValueError("the format must contain {seq}, or every filing number would be the same")
        return value

    @field_validator("category_names", mode="before")
    @classmethod
    def _names_are_words_or_per_language(cls, value: Any) -> Any:
        # Said plainly here: pydantic's own message for a union lists both branches' errors.
        if not isinstance(value, dict):
            return value  # pydantic says what is wrong with it
        for key, names in value.items():
            if isinstance(names, dict):
                unknown = sorted(str(language) for language in names if language not in LANGUAGES)
                if unknown:
                    raise ValueError(f"{key!r} names languages {', '.join(unknown)}; use zh-CN or en")
            elif not isinstance(names, str):
                raise ValueError(f"{key!r} must be a name, or names per language ({{zh-CN: …, en: …}})")
        return value

    @model_validator(mode="after")
    def _names_name_known_categories(self) -> "PublicAccountsConfig":
        # Each name is one word of `!apply public <category> <name…>`, and must point at one
        # category only, whichever language it is typed in.
        for key, names in self.category_names.items():
            if key not in self.categories:
                raise ValueError(f"category_names: {key!r} is not one of public_accounts.categories")
            for name in [names] if isinstance(names, str) else names.values():
                if not name or any(c.isspace() for c in name):
                    raise ValueError(f"category_names: the name {name!r} of {key!r} must be one word")
        owner: dict[str, str] = {key: key for key in self.categories}
        for key in self.categories:
            for language in LANGUAGES:
                name = self.category_name(key, language)
                taken = owner.setdefault(_category_form(name), key)
                if taken != key:
                    raise ValueError(f"category_names: {name!r} names both {taken!r} and {key!r}")
        return self

    def category_name(self, key: str, language: str) -> str:
        """How ``key`` is shown to a reader of ``language``: its name there, or the key itself."""
        names = self.category_names.get(key, DEFAULT_CATEGORY_NAMES.get(key))
        if isinstance(names, dict):
            return names.get(language) or key  # type: ignore[call-overload]
        return names if names and language == "zh-CN" else key

    def category_key(self, word: str) -> str | None:
        """The category a typed word means (its key, or its name in either language); None if none."""
        folded = _category_form(word)
        for key in self.categories:
            if folded in {key, *(_category_form(self.category_name(key, language)) for language in LANGUAGES)}:
                return key
        return None


def _category_form(word: str) -> str:
    """The form category words are compared in: a Chinese input method in full-width mode types
    ``ｎｅｗｓ``, which must be ``news`` (NFKC), in any letter case (review 9 #16)."""
    return unicodedata.normalize("NFKC", word).casefold()


def _check_category(value: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,39}$", value):
        raise ValueError(f"{value!r} is not a category name (lowercase letters, digits and dashes)")
    return value


class ServiceConfig(_Section):
    """What the operator declares about itself (article 4): shown in !rules."""

    name: str = ""
    licence: str = ""


class SyncConfig(_Section):
    """The sync loop. After a gap (the bot down or slow) longer than ``timeline_limit`` events in a
    room, up to ``gap_limit`` more are fetched back with /messages; older ones are counted, not handled."""

    timeline_limit: int = Field(default=200, ge=1, le=1000)
    gap_limit: int = Field(default=1000, ge=0, le=100_000)
    stop_grace_seconds: float = Field(default=10.0, ge=0, le=300)  # SIGTERM: the batch in hand may finish


# --- identity (issue 9): real-name verification ------------------------------------------------
IDENTITY_PURPOSES = ("post", "invite", "create_room", "public_account", "news")


class IdentityConfig(_Section):
    """Article 6 ¶1: real names in the back end. Subjects are kept only as a blind index."""

    # The operator's key (32 random bytes, created 0600 on first start); None: identity.key next
    # to the database. Losing it orphans every index and kept attribute; keep a backup apart.
    key_file: Path | None = None
    # The secret the operator's identity service signs assertions with (0600, 32 bytes or more);
    # None: POST /identity/v1/verifications is refused (no assertion can be checked).
    assertion_secret_file: Path | None = None
    # Where people verify with the operator's identity service (shown in the default instructions).
    service_url: str | None = None
    required_for: list[Literal["post", "invite", "create_room", "public_account", "news"]] = Field(
        default_factory=lambda: ["public_account", "news"]
    )
    accounts_per_subject: int = Field(default=5, ge=1, le=10_000)
    # Attribute names an assertion may carry that are kept (encrypted); all others are dropped.
    keep_attributes: list[str] = Field(default_factory=list)
    # Synapse auth_provider IDs whose external IDs count as a verification (the admin API).
    sso_providers: list[str] = Field(default_factory=list)
    sso_level: str = "sso"
    sso_sweep_seconds: float = Field(default=3600.0, ge=60, le=7 * 86400)
    # How to verify on this server, per language; a language left out gets a text naming the
    # methods enabled above.
    instructions: dict[Literal["zh-CN", "en"], str] = Field(default_factory=dict)
    # --- registration (issue 10 review, break R) ---
    # "open": Synapse's own registration settings decide. "sso_only": the in-process module
    # (bot.synapse.RulesModule) refuses every registration a client makes other than through one
    # of sso_providers, whose accounts the bot then verifies at first sight; accounts an admin
    # creates (admin API, register_new_matrix_user) are not refused.
    registration: Literal["open", "sso_only"] = "open"

    @model_validator(mode="after")
    def _sso_only_needs_providers(self) -> "IdentityConfig":
        if self.registration == "sso_only" and not self.sso_providers:
            raise ValueError("registration 'sso_only' needs identity.sso_providers: the Synapse auth_provider IDs "
                             "through which accounts may register")
        return self

    def registration_providers(self) -> frozenset[str] | None:
        """PolicyState.registration_only_through: None (open), or the providers allowed."""
        return None if self.registration == "open" else frozenset(self.sso_providers)
    # --- end registration ---

    @field_validator("required_for")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))
# --- end identity ------------------------------------------------------------------------------


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOT__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    homeserver: HomeserverConfig
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    agreement: AgreementConfig = Field(default_factory=AgreementConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    sanctions: SanctionsConfig = Field(default_factory=SanctionsConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    public_accounts: PublicAccountsConfig = Field(default_factory=PublicAccountsConfig)
    moderators: list[UserId] = Field(default_factory=list)
    management_room: RoomRef | None = None
    protected_rooms: list[RoomRef] = Field(default_factory=list)
    language: Literal["zh-CN", "en"] = "zh-CN"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    identity: IdentityConfig = Field(default_factory=IdentityConfig)  # issue 9
    ha: HaConfig = Field(default_factory=HaConfig)  # issue 11: active/standby

    @model_validator(mode="after")
    def _gate_token_when_enabled(self) -> "Settings":
        token = self.gate.token
        if self.gate.enabled and (token is None or len(token.get_secret_value()) < 16):
            raise ValueError("gate.token must be set (16 characters or more) when the gate is enabled")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments; the environment wins over it.
        return (env_settings, init_settings)

    def rules_path(self) -> Path:
        return self.public_accounts.rules_file or SHIPPED_DIR / "rules.yaml"

    def identity_key_path(self) -> Path:  # issue 9
        return self.identity.key_file or self.database.path.parent / "identity.key"

    def agreement_path(self) -> Path:
        if self.agreement.file is not None:
            return self.agreement.file
        return shipped_agreement(self.language)


# The default agreement texts and news rules, inside the package (package data in pyproject.toml):
# `pip install` copies only the package, so a file beside it (config/) is missing once installed.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_agreement(language: str) -> Path:
    """The agreement text the bot ships for `language` (the default when agreement.file is unset)."""
    return SHIPPED_DIR / f"agreement.{language}.md"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def load_config(path: str | Path) -> Settings:
    """Read, validate and resolve a config file; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys at the top level")
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}: {_describe(exc)}") from None
    # Relative paths are relative to the config file, not to wherever the service was started.
    base = path.resolve().parent
    if not settings.database.path.is_absolute():
        settings.database.path = base / settings.database.path
    # issue 11: the PostgreSQL password file, relative to the config file, readable now
    password_file = settings.database.password_file
    if password_file is not None and not password_file.is_absolute():
        settings.database.password_file = base / password_file
    settings.database.location()
    if settings.database.is_postgres and settings.records.audit_head_file is None:
        # SQLite's default is beside its file; PostgreSQL has none here, so beside `database.path`.
        from bot.store.audit import default_head_file

        settings.records.audit_head_file = default_head_file(settings.database.path)
    if settings.agreement.file is not None and not settings.agreement.file.is_absolute():
        settings.agreement.file = base / settings.agreement.file
    rules = settings.public_accounts.rules_file
    if rules is not None and not rules.is_absolute():
        settings.public_accounts.rules_file = base / rules
    # issue 9: the identity files, like the others, relative to the config file
    for name in ("key_file", "assertion_secret_file"):
        given = getattr(settings.identity, name)
        if given is not None and not given.is_absolute():
            setattr(settings.identity, name, base / given)
    try:
        load_news_rules(settings.rules_path())
    except ValueError as exc:
        raise ConfigError(f"invalid config {path}: public_accounts.rules_file: {exc}") from None
    agreement = settings.agreement_path()
    if not agreement.is_file():
        raise ConfigError(f"invalid config {path}: agreement.file: {agreement} does not exist")
    return settings


def load_news_rules(path: Path) -> "NewsRules":
    """Read and compile the news rules; ValueError (RulesError) says what is wrong."""
    from bot.policy.news import NewsRules, RulesError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{path} is not valid YAML: {exc}") from None
    return NewsRules.from_mapping(data)
