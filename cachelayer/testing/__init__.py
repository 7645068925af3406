"""Test helpers shipped with cachelayer: a real moto S3 server and pytest fixtures.

:mod:`cachelayer.testing.fixtures` is registered as a pytest plugin (``pytest11`` entry
point); it imports nothing heavy at import time. :mod:`cachelayer.testing.s3server` needs
``moto[server]`` (``pip install 'cachelayer[dev]'``).
"""
