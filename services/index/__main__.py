"""python -m services.index"""

from services.index.service import IndexService
from shared.runtime import main

main(IndexService)
