"""``python -m server``: serve the contract (configuration: see ``server.config``)."""
import sys

from server.app import serve
from server.config import Settings
from server.ops import logs
from server.ops.database import SchemaBehind
from server.rpc.tokens import TokensFileError

try:
    settings = Settings.from_env()
    logs.configure(settings.log_format)
except ValueError as error:  # A setting out of its range.
    sys.exit(f"versatil: {error}")
try:
    serve(settings)
except (SchemaBehind, TokensFileError) as error:
    sys.exit(f"versatil: {error}")
