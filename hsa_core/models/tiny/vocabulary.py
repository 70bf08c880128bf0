"""The words of the tiny model's captions and the clips it draws: shared by its text encoder (the
vocabulary it embeds) and by the synthetic domain it was trained on (``hsa_video/tiny/domain.py``).

    "a red circle moving left on a striped blue background"
"""

FRAMES = 16  # frames per clip
SIZE = 32  # pixels per side

COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down", "still")
BACKGROUNDS = ("solid", "gradient", "stripes", "checker")
BACKGROUND_WORDS = {"solid": "plain", "gradient": "gradient", "stripes": "striped", "checker": "checkered"}
DIRECTION_WORDS = {d: f"moving {d}" for d in DIRECTIONS[:4]} | {"still": "staying still"}
