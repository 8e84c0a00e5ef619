"""The `tritonize` command: convert, serve, infer, demo, bench, plan, deploy, gateway. Each subcommand is a thin
layer over a function in converters/, client/ or tritonize/ (server, gateway, planner, deploy)."""

from __future__ import annotations

import typer

from tritonize.commands import demo, deploy, gateway, load, serve
from tritonize.families import FAMILIES

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
convert_app = typer.Typer(no_args_is_help=True, help="Convert a checkpoint into the model repository.")
infer_app = typer.Typer(no_args_is_help=True, help="Call a served pipeline.")
app.add_typer(convert_app, name="convert")
app.add_typer(infer_app, name="infer")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
deploy.register(app)
gateway.register(app)
for family in FAMILIES:  # each adds its convert/infer subcommands, in the registry's order
    family.register(convert_app, infer_app)
load.register(app)
