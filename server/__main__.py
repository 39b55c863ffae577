"""``python -m server``: serve the contract (configuration: see ``server.config``)."""
import logging
import sys

from server.app import serve
from server.config import Settings
from server.database import SchemaBehind

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
try:
    serve(Settings.from_env())
except SchemaBehind as error:
    sys.exit(f"versatil: {error}")
