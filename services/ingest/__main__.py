"""python -m services.ingest [--record PATH]"""

import argparse
import os

from services.ingest.service import Ingest
from shared.runtime import main

parser = argparse.ArgumentParser(prog="python -m services.ingest", description=Ingest.description)
parser.add_argument("--record", metavar="PATH", help="also write every frame read to PATH (sets RECORD_FILE)")
arguments = parser.parse_args()
if arguments.record:
    os.environ["RECORD_FILE"] = arguments.record
main(Ingest)
