"""``recsys config``: show the configuration in force."""

from __future__ import annotations

import click
import yaml

from recsys.config import Config


def config_as_yaml(config: Config) -> str:
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)


@click.command("config")
@click.option("--defaults", is_flag=True, help="print the built-in defaults instead of the config in force")
@click.pass_obj
def config_cmd(obj, defaults: bool) -> None:  # type: ignore[no-untyped-def]
    """Print the configuration (file + RECSYS_* overrides) as YAML; errors name the bad key."""
    click.echo(config_as_yaml(Config() if defaults else obj.config), nl=False)
