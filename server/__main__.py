"""``python -m server``: serve the contract (configuration: see ``server.config``)."""
import sys

from server.app import serve
from server.config import Settings, configure_logging
from server.database import SchemaBehind
from server.tokens import TokensFileError

configure_logging()
try:
    serve(Settings.from_env())
except (SchemaBehind, TokensFileError) as error:
    sys.exit(f"versatil: {error}")
