"""The engine: ConSinGAN training, fine-tuning, sampling, harmonization and editing; CLI and daemon."""

import os

# OpenCV reads this once, when cv2 is first imported, and then refuses to decode larger images from their
# header instead of allocating them: a 20000 x 20000 PNG is refused in milliseconds, not after 1.3 GB.
# engine.imageio.MAX_PIXELS is the same limit, checked again after decoding (for a cv2 imported earlier).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "100000000")
