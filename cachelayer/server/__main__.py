"""``python -m cachelayer.server [--host H] [--port P] ...``: the same as ``cachelayer serve``."""

from cachelayer.server.command import serve_command

if __name__ == "__main__":
    serve_command(prog_name="cachelayer serve")
