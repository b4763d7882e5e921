"""python -m services.foreign"""

from services.foreign.service import ForeignService
from shared.runtime import main

main(ForeignService)
