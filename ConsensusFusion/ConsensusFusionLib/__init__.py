"""MRML-level logic of the ConsensusFusion module (imports slicer; never qt/ctk)."""
