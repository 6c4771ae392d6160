import re
import string

from bot.i18n import CATALOGS, Translator


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_catalogs_have_the_same_keys_and_placeholders():
    en, zh = CATALOGS["en"], CATALOGS["zh-CN"]
    assert set(en) == set(zh)
    for key in en:
        assert _fields(en[key]) == _fields(zh[key]), key


def _words(template: str) -> str:
    """The text people read: placeholders removed."""
    return re.sub(r"\{[a-z_]+\}", "", template)


def test_chinese_catalog_is_actually_chinese():
    # Wherever the English has words to translate, the Chinese has Chinese characters.
    for key, text in CATALOGS["zh-CN"].items():
        if re.search(r"[A-Za-z]{2,}", _words(CATALOGS["en"][key])):
            assert re.search(r"[\u4e00-\u9fff]", text), key


def test_refusal_names_agree_command_in_both_languages():
    params = {"action": "send_event", "version": "1", "bot": "@bot:hs"}
    for language in CATALOGS:
        message = Translator(language).refusal("deny.not_agreed", params)
        assert "!agree" in message and "@bot:hs" in message
