"""The core stays light: importing the engine, the commands, the harness or the message splitter loads no
model runtime, no database driver and no platform SDK (a fresh interpreter, so nothing else imported them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "transformers",
    "sqlalchemy",
    "discord",
    "slack_bolt",
    "slack_sdk",
    "ctranslate2",
    "openvino",
    "openvino_genai",
    "openai",
)


@pytest.mark.parametrize(
    "module",
    [
        "bot.core.engine",
        "bot.core.commands",
        "bot.core.adapter",
        "bot.testing",
        "adapters",
        "adapters.message_split",
        "storage",
    ],
)
def test_importing_loads_nothing_heavy(module):
    probe = (
        f"import json, sys, {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_probe_would_see_a_heavy_import():
    """The check above can fail: importing the torch backend does load torch."""
    probe = "import json, sys, bot.generation.backends.torch; print(json.dumps('torch' in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is True
