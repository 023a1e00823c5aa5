"""The ``recsys`` command line: one command per pipeline stage.

Commands live in their own modules and are imported only when invoked, so ``recsys --help`` is quick
and a stage's heavy dependencies (torch, scann) load only for that stage.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from recsys.config import Config, load_config
from recsys.errors import RecsysError

# name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "db": "recsys.cli.db:db",
    "ingest": "recsys.cli.ingest:ingest",
    "demo": "recsys.cli.demo:demo",
    "config": "recsys.cli.config_cmd:config_cmd",
    "embed": "recsys.cli.embed:embed",
    "train-align": "recsys.cli.align:train_align",
    "search": "recsys.cli.search:search",
    "evaluate-search": "recsys.cli.search_eval:evaluate_search",
    "train": "recsys.cli.train:train",
    "evaluate": "recsys.cli.evaluate:evaluate",
    "index": "recsys.cli.index:index",
    "serve": "recsys.cli.serve:serve",
    "export": "recsys.cli.export:export",
    "experiments": "recsys.cli.experiments:experiments",
    "impressions": "recsys.cli.experiments:impressions",
    "train-reranker": "recsys.cli.experiments:train_reranker_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if self._available(n))

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not self._available(name):
            return None
        module, attr = target.split(":")
        cmd: click.Command = getattr(importlib.import_module(module), attr)
        return cmd


class AppContext:
    """Passed to every command as ``ctx.obj``: the config, built once."""

    def __init__(self, config_path: str | None) -> None:
        self._config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._config_path, env=os.environ)
        return self._config


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config file (default: $RECSYS_CONFIG, else ./config.yaml, else built-in defaults)")
@click.option("-v", "--verbose", count=True, help="more logging (-vv for debug)")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Multimodal recommendation and product search."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = AppContext(config_path)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: domain errors become a one-line message and exit code 2."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except RecsysError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
