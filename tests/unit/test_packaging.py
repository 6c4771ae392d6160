"""The installed bot finds its shipped defaults: operators `pip install` a checkout (and Synapse's
venv installs it for the in-process module), which copies only the `bot` package and its package
data. A default text kept beside the package (the old config/agreement.*.md, config/rules.yaml)
exists in a checkout and nowhere else, so these tests look at what a wheel really holds and run
the bot from it, away from the checkout.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import bot
from bot.config import LANGUAGES, SHIPPED_DIR, load_config, shipped_agreement

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGE = Path(bot.__file__).resolve().parent
MINIMAL = {
    "homeserver": {"url": "http://127.0.0.1:8008", "user_id": "@bot:hs.test", "password": "secret-password"},
    "gate": {"listen": "127.0.0.1:8765", "token": "t" * 24},
    "moderators": ["@mod:hs.test"],
    "protected_rooms": ["!room:hs.test"],
}


def minimal_config(directory: Path, language: str) -> Path:
    path = directory / f"bot.{language}.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "language": language}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would install, built from a copy (no build/ in the shared checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "bot", source / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=120)
    [built] = out.glob("*.whl")
    return built


def files_loaded_by_default(tmp_path: Path) -> set[Path]:
    """What the bot reads from its own files with no path configured, in every language."""
    loaded = set()
    for language in LANGUAGES:
        settings = load_config(minimal_config(tmp_path, language))
        loaded |= {settings.rules_path(), settings.agreement_path()}
    loaded |= {shipped_agreement(language) for language in LANGUAGES}  # every one on the policy page (texts_for)
    loaded |= set((PACKAGE / "consent").glob("*.html"))  # the policy page skeletons
    return {path.resolve() for path in loaded}


def test_every_default_file_is_inside_the_package_and_the_wheel(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    defaults = files_loaded_by_default(tmp_path)
    assert SHIPPED_DIR.resolve() / "rules.yaml" in defaults
    outside = sorted(str(path) for path in defaults if not path.is_relative_to(PACKAGE))
    assert not outside, f"read by default but not package data (pip install leaves them behind): {outside}"
    missing = sorted(name for name in (f"bot/{path.relative_to(PACKAGE).as_posix()}" for path in defaults)
                     if name not in names)
    assert not missing, f"not in the wheel: {missing}"
    # Everything in the shipped folder goes into the wheel: one copy in the repository, all of it installed.
    shipped = {f"bot/shipped/{path.name}" for path in SHIPPED_DIR.iterdir()}
    assert shipped <= names, shipped - names


def test_a_bot_run_from_the_wheel_finds_its_agreement_and_rules(wheel, tmp_path):
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    # -S: no site-packages .pth files, so the venv's editable install (pointing at this checkout) is
    # not on the path; the dependencies come from site-packages given as a plain directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(installed), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])}
    run = tmp_path / "elsewhere"
    run.mkdir()  # not the checkout: `python -m` puts the working directory first on the path
    for language in LANGUAGES:
        config = minimal_config(tmp_path, language)
        checked = subprocess.run([sys.executable, "-S", "-m", "bot", "check-config", "--config", str(config)],
                                 cwd=run, env=env, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert f"{config}: OK" in checked.stdout
        where = subprocess.run(
            [sys.executable, "-S", "-c",
             "import sys, bot; from bot.config import load_config; from bot.agreement import AgreementDocument;"
             " from bot.consent.templates import texts_for; s = load_config(sys.argv[1]);"
             " AgreementDocument.load(s.agreement_path(), s.agreement.version); texts_for(s);"
             " print(bot.__file__); print(s.agreement_path()); print(s.rules_path())", str(config)],
            cwd=run, env=env, capture_output=True, text=True, timeout=60)
        assert where.returncode == 0, where.stderr
        package, agreement, rules = (Path(line) for line in where.stdout.splitlines())
        assert package.is_relative_to(installed)  # the wheel's code, not the checkout's
        assert agreement == installed / "bot" / "shipped" / f"agreement.{language}.md"
        assert rules == installed / "bot" / "shipped" / "rules.yaml"
        assert agreement.read_text(encoding="utf-8") == (SHIPPED_DIR / agreement.name).read_text(encoding="utf-8")
