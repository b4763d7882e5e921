"""python -m services.board"""

from services.board.service import BoardService
from shared.runtime import main

main(BoardService)
