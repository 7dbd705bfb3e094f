"""Every option of `iqa-factory` and `iqa-factory train` that has a default says it in its
--help (a user should not have to read the code to learn what a run does unasked)."""

import argparse

import pytest

from pipeline.cli import build_parser as pipeline_parser
from training.cli import build_parser as training_parser

FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
         argparse._VersionAction)


def _options(parser: argparse.ArgumentParser, command: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*command, name))
        elif action.option_strings:
            yield command, action


def _has_default(action: argparse.Action) -> bool:
    return not (action.required or isinstance(action, FLAGS)
                or action.default in (None, "", ()) or action.help == argparse.SUPPRESS)


@pytest.mark.parametrize("build", [pipeline_parser, training_parser])
def test_every_option_with_a_default_says_it(build):
    unsaid = [f"{' '.join(command)} {action.option_strings[-1]} (default {action.default!r})"
              for command, action in _options(build())
              if _has_default(action) and "default" not in (action.help or "")]
    assert not unsaid
    assert len(list(_options(build()))) > 20  # the walk reached the commands' options
