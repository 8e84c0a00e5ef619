"""The `tritonize` command: convert, serve, infer, demo, bench, plan, deploy, gateway. Each subcommand is a thin
layer over a function in converters/, server/, client/, gateway/, benchmarks/ or deploy/."""

from __future__ import annotations

import typer

from tritonize.commands import chat, demo, deploy, encoders, gateway, generation, load, serve, speech

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
convert_app = typer.Typer(no_args_is_help=True, help="Convert a checkpoint into the model repository.")
infer_app = typer.Typer(no_args_is_help=True, help="Call a served pipeline.")
app.add_typer(convert_app, name="convert")
app.add_typer(infer_app, name="infer")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
deploy.register(app)
gateway.register(app)

# Each model family adds its convert/infer subcommands and its demo step, in this order (the chatbot
# comes after the encoders and generators it calls).
for family in (encoders, generation, speech, chat):
    family.register(convert_app, infer_app)
load.register(app)  # after the families: its demo step load-tests the encoders' demo model, last
