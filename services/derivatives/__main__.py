"""python -m services.derivatives"""

from services.derivatives.service import DerivativesService
from shared.runtime import main

main(DerivativesService)
