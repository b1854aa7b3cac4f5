"""MRML-level logic of the GPSSISampler module (imports slicer; never qt/ctk)."""
