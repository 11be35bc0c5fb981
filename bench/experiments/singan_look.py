"""A SinGAN generation model looked at: the training image and three samples, a flat sketch and its
paint-to-image at stages 1, 2 and 3, and every third of 12 animation frames (medium), as one sheet.

    python -m bench.experiments.singan_look MODEL_DIR IMAGE OUT.png

Showed (docs/benchmarks.md, "SinGAN"): samples rearrange the zebra as SinGAN's do; paint-to-image from stage
2 or 3 keeps the sketch's layout with the model's stripes and grass; from stage 1 it redraws too much.
"""

import sys

import cv2
import numpy as np

from engine import families
from engine.families.singan.apply import animate, paint_to_image, sample
from engine.imageio import read_image

d, image_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
loaded = families.load(d, backend="onnxruntime")
m, run = loaded.model["pyramid"], loaded.runner
print(m.shapes, [round(a, 4) for a in m.amps])
h, w = m.shapes[-1]
rgb = cv2.resize(read_image(image_path).rgb, (w, h), interpolation=cv2.INTER_AREA)
samples = [sample(m, run, s) for s in range(4)]
# a rough sketch: grass, and a white body with black bands, drawn flat
sk = np.zeros((h, w, 3), np.float32)
sk[:] = (0.45, 0.6, 0.25)
sk[: h // 3] = (0.5, 0.65, 0.3)
cv2.ellipse(sk, (w // 2, h // 2), (w // 4, h // 6), 0, 0, 360, (0.95, 0.95, 0.95), -1)
for x in range(w // 4, 3 * w // 4, 14):
    cv2.line(sk, (x, h // 3), (x + 4, 2 * h // 3), (0.05, 0.05, 0.05), 4)
paints = [paint_to_image(m, run, sk, s, 0) for s in (1, 2, 3)]
frames = animate(m, run, 12, "medium", 0.9, 0)
row1 = np.concatenate([rgb] + samples[:3], 1)
row2 = np.concatenate([sk] + paints, 1)
row3 = np.concatenate(frames[::3], 1)
sheet = np.concatenate([row1, row2, row3], 0)
cv2.imwrite(out, (np.clip(sheet, 0, 1)[..., ::-1] * 255).astype(np.uint8))
print("step", np.abs(np.diff(np.stack(frames), axis=0)).mean() * 255)
