"""python -m services.alerts"""

from services.alerts.service import AlertsService
from shared.runtime import main

main(AlertsService)
