"""Synapse's policy templates (``user_consent.template_dir``), written from the bot's own agreement.

Synapse 1.163 renders every policy page from ``<template_dir>/en/`` whatever the reader's
language (``TEMPLATE_LANGUAGE = "en"`` in synapse/rest/consent/consent_resource.py; there is no
``default_template_lang``): a ``zh-CN/`` directory would never be read. So the one page, named
``en/<agreement.version>.html``, holds the agreement in each language the bot has it in, the
configured language first, each section marked with its ``lang``. ``en/success.html`` is the page
shown after someone agrees on Synapse's consent page.

The texts are exactly the ones the bot sends in chat (the same files ``agreement.file`` or the
shipped ``bot/shipped/agreement.<language>.md`` name), so the agreement accepted at registration and
the one accepted with ``!agree`` are one document under one version.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import string
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bot.config import LANGUAGES, Settings, shipped_agreement
from bot.i18n import Translator

# The version is a file name for Synapse (and Jinja refuses ".." in template names).
_VERSION_AS_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Synapse's template directory layout: the only language directory it reads.
SYNAPSE_TEMPLATE_LANGUAGE = "en"


class TemplateError(Exception):
    """The templates cannot be written; the message says why and what to do."""


@dataclass(frozen=True)
class AgreementText:
    language: str
    text: str


@dataclass(frozen=True)
class Written:
    path: Path
    changed: bool


def texts_for(settings: Settings | None) -> list[AgreementText]:
    """The agreement in every language the bot has it in, the configured language first.

    An operator's own ``agreement.file`` is one text in one language: it alone goes on the page
    (pairing it with the shipped text of the other language would show two different agreements).
    """
    language = settings.language if settings is not None else LANGUAGES[0]
    if settings is not None and settings.agreement.file is not None:
        sources = [(language, settings.agreement.file)]
    else:
        ordered = [language, *(other for other in LANGUAGES if other != language)]
        sources = [(lang, shipped_agreement(lang)) for lang in ordered]
    texts = []
    for lang, path in sources:
        try:
            # Stripped as AgreementDocument.load strips it: the same text as the chat prompt.
            texts.append(AgreementText(lang, path.read_text(encoding="utf-8").strip()))
        except OSError as exc:
            raise TemplateError(f"cannot read the agreement text {path}: {exc.strerror}") from None
    return texts


def check_version(version: str) -> str:
    if not _VERSION_AS_FILENAME.match(version) or ".." in version:
        raise TemplateError(
            f"agreement.version {version!r} cannot name a policy page: Synapse looks the page up as"
            " <version>.html, so use letters, digits, dots, dashes and underscores only (e.g. 2026-11)"
        )
    return version


def _escaped(text: str) -> str:
    """HTML-escaped, and no Jinja delimiter left: Synapse renders the page as a Jinja template, so a
    ``{{`` or ``{%`` in the agreement text would be evaluated (or break the page)."""
    return html.escape(text, quote=True).replace("{", "&#123;").replace("}", "&#125;")


def _skeleton(name: str) -> string.Template:
    return string.Template(resources.files("bot.consent").joinpath(name).read_text(encoding="utf-8"))


def text_sha256(text: str) -> str:
    """An agreement text's hash, as AgreementDocument.load computes it (the text is stripped)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_policy(version: str, texts: list[AgreementText]) -> str:
    """The policy page Synapse shows at /_matrix/consent and links from the m.login.terms stage."""
    first = Translator(texts[0].language)
    sections = []
    for item in texts:
        t = Translator(item.language)
        sections.append(
            f'<section lang="{item.language}">\n'
            f"<h1>{_escaped(t('consent.page.heading', version=version))}</h1>\n"
            f'<div class="agreement">{_escaped(item.text)}</div>\n'
            "</section>"
        )
    both = [Translator(item.language) for item in texts]
    return _skeleton("page.html").substitute(
        lang=texts[0].language,
        sha256s=" ".join(text_sha256(item.text) for item in texts),
        title=_escaped(first("consent.page.heading", version=version)),
        sections="\n".join(sections),
        already=_escaped(" / ".join(t("consent.page.already") for t in both)),
        agree=_escaped(" / ".join(t("consent.page.agree") for t in both)),
    )


def render_success(texts: list[AgreementText]) -> str:
    both = [Translator(item.language) for item in texts]
    return _skeleton("success.html").substitute(
        lang=texts[0].language,
        title=_escaped(" / ".join(t("consent.page.thanks_title") for t in both)),
        thanks="\n".join(f'<p lang="{t.language}">{_escaped(t("consent.page.thanks"))}</p>' for t in both),
    )


def write_templates(out: Path, version: str, texts: list[AgreementText]) -> list[Written]:
    """Write ``out/en/<version>.html`` and ``out/en/success.html``; a file whose content is the same
    is left alone (idempotent: Synapse and a config-management run see no change). Pages of other
    versions stay, so a link to an older version still shows what was agreed to then."""
    check_version(version)
    pages = {f"{version}.html": render_policy(version, texts), "success.html": render_success(texts)}
    directory = out / SYNAPSE_TEMPLATE_LANGUAGE
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TemplateError(f"cannot create {directory}: {exc.strerror}") from None
    written = []
    for name, content in pages.items():
        path = directory / name
        data = content.encode("utf-8")
        try:
            if path.is_file() and path.read_bytes() == data:
                written.append(Written(path, changed=False))
                continue
            _replace(path, data)
        except OSError as exc:
            raise TemplateError(f"cannot write {path}: {exc.strerror}") from None
        written.append(Written(path, changed=True))
    return written


def _replace(path: Path, data: bytes) -> None:
    # Whole or not at all: Synapse may read the page while it is rewritten.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # Synapse often runs as another user; the agreement is public anyway
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
