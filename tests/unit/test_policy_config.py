"""The policy file: defaults, the example file, and bad files that name the key to fix."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from stream_app.core.policy import PolicyConfig, load_policy
from stream_app.errors import ConfigError
from stream_app.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/policy.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_no_file_means_the_documented_defaults() -> None:
    cfg = load_policy(None)
    assert cfg == PolicyConfig()
    assert (cfg.tiers.mid, cfg.tiers.high, cfg.holdout.share) == (0.3, 0.6, 0.1)
    assert cfg.limits.cooldown == 7 * 86400 and cfg.train_on_treated


def test_a_file_overrides_only_what_it_sets_and_reads_durations(tmp_path: Path) -> None:
    cfg = load_policy(write(tmp_path, '[limits]\ncooldown = "2d"\nbudget = 50\n'))
    assert cfg.limits.cooldown == 2 * 86400 and cfg.limits.budget == 50
    assert cfg.tiers == PolicyConfig().tiers
    assert cfg.version != PolicyConfig().version


def all_keys() -> list[tuple[str, str | None]]:
    """(section, key) for every key; (key, None) for top-level ones. A section inside a
    section (``bandit.costs``) gives ("bandit.costs", key)."""
    out: list[tuple[str, str | None]] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                walk(f"{prefix}{name}.", sub)
            elif prefix:
                out.append((prefix[:-1], name))
            else:
                out.append((name, None))

    walk("", PolicyConfig)
    return out


def lookup(cfg: BaseModel, dotted: str) -> object:
    value: object = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def nest(dotted: str, value: object) -> dict[str, object]:
    head, _, rest = dotted.partition(".")
    return {head: nest(rest, value) if rest else value}


def test_the_example_file_sets_every_key_to_its_default() -> None:
    text = EXAMPLE.read_text()
    assert load_policy(EXAMPLE) == PolicyConfig()
    for section, key in all_keys():
        if key is None:
            assert re.search(rf"^{section} = ", text, re.M), section
        else:
            assert f"[{section}]" in text, section
            assert re.search(rf"^{key} = ", text, re.M), f"{section}.{key}"


def test_every_key_is_documented_with_its_real_default() -> None:
    doc = (ROOT / "docs/policy.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", doc, re.M))
    defaults = PolicyConfig()
    for section, key in all_keys():
        name = f"{section}.{key}" if key else section
        assert name in rows, f"docs/policy.md lacks {name}"
        value = lookup(defaults, name)
        # The documented default, read the way the TOML file would be.
        documented = tomllib.loads(f"x = {json.dumps(rows[name])}")["x"]
        got = lookup(PolicyConfig.model_validate(nest(name, documented)), name)
        assert got == value, f"{name}: documented {rows[name]}, default {value}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tiers]\nmid = 0.5\nhigh = 0.4\n", "tiers.high: must be > tiers.mid"),
        ("[tiers]\nhihg = 0.7\n", "tiers.hihg: Extra inputs are not permitted"),
        ("[spike]\nentry = 1.5\n", "spike.entry: Input should be less than or equal to 1"),
        ('[limits]\ncooldown = "a week"\n', "limits.cooldown: not a duration"),
        ("[limits]\nbudget = 0\n", "limits.budget: Input should be greater than or equal to 1"),
        ("[spike]\nentry = 0.3\nrearm_below = 0.4\n", "spike.rearm_below: must be <= spike"),
        ("[breaker]\nclose_share = 0.5\n", "breaker.close_share: must be < breaker.open_share"),
        ("budget = 3\n", "budget: Extra inputs are not permitted"),
        ("[holdout]\nshare = 'ten'\n", "holdout.share: Input should be a valid number"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"policy file {path}: ")
    assert message in str(err.value)


def test_unreadable_or_broken_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(write(tmp_path, "[tiers\nmid = 0.3\n"))


def test_the_policy_file_setting_points_at_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().policy_file is None
    path = write(tmp_path, "[reasons]\nk = 1\n")
    monkeypatch.setenv("STREAM_APP_POLICY_FILE", str(path))
    assert load_policy(load_settings().policy_file).reasons.k == 1
