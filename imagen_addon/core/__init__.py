"""The torch side of Imagen for Blender (never imported by the Blender add-on).

Flush-to-zero for denormal floats: tiny AdamW second moments and attention weights otherwise fall into the
denormal range, which x86 CPUs process 10-100x slower (a training step slowed from ~1 s to 15 s here).
"""

import torch

torch.set_flush_denormal(True)
