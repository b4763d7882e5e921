"""python -m services.recorder"""

from services.recorder.service import Recorder
from shared.runtime import main

main(Recorder)
