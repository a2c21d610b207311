"""The torch side of Imagen for Blender (never imported by the Blender add-on)."""
