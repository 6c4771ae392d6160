"""Public-account categories in both languages: typed by key or by name, shown in the reader's
language, stored and exported by key; the old `categories: [...]` config still loads."""

import csv
import io

import pytest
import yaml
from pydantic import ValidationError

from bot.config import DEFAULT_CATEGORIES, ConfigError, PublicAccountsConfig, load_config
from bot.export import export
from tests.unit.test_commands import MOD, PUB, World


def test_default_categories_have_chinese_names_and_keep_their_keys_in_english():
    config = PublicAccountsConfig()
    assert [config.category_name(key, "zh-CN") for key in DEFAULT_CATEGORIES] == [
        "新闻单位", "新闻网站", "政府机关", "企业", "事业单位", "自媒体", "个人"]
    assert [config.category_name(key, "en") for key in DEFAULT_CATEGORIES] == DEFAULT_CATEGORIES
    assert config.category_key("企业") == config.category_key("Enterprise") == "enterprise"
    assert config.category_key("astrology") is None


def test_an_old_config_with_its_own_categories_still_loads_and_names_may_be_added():
    old = PublicAccountsConfig(categories=["news", "business"])
    assert old.category_name("business", "zh-CN") == "business"  # no name given: the key
    named = PublicAccountsConfig(categories=["news", "business"],
                                 category_names={"business": "企业", "news": {"zh-CN": "新闻", "en": "News-media"}})
    assert named.category_key("企业") == "business" and named.category_key("news-media") == "news"
    assert (named.category_name("news", "en"), named.category_name("news", "zh-CN")) == ("News-media", "新闻")
    assert named.category_name("business", "en") == "business"


@pytest.mark.parametrize("config, error", [
    ({"categories": ["news"], "category_names": {"sport": "体育"}}, "'sport' is not one of public_accounts.categories"),
    ({"category_names": {"enterprise": "大 企业"}}, "the name '大 企业' of 'enterprise' must be one word"),
    ({"categories": ["news", "enterprise"], "category_names": {"news": "企业"}}, "'企业' names both 'news' and 'enterprise'"),
    ({"categories": ["news", "sport"], "category_names": {"sport": "news"}}, "'news' names both 'news' and 'sport'"),
])
def test_names_that_would_be_ambiguous_or_unparseable_are_refused_naming_the_key(config, error):
    with pytest.raises(ValidationError, match="category_names: " + error.replace("(", r"\(")):
        PublicAccountsConfig(**config)


@pytest.mark.parametrize("names, error", [
    ({"enterprise": {"zh-CN": "企业", "fr": "Entreprise"}},
     "public_accounts.category_names: 'enterprise' names languages fr; use zh-CN or en"),
    ({"enterprise": ["企业"]},
     "public_accounts.category_names: 'enterprise' must be a name, or names per language ({zh-CN: …, en: …})"),
])
def test_check_config_names_the_key_of_a_malformed_name(tmp_path, names, error):
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://hs.test", "user_id": "@bot:hs", "password": "x" * 16}, "gate": {"enabled": False},
        "public_accounts": {"category_names": names}}, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"invalid config {path}: {error}"


async def test_chinese_and_english_applications_file_the_same_category_key(store, tmp_path):
    world = World(store, tmp_path, language="zh-CN")
    answer = await world.send("!申请 公众账号 企业 某某 公司", sender=PUB)
    assert answer.startswith("已收到申请 #1"), answer
    assert (await store.accounts.application(1)).category == "enterprise"
    assert (await world.send("!申请列表")).endswith("\n#1 公众账号，类别 企业，名称 某某 公司：等待审核 — @pub:hs")
    await world.send("!通过 1")
    whois = await world.send(f"!查询 {PUB}", sender=MOD)
    assert "类别 企业" in whois and "enterprise" not in whois
    # The register and its export keep the key, whatever language the application was typed in.
    data, _ = await export(store, kind="filings", fmt="csv", since=None, bom=False, actor=MOD, now=0)
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert [row["category"] for row in rows] == ["enterprise"]


async def test_an_english_application_by_key_reads_back_in_english(store, tmp_path):
    world = World(store, tmp_path, language="en")
    assert (await world.send("!apply public 企业 ACME", sender=PUB)).startswith("Application #1 received")
    assert (await store.accounts.application(1)).category == "enterprise"
    assert "public account, category enterprise, name ACME" in await world.send("!application", sender=PUB)


async def test_an_unknown_category_is_refused_listing_the_names_in_the_readers_language(store, tmp_path):
    world = World(store, tmp_path, language="zh-CN")
    before = await world.everything()
    for body in ("!申请 公众账号 占星 星星", "!申请 公众账号 占星 星星 --dry-run"):
        assert await world.send(body, sender=PUB) == (
            "未知类别 占星。请从以下类别中选择：新闻单位, 新闻网站, 政府机关, 企业, 事业单位, 自媒体, 个人。")
    assert await store.accounts.applications_of(PUB) == []
    assert await world.everything(answered=["$cmd1", "$cmd2"]) == before


async def test_configured_names_are_used_in_a_dry_run_too(store, tmp_path):
    world = World(store, tmp_path, language="zh-CN",
                  public_accounts={"categories": ["news", "business"], "category_names": {"business": "商业"}})
    answer = await world.send("!申请 公众账号 商业 ACME --dry-run", sender=PUB)
    assert "公众账号，类别 商业，名称 ACME" in answer, answer
    assert await world.send("!申请 公众账号 企业 ACME", sender=PUB) == "未知类别 企业。请从以下类别中选择：news, 商业。"
