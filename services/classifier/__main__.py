"""python -m services.classifier"""

from services.classifier.service import ClassifierService
from shared.runtime import main

main(ClassifierService)
