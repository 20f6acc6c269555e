from rtvi.cli import app

app()
