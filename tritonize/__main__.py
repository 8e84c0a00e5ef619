from tritonize.cli import app

app()
