"""The README quotes the one Synapse module snippet the tests use, and shows the two commands."""

from pathlib import Path

from bot.devserver import MODULE_SNIPPET, module_config

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quotes_the_module_snippet_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```yaml\n" + MODULE_SNIPPET.read_text(encoding="utf-8") + "```" in readme


def test_readme_quotes_the_in_process_module_snippet_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = (ROOT / "config" / "synapse-module-inprocess.yaml").read_text(encoding="utf-8")
    assert "```yaml\n" + snippet + "```" in readme


def test_snippet_fills_in_gate_address_and_token():
    [module] = module_config("http://127.0.0.1:9999/antispam", "sekrit-token-1234567")
    assert module["module"] == "synapse_http_antispam.HTTPAntispam"
    assert module["config"]["base_url"] == "http://127.0.0.1:9999/antispam"
    assert module["config"]["authorization"] == "sekrit-token-1234567"
    assert module["config"]["async"] == {"check_login_for_spam": True}


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.startswith("make demo") and "\nmake test" in first_block
