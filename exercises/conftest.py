"""The exercises' grading run: the graded implementation, its time limits, and what it scores.

Points, visibility and time limits come from ``points.toml`` next to this file, hints
from ``hints.toml``, and the hooks and fixtures of the run from
:mod:`gradcheck_kit.autograder.session`. They are imported here rather than named in
``pytest_plugins``, which pytest reads only in the conftest at the root of a run.

The run needs gradcheck-kit's pytest plugin (the ``device`` and ``gradcheck``
fixtures). pytest loads it by itself, as ``gradcheck``; where plugin autoloading is
off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``) it is registered here, under the same
name, so it is never registered twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gradcheck_kit.autograder.session import *  # noqa: F403
from gradcheck_kit.autograder.session import add_options, start

COURSE = Path(__file__).parent
#: The name of gradcheck-kit's ``pytest11`` entry point; ``-p no:gradcheck`` blocks it.
PLUGIN = "gradcheck"


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    _load_plugin(pluginmanager)
    add_options(parser, COURSE)


def _load_plugin(pluginmanager: pytest.PytestPluginManager) -> None:
    import gradcheck_kit.plugin

    if pluginmanager.is_registered(gradcheck_kit.plugin):
        return
    if pluginmanager.is_blocked(PLUGIN):
        raise pytest.UsageError(
            f"the exercises are graded with gradcheck-kit's pytest plugin, which -p no:{PLUGIN} turns off; "
            f"run them without -p no:{PLUGIN}"
        )
    # pytest calls pytest_addoption and pytest_configure on a plugin registered this late too.
    pluginmanager.register(gradcheck_kit.plugin, PLUGIN)


def pytest_configure(config: pytest.Config) -> None:
    start(config, COURSE)
